"""Alembic migrations of the store's schema; ``Store`` upgrades a database to head on open."""
