"""The environment variables that the CLI, the SDK's ``Client()`` and ``winnow ui`` read, and
how each setting is resolved: an explicit value (a flag, an argument) first, then the variable,
then the built-in default.

    WINNOW_ADDRESS     the server, HOST:PORT         (default 127.0.0.1:50051)
    WINNOW_TOKEN       the bearer token
    WINNOW_TOKEN_FILE  a file holding the bearer token (read when no token is given)
    WINNOW_DB          the store URL of serve, ui, search run|resume|list (default
                       sqlite:///runs/winnow.db)
    WINNOW_UI_TOKEN       the token a visitor of ``winnow ui`` must enter (the dashboard's own,
                          not the server's)
    WINNOW_UI_TOKEN_FILE  a file holding it (read when no dashboard token is given)

``private_cache_dir`` is the user's own folder for files a command keeps between runs
(``$XDG_CACHE_HOME/winnow``, else ``~/.cache/winnow``).

No import beyond the standard library and ``store.urls``: the CLI's parsers read these defaults
at start-up.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from winnow.service.store.urls import DEFAULT_URL as DEFAULT_DB

ADDRESS, TOKEN, TOKEN_FILE, DB = "WINNOW_ADDRESS", "WINNOW_TOKEN", "WINNOW_TOKEN_FILE", "WINNOW_DB"
UI_TOKEN, UI_TOKEN_FILE = "WINNOW_UI_TOKEN", "WINNOW_UI_TOKEN_FILE"
DEFAULT_ADDRESS = "127.0.0.1:50051"


def _env(name: str) -> str | None:
    return os.environ.get(name) or None  # an empty variable is an unset one


def address(explicit: str | None = None) -> str:
    """The server to reach: ``explicit``, else ``$WINNOW_ADDRESS``, else 127.0.0.1:50051."""
    return explicit or _env(ADDRESS) or DEFAULT_ADDRESS


def db_url(explicit: str | None = None) -> str:
    """The store URL: ``explicit``, else ``$WINNOW_DB``, else sqlite:///runs/winnow.db."""
    return explicit or _env(DB) or DEFAULT_DB


def token(explicit: str | None = None, token_file: str | Path | None = None) -> str | None:
    """The bearer token: ``token_file``'s content or ``explicit`` (a file given wins, as it
    always has for ``--token-file``), else ``$WINNOW_TOKEN_FILE``'s content, else
    ``$WINNOW_TOKEN``, else none. An empty token file is an error (ValueError), not "no
    token": for ``serve`` that would turn authentication off without a word."""
    return _token(explicit, token_file, TOKEN, TOKEN_FILE)


def ui_token(explicit: str | None = None, token_file: str | Path | None = None) -> str | None:
    """The dashboard's own token, resolved as ``token`` is but from ``$WINNOW_UI_TOKEN_FILE``
    and ``$WINNOW_UI_TOKEN``; an empty file is an error here too (it would leave the dashboard
    open)."""
    return _token(explicit, token_file, UI_TOKEN, UI_TOKEN_FILE)


def _token(
    explicit: str | None, token_file: str | Path | None, variable: str, file_variable: str
) -> str | None:
    if token_file is not None:
        return _read(token_file)
    if explicit:
        return explicit
    from_env = _env(file_variable)
    return _read(from_env) if from_env else _env(variable)


def _read(path: str | Path) -> str:
    file = Path(path).expanduser()
    content = file.read_text().strip()
    if not content:
        raise ValueError(f"token file {file} is empty")
    return content


def private_cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/winnow/NAME`` (else ``~/.cache/winnow/NAME``), created with mode 0o700
    if missing; a ``PermissionError`` if it is not a folder of this user that only this user
    can write to (not the shared temp folder: another user could plant files there)."""
    cache = Path(_env("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "winnow" / name
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(folder)
    return folder


def _check_private(folder: Path) -> None:
    info = folder.lstat()  # not followed: a link could point anywhere
    problem = None
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a folder (a link?)"
    elif info.st_uid != os.getuid():
        problem = f"belongs to another user (uid {info.st_uid})"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"can be written by others (mode {stat.S_IMODE(info.st_mode):o})"
    if problem:
        raise PermissionError(
            f"the private folder {folder} {problem}: remove it, or make it yours with mode 700 "
            f"(chmod 700 {folder}), or set $XDG_CACHE_HOME elsewhere"
        )
