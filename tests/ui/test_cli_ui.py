"""``winnow ui`` refuses bad input before starting Streamlit; ``winnow bench ui`` reports."""

from __future__ import annotations

import json
import os

import pytest

from winnow.service.cli import main
from winnow.service.store import Store, sqlite_url
from winnow.ui.source import Settings


@pytest.fixture
def started(monkeypatch):
    """``winnow ui`` up to Streamlit: the environment it would start the dashboard with."""
    seen: dict[str, dict[str, str]] = {}

    def execve(path, argv, environment):
        seen["env"] = environment

    monkeypatch.setattr(os, "execve", execve)
    for name in ("WINNOW_DB", "WINNOW_ADDRESS", "WINNOW_TOKEN", "WINNOW_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    return seen


def test_ui_needs_a_store_or_a_server(capsys, started):
    assert main(["ui"]) == 2
    assert "--db URL" in capsys.readouterr().err


def test_ui_refuses_a_sqlite_file_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "typo.db"
    assert main(["ui", "--db", f"sqlite:///{missing}"]) == 2
    assert "no SQLite database" in capsys.readouterr().err
    assert not missing.exists()  # not created as an empty store


def test_bench_ui_prints_its_measurements(monkeypatch, capsys):
    monkeypatch.setenv("WINNOW_UI_DB", "")  # the bench sets it; restored after the test
    monkeypatch.setenv("WINNOW_UI_SERVER", "")
    assert main(["bench", "ui", "--trials", "80", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["trials"] == 80 and result["rows"] > 80  # proxy rows and rungs
    for key in ("search_page_seconds", "search_page_warm_seconds", "table_next_page_seconds"):
        assert result[key] > 0


def test_ui_reads_its_sources_and_token_from_the_environment_flags_first(
    started, monkeypatch, tmp_path
):
    db = sqlite_url(tmp_path / "winnow.db")
    Store(db)
    (tmp_path / "token").write_text("from-the-file\n")
    monkeypatch.setenv("WINNOW_DB", db)
    monkeypatch.setenv("WINNOW_TOKEN_FILE", str(tmp_path / "token"))
    assert main(["ui"]) == 0
    assert started["env"]["WINNOW_UI_DB"] == db and started["env"]["WINNOW_UI_SERVER"] == ""
    assert started["env"]["WINNOW_UI_TOKEN"] == "from-the-file"
    # --server alone mirrors that server even with $WINNOW_DB set; --token beats the file
    assert main(["ui", "--server", "10.0.0.1:9", "--token", "flag"]) == 0
    assert started["env"]["WINNOW_UI_DB"] == "" and started["env"]["WINNOW_UI_TOKEN"] == "flag"
    monkeypatch.delenv("WINNOW_DB")
    monkeypatch.setenv("WINNOW_ADDRESS", "10.0.0.2:9")
    assert main(["ui"]) == 0
    assert started["env"]["WINNOW_UI_SERVER"] == "10.0.0.2:9"


def test_ui_reaches_a_tls_server_with_its_ca(started, make_server, self_signed, monkeypatch):
    cert, key = self_signed
    server = make_server(tls_cert=cert, tls_key=key)
    address = f"localhost:{server.port}"
    assert main(["ui", "--server", address, "--tls-ca", str(cert)]) == 0
    for name, value in started["env"].items():  # what the dashboard's process would see
        if name.startswith("WINNOW_UI_"):
            monkeypatch.setenv(name, value)
    with Settings.from_env().client(timeout=10) as client:  # the mirror's and cancel's client
        assert client.searches() == []


def test_ui_refuses_a_ca_file_that_does_not_exist(started, tmp_path, capsys):
    assert main(["ui", "--server", "localhost:1", "--tls-ca", str(tmp_path / "no.pem")]) == 2
    assert "--tls-ca: no file" in capsys.readouterr().err
