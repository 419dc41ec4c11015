"""What every command does the same way: defaults in ``--help``, one spelling per option (the
former ones still accepted), the ``WINNOW_*`` environment (a flag wins), warnings about
relative SQLite paths, and ``--timeout`` bounding a command that cannot reach its server."""

from __future__ import annotations

import argparse
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from winnow.service.cli import main
from winnow.service.cli.main import build_parser
from winnow.service.client import Client, WinnowError
from winnow.service.store import Store, sqlite_url

ENV = ("WINNOW_DB", "WINNOW_ADDRESS", "WINNOW_TOKEN", "WINNOW_TOKEN_FILE")


@pytest.fixture(autouse=True)
def no_winnow_environment(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def _parsers(parser: argparse.ArgumentParser, name: str = "winnow"):
    """Every parser of the command tree, with its command line."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _parsers(child, f"{name} {sub}")


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_serve_help_shows_the_default_address_and_store(capsys):
    text = _help(capsys, "serve")
    assert "(default: 127.0.0.1:50051)" in text
    assert "(default: sqlite:///runs/winnow.db)" in text
    assert "four slashes: absolute" in text  # what sqlite:////path means


def test_every_option_says_its_default_once():
    for name, parser in _parsers(build_parser()):
        text = parser.format_help()
        for action in parser._actions:
            helped = parser._get_formatter()._expand_help(action) if action.help else ""
            if action.help is argparse.SUPPRESS:
                continue
            assert helped.lower().count("default") <= 1, f"{name} {action.option_strings}"
        assert "%(" not in text, name


def test_help_shows_the_environment_default(capsys, monkeypatch):
    monkeypatch.setenv("WINNOW_ADDRESS", "gpubox:7000")
    monkeypatch.setenv("WINNOW_DB", "sqlite:////srv/winnow.db")
    assert "(default: gpubox:7000)" in _help(capsys, "status")
    assert "(default: sqlite:////srv/winnow.db)" in _help(capsys, "search", "list")


@pytest.mark.parametrize(
    ("argv", "dest", "old"),
    [
        (["search", "list"], "db", "--store"),
        (["search", "resume", "ID"], "db", "--store"),
        (["bench", "search", "--oracle", "nb201:x.csv", "--dataset", "digits"], "db", "--store"),
        (["bench", "proxies", "--nb201", "x.csv"], "dataset", "--data"),
        (["bench", "search", "--oracle", "nb201:x.csv"], "dataset", "--data"),
    ],
)
def test_one_spelling_and_the_former_one_still_works(argv, dest, old, capsys):
    new = f"--{dest}"
    parser = build_parser()
    assert getattr(parser.parse_args([*argv, new, "V"]), dest) == "V"
    assert getattr(parser.parse_args([*argv, old, "V"]), dest) == "V"
    assert f"{old} is now spelled {new}" in capsys.readouterr().err
    text = _help(capsys, *argv[:2])
    assert new in text and f"{old} " not in text  # the former spelling is not advertised


def test_winnow_db_is_the_default_store_and_a_flag_beats_it(monkeypatch, tmp_path, capsys):
    from_env, from_flag = tmp_path / "env.db", tmp_path / "flag.db"
    monkeypatch.setenv("WINNOW_DB", sqlite_url(from_env))
    assert main(["search", "list"]) == 0 and from_env.exists()
    assert main(["search", "list", "--db", sqlite_url(from_flag)]) == 0 and from_flag.exists()
    assert build_parser().parse_args(["serve"]).db == sqlite_url(from_env)


def test_the_client_reads_the_address_and_token_file_from_the_environment(
    make_server, monkeypatch, tmp_path, capsys
):
    server = make_server(token="s3cret")
    (tmp_path / "token").write_text("s3cret\n")
    monkeypatch.setenv("WINNOW_ADDRESS", server.address)
    monkeypatch.setenv("WINNOW_TOKEN_FILE", str(tmp_path / "token"))
    with Client(timeout=10) as client:  # no arguments: the environment's server and token
        assert client.address == server.address and client.searches() == []
    with Client(token="wrong", timeout=10) as client, pytest.raises(WinnowError) as error:
        client.searches()  # an explicit token wins over the environment's
    assert error.value.code == "UNAUTHENTICATED"
    assert main(["list"]) == 0  # the CLI too
    monkeypatch.setenv("WINNOW_TOKEN_FILE", "")
    monkeypatch.setenv("WINNOW_TOKEN", "s3cret")
    assert main(["list", "--json"]) == 0
    assert main(["list", "--token", "wrong"]) == 2
    assert "UNAUTHENTICATED" in capsys.readouterr().err


def test_a_new_relative_sqlite_store_is_warned_about(monkeypatch, tmp_path, caplog):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="winnow.store"):
        Store("sqlite:///tmp/x.db")  # three slashes: ./tmp/x.db, not /tmp/x.db
    assert (tmp_path / "tmp" / "x.db").exists()
    [warning] = caplog.messages
    assert str(tmp_path / "tmp" / "x.db") in warning and "sqlite:////tmp/x.db" in warning
    caplog.clear()
    Store("sqlite:///tmp/x.db")  # it exists now: meant
    Store(sqlite_url(tmp_path / "abs.db"))  # absolute
    assert caplog.messages == []


def test_sqlite_url_is_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert sqlite_url("runs/x.db") == f"sqlite:///{tmp_path}/runs/x.db"
    assert sqlite_url("runs/x.db").startswith("sqlite:////")


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_timeout_bounds_a_command_whose_server_is_not_there():
    """It took 10 s whatever ``--timeout`` said: each of six tries had the whole timeout and
    the backoff came on top."""
    winnow = Path(sys.executable).with_name("winnow")
    address = f"127.0.0.1:{_unused_port()}"
    start = time.monotonic()
    done = subprocess.run(
        [str(winnow), "status", "x", "--address", address, "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - start
    assert done.returncode == 1 and "UNAVAILABLE" in done.stderr, done.stderr
    assert "gave up on" in done.stderr
    assert elapsed < 2 + 3, elapsed  # the timeout and the interpreter's start-up
