"""The store: the SQL store (``sql``) and its equivalence cache (``cache``), the dashboard's
reads (``reads``), the conversion of rows to records (``convert``), the tables (``tables``,
private to this package) and the Alembic migrations (``migrations``)."""

from winnow.service.store.cache import SqlEquivalenceCache
from winnow.service.store.sql import DEFAULT_URL, Store, StoreError, sqlite_url

__all__ = ["DEFAULT_URL", "SqlEquivalenceCache", "Store", "StoreError", "sqlite_url"]
