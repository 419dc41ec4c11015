"""Store URLs: the default and a SQLite file's. No SQL import, so that the CLI's defaults and
the client's start-up read them without loading SQLAlchemy and Alembic."""

from __future__ import annotations

from pathlib import Path

DEFAULT_URL = "sqlite:///runs/winnow.db"


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).expanduser()}"
