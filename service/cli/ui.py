"""``winnow ui``: the Streamlit dashboard on a store or a server (``winnow bench ui``, how fast
its Search page opens, is in ``cli/bench.py``).

    winnow ui --db sqlite:///runs/winnow.db [--server HOST:PORT] [--port 8501] [--headless]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

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


def cmd_ui(args: argparse.Namespace) -> int:
    if not args.db and not args.server:
        raise ValueError("give --db URL (a store) or --server HOST:PORT (a running winnow serve)")
    if args.db:
        _check_db(args.db)
    token = Path(args.token_file).read_text().strip() if args.token_file else args.token
    env = os.environ | {
        "WINNOW_UI_DB": args.db or "",
        "WINNOW_UI_SERVER": args.server or "",
        "WINNOW_UI_TOKEN": token or "",
    }
    command = streamlit_command(args.address, args.port, args.headless)
    print(f"winnow: dashboard on http://{args.address}:{args.port}", file=sys.stderr, flush=True)
    # Streamlit takes this process over, so Ctrl-C and SIGTERM reach its server directly and
    # no orphaned server outlives a stopped `winnow ui`.
    os.execve(sys.executable, command, env)
    return 0  # not reached


def add_ui_commands(commands: Any) -> None:
    ui = commands.add_parser("ui", help="the dashboard (Streamlit) on a store or a server")
    ui.add_argument("--db", help="a store URL, e.g. sqlite:///runs/winnow.db")
    ui.add_argument("--server", help="a winnow server, HOST:PORT (also what cancelling needs)")
    ui.add_argument("--token", default=os.environ.get("WINNOW_TOKEN"), help="the server's token")
    ui.add_argument("--token-file", help="read the server's token from a file")
    ui.add_argument("--address", default="127.0.0.1", help="where the dashboard listens")
    ui.add_argument("--port", type=int, default=8501)
    ui.add_argument("--headless", action="store_true", help="do not open a browser")
    ui.set_defaults(func=cmd_ui)
