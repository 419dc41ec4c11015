"""``winnow ui``: the Streamlit dashboard on a store or a server (``winnow bench ui``, how fast
its Search page opens, is in ``cli/bench.py``).

    winnow ui --db sqlite:///runs/winnow.db [--server HOST:PORT [--tls-ca CA.pem]] [--port 8501]
              [--ui-token-file FILE]

Without ``--db`` and ``--server``, ``$WINNOW_DB`` and ``$WINNOW_ADDRESS`` say where to read.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

from winnow.service import env
from winnow.service.cli.options import DB_HELP

# The dashboard script, found as a module (not by a path relative to this file).
APP = Path(importlib.util.find_spec("winnow.ui.app").origin)

# --- winnow ui ----------------------------------------------------------------------------------


def _check_db(url: str) -> None:
    """A SQLite path that does not exist is a typo, not a new store: say so before starting."""
    from sqlalchemy.engine import make_url  # SQLAlchemy takes a while: only for `ui`

    parsed = make_url(url)
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if path not in (None, "", ":memory:") and not Path(path).exists():
        raise ValueError(f"--db: no SQLite database at {path}")


def streamlit_command(address: str, port: int, headless: bool = True) -> list[str]:
    """``streamlit run`` on the dashboard: on ``address:port`` only, sending no usage stats."""
    options = {
        "server.address": address,
        "server.port": port,
        "server.headless": "true" if headless else "false",
        "browser.gatherUsageStats": "false",
        "client.toolbarMode": "viewer",  # no "Deploy" menu: this is a tool, not an app to ship
    }
    flags = [part for name, value in options.items() for part in (f"--{name}", str(value))]
    return [sys.executable, "-m", "streamlit", "run", str(APP), *flags]


def _sources(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The store and the server: the flags given, else ``$WINNOW_DB`` and ``$WINNOW_ADDRESS``;
    a flag given for one also stands for the other (``--server`` alone mirrors that server
    even when ``$WINNOW_DB`` is set)."""
    if args.db or args.server:
        return args.db, args.server
    return os.environ.get(env.DB) or None, os.environ.get(env.ADDRESS) or None


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def _warn_exposed(address: str, with_server: bool) -> None:
    """A dashboard on the network with no token: every search is readable by whoever reaches
    it, and with a server, cancellable with the server's token."""
    cancel = " and press Cancel, which acts with the server's token" if with_server else ""
    print(
        f"winnow: WARNING: the dashboard listens on {address} with no token: anyone who "
        f"reaches it can read every search{cancel}. Give it a token (--ui-token-file or "
        f"${env.UI_TOKEN_FILE}) or listen on 127.0.0.1.",
        file=sys.stderr,
        flush=True,
    )


def cmd_ui(args: argparse.Namespace) -> int:
    db, server = _sources(args)
    if not db and not server:
        raise ValueError(
            f"give --db URL (a store) or --server HOST:PORT (a running winnow serve), "
            f"or set ${env.DB} or ${env.ADDRESS}"
        )
    if db:
        _check_db(db)
    else:  # the server's mirror: a folder that is not private is refused before starting
        env.private_cache_dir("ui-mirror")
    if args.tls_ca and not Path(args.tls_ca).is_file():
        raise ValueError(f"--tls-ca: no file at {args.tls_ca}")
    token = env.token(args.token, args.token_file)
    ui_token = env.ui_token(args.ui_token, args.ui_token_file)
    if not ui_token and not _is_loopback(args.address):
        _warn_exposed(args.address, bool(server))
    # Every setting reaches Streamlit's process in its environment, never on its command line,
    # where `ps` would show the tokens to every user of the machine.
    ui_env = {name: value for name, value in os.environ.items() if name != env.UI_TOKEN_FILE} | {
        "WINNOW_UI_DB": db or "",
        "WINNOW_UI_SERVER": server or "",
        "WINNOW_UI_SERVER_TOKEN": token or "",
        env.UI_TOKEN: ui_token or "",
        "WINNOW_UI_TLS_CA": str(Path(args.tls_ca).absolute()) if args.tls_ca else "",
    }
    command = streamlit_command(args.address, args.port, args.headless)
    print(f"winnow: dashboard on http://{args.address}:{args.port}", file=sys.stderr, flush=True)
    # Streamlit takes this process over, so Ctrl-C and SIGTERM reach its server directly and
    # no orphaned server outlives a stopped `winnow ui`.
    os.execve(sys.executable, command, ui_env)
    return 0  # not reached


def add_ui_commands(commands: Any) -> None:
    ui = commands.add_parser(
        "ui",
        help="the dashboard (Streamlit) on a store or a server",
        description="The dashboard (Streamlit) on a store or a server. Without --ui-token "
        "it has no authentication of its own: anyone who reaches its port sees every search "
        "and, with --server, can press Cancel, which acts with the server's token. With "
        "--ui-token (or --ui-token-file) a visitor sees only a sign-in form until they enter "
        "that token. It listens on 127.0.0.1 (this machine only) unless --address says "
        "otherwise; reach it from elsewhere through an SSH tunnel or an authenticating proxy "
        "(the token travels in clear text over plain HTTP).",
    )
    ui.add_argument(
        "--db",
        metavar="URL",
        help=f"{DB_HELP}, unless --server is given",
    )
    ui.add_argument(
        "--server",
        help="a winnow server, HOST:PORT (also what cancelling needs); "
        f"${env.ADDRESS} when neither --db nor --server is given",
    )
    ui.add_argument("--token", help=f"the server's bearer token (default: ${env.TOKEN})")
    ui.add_argument(
        "--token-file", help=f"file holding the server's token (default: ${env.TOKEN_FILE})"
    )
    ui.add_argument(
        "--ui-token",
        help="the dashboard's own token, which every visitor must enter before seeing any "
        f"search or pressing Cancel (default: ${env.UI_TOKEN}); prefer --ui-token-file: a "
        "token on the command line shows in `ps`",
    )
    ui.add_argument(
        "--ui-token-file",
        help=f"file holding the dashboard's token (default: ${env.UI_TOKEN_FILE}); "
        "an empty file is an error",
    )
    ui.add_argument("--tls-ca", help="CA certificate (PEM) to reach a TLS server")
    ui.add_argument(
        "--address",
        default="127.0.0.1",
        help="where the dashboard listens (another address exposes it: give it a --ui-token)",
    )
    ui.add_argument("--port", type=int, default=8501, help="the dashboard's port")
    ui.add_argument("--headless", action="store_true", help="do not open a browser")
    ui.set_defaults(func=cmd_ui)
