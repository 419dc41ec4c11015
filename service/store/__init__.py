"""The store: SQLModel tables (``tables``), the SQL store and its equivalence cache (``sql``),
and the Alembic migrations (``migrations``)."""

from winnow.service.store.sql import DEFAULT_URL, SqlEquivalenceCache, Store, StoreError, sqlite_url

__all__ = ["DEFAULT_URL", "SqlEquivalenceCache", "Store", "StoreError", "sqlite_url"]
