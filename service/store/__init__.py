"""The store: SQLModel tables (``tables``), the SQL store and its equivalence cache (``sql``),
the Alembic migrations (``migrations``) and store URLs (``urls``).

``Store``, ``StoreError`` and ``SqlEquivalenceCache`` load on first use (SQLAlchemy and Alembic
take a while to import), so that the URLs import alone.
"""

from typing import Any

from winnow.service.store.urls import DEFAULT_URL, sqlite_url

_LAZY = ("SqlEquivalenceCache", "Store", "StoreError")
__all__ = ["DEFAULT_URL", "sqlite_url", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from winnow.service.store import sql

        return getattr(sql, name)
    raise AttributeError(f"module 'winnow.service.store' has no attribute {name!r}")
