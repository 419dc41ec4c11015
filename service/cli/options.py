"""What every command's parser shares: defaults shown in ``--help``, one spelling per option
(``--db``, ``--dataset``; the old spellings still work, hidden, with a note on stderr), and the
options that find a server.

Defaults that come from the environment (``winnow.service.env``) are read when the parser is
built, so ``--help`` shows what a command would use.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from winnow.service import env

DB_HELP = (
    "store URL: sqlite:///relative/path.db (three slashes: relative to the current folder), "
    "sqlite:////absolute/path.db (four slashes: absolute) or postgresql+psycopg://USER@HOST/DB; "
    f"${env.DB} when not given"
)


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number of at least 1 (else exit 2 naming the option)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse ``type``: a finite number of at least 0."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text}")
    return value


class DefaultsFormatter(argparse.HelpFormatter):
    """Each option's default after its help, like ``argparse.ArgumentDefaultsHelpFormatter``,
    except for what has no default worth saying: an unset option (None), a flag (False), an
    empty list, and a help that already names its default (``%(default)s``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        unsaid = (
            default is None or default is False or default == [] or default is argparse.SUPPRESS
        )
        if not action.option_strings or unsaid or "%(default)" in text:
            return action.help
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"

    def _format_action_invocation(self, action: argparse.Action) -> str:
        """An option without its former spellings (``renamed``)."""
        old = getattr(action, "old", ())
        if not old:
            return super()._format_action_invocation(action)
        shown = [s for s in action.option_strings if s not in old]
        return super()._format_action_invocation(
            argparse.Action(shown, action.dest, nargs=action.nargs, metavar=action.metavar)
        )


class WinnowParser(argparse.ArgumentParser):
    """The parser of every command: subcommands' parsers are of the parser's own class
    (argparse's ``add_subparsers`` default), so the whole tree shows its defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)


class _Renamed(argparse._StoreAction):
    """An option with former spellings (``old``): each still works, says on stderr which
    spelling to use, and is left out of ``--help``."""

    def __init__(self, option_strings: list[str], dest: str, old: tuple[str, ...], **kwargs):
        self.old = old
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if option_string in self.old:
            new = next(s for s in self.option_strings if s not in self.old)
            print(f"winnow: {option_string} is now spelled {new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def renamed(parser: argparse.ArgumentParser, new: str, *old: str, **kwargs: Any) -> None:
    """``new`` as the option, with ``old`` spellings still accepted (hidden from ``--help``)."""
    parser.add_argument(new, *old, action=_Renamed, old=old, **kwargs)


def db_option(parser: argparse.ArgumentParser, default: str | None = None, **kwargs: Any) -> None:
    """``--db URL`` (formerly ``--store``): ``default`` or ``$WINNOW_DB`` or the built-in one."""
    kwargs.setdefault("help", DB_HELP)
    renamed(parser, "--db", "--store", default=default or env.db_url(), metavar="URL", **kwargs)


def dataset_option(parser: argparse.ArgumentParser, **kwargs: Any) -> None:
    """``--dataset NAME`` (formerly ``--data``)."""
    renamed(parser, "--dataset", "--data", **kwargs)


def client_options(parser: argparse.ArgumentParser) -> None:
    """How a client command finds and reaches the server."""
    parser.add_argument(
        "--address",
        default=env.address(),
        help=f"the server, HOST:PORT; ${env.ADDRESS} when not given",
    )
    parser.add_argument("--token", help=f"bearer token (default: ${env.TOKEN})")
    parser.add_argument(
        "--token-file", help=f"file holding the bearer token (default: ${env.TOKEN_FILE})"
    )
    parser.add_argument("--tls-ca", help="CA certificate (PEM) to reach a TLS server")
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds each server call may take, retries included",
    )
