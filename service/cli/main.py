"""The ``winnow`` command line: the parser and ``main``; each command group is a module.

    winnow space validate|sample|describe ...  and  winnow evaluate ...   (``space``)
    winnow search run|resume|list ...                                     (``search``)
    winnow serve | submit | status | list | pareto | importance | cancel | export | demo
                                                                          (``service``)
    winnow ui ...                                                         (``ui``)
    winnow bench proxies|hashing|search|service|workers|ui ...           (``bench``)

Exit codes: 0 success, 1 an evaluation or a server call that failed, 2 bad input (including
what a server refused as such: an invalid spec, an unknown search, a missing token).

Start-up imports only the parsers: handlers import what they run (torch, optuna, gRPC, SQL), so
that ``winnow --help`` and ``winnow --version`` answer at once.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version

from winnow.service.cli.bench import add_bench_commands
from winnow.service.cli.options import WinnowParser
from winnow.service.cli.search import add_search_commands
from winnow.service.cli.service import add_service_commands
from winnow.service.cli.space import add_space_commands
from winnow.service.cli.ui import add_ui_commands

# gRPC statuses that mean the request itself was wrong (exit code 2)
CLIENT_MISTAKES = ("INVALID_ARGUMENT", "NOT_FOUND", "UNAUTHENTICATED", "PERMISSION_DENIED")


def build_parser() -> WinnowParser:
    parser = WinnowParser(
        prog="winnow",
        description="The winnow command line.",
        epilog="Environment: WINNOW_ADDRESS (the server), WINNOW_TOKEN / WINNOW_TOKEN_FILE (its "
        "bearer token), WINNOW_DB (the store URL); a flag given wins over them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('winnow')}")
    commands = parser.add_subparsers(dest="command", required=True)
    add_space_commands(commands)
    add_bench_commands(commands)
    add_search_commands(commands)
    add_service_commands(commands)
    add_ui_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader stopped (`winnow list --json | head -3`): not an error
        _discard_stdout()
        return 0
    except Exception as error:
        code = _exit_code(error)
        if code is None:
            raise
        print(f"winnow: error: {error}", file=sys.stderr)
        return code


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush at exit does not fail on
    the closed pipe again (the recipe of Python's ``signal`` documentation)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _exit_code(error: Exception) -> int | None:
    """2 for bad input, 1 for a server call that failed, None for a bug (re-raised).

    Bad input is a ``ValueError`` (which spec errors, unknown registry names, pydantic's
    validation errors and candidates outside their space all are), an ``OSError`` or a dataset
    that cannot be loaded."""
    if isinstance(error, _loaded("winnow.service.client", "WinnowError")):
        return 2 if error.code in CLIENT_MISTAKES else 1
    dataset_errors = _loaded("winnow.search_space.datasets", "DatasetError")
    return 2 if isinstance(error, (ValueError, OSError, *dataset_errors)) else None


def _loaded(module: str, name: str) -> tuple[type[Exception], ...]:
    """The exception class ``module.name`` if the command loaded ``module``, else none: a
    command that never loaded it cannot have raised it, and importing it here would cost every
    start its imports (gRPC, torch)."""
    loaded = sys.modules.get(module)
    return (getattr(loaded, name),) if loaded is not None else ()


if __name__ == "__main__":
    sys.exit(main())
