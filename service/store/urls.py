"""Store URLs: the default and a SQLite file's. No SQL import, so that the CLI's defaults and
the client's start-up read them without loading SQLAlchemy and Alembic.

A SQLite URL names its file after ``sqlite:///``: ``sqlite:///runs/winnow.db`` (three slashes)
is ``runs/winnow.db`` relative to the current folder, ``sqlite:////tmp/x.db`` (four) the
absolute ``/tmp/x.db``."""

from __future__ import annotations

from pathlib import Path

DEFAULT_URL = "sqlite:///runs/winnow.db"


def sqlite_url(path: str | Path) -> str:
    """The URL of a SQLite file, made absolute (so that it means the same from any folder)."""
    return f"sqlite:///{Path(path).expanduser().absolute()}"
