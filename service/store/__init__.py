"""The store: the SQL store (``sql``) and its equivalence cache (``cache``), the dashboard's
reads (``reads``), the conversion of rows to records (``convert``), store URLs (``urls``), the
tables (``tables``, private to this package) and the Alembic migrations (``migrations``).

``Store``, ``StoreError`` and ``SqlEquivalenceCache`` load on first use (SQLAlchemy and Alembic
take a while to import), so that the URLs import alone (the CLI's defaults).
"""

from typing import Any

from winnow.service.store.urls import DEFAULT_URL, sqlite_url

_LAZY = {"SqlEquivalenceCache": "cache", "Store": "sql", "StoreError": "sql"}
__all__ = ["DEFAULT_URL", "sqlite_url", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"winnow.service.store.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'winnow.service.store' has no attribute {name!r}")
