"""``winnow ui`` refuses bad input before starting Streamlit; ``winnow bench ui`` reports."""

from __future__ import annotations

import json
import os
import stat

import pytest

from winnow.service.cli import main
from winnow.service.store import Store, sqlite_url
from winnow.ui.mirror import mirror_url
from winnow.ui.source import Settings


@pytest.fixture
def started(monkeypatch, tmp_path):
    """``winnow ui`` up to Streamlit: the command line and environment it would start the
    dashboard with (the mirror folder under ``tmp_path``)."""
    seen: dict = {}

    def execve(path, argv, environment):
        seen["argv"], seen["env"] = argv, environment

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    names = ("WINNOW_DB", "WINNOW_ADDRESS", "WINNOW_TOKEN", "WINNOW_TOKEN_FILE")
    for name in (*names, "WINNOW_UI_TOKEN", "WINNOW_UI_TOKEN_FILE"):
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
    assert result["compare_rows"] > result["rows"]  # the second search's too
    timed = ("search_page_seconds", "search_page_warm_seconds", "table_next_page_seconds")
    for key in (*timed, "compare_seconds"):
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
    assert started["env"]["WINNOW_UI_SERVER_TOKEN"] == "from-the-file"
    # --server alone mirrors that server even with $WINNOW_DB set; --token beats the file
    assert main(["ui", "--server", "10.0.0.1:9", "--token", "flag"]) == 0
    assert started["env"]["WINNOW_UI_DB"] == ""
    assert started["env"]["WINNOW_UI_SERVER_TOKEN"] == "flag"
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


def test_the_server_mirror_lives_in_a_private_folder_of_the_user(started, tmp_path):
    assert main(["ui", "--server", "10.0.0.1:9"]) == 0
    folder = tmp_path / "cache" / "winnow" / "ui-mirror"
    info = folder.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    assert mirror_url("10.0.0.1:9").startswith(sqlite_url(folder / "mirror-"))


@pytest.mark.parametrize("mode", [0o777, 0o770])
def test_a_mirror_folder_others_can_write_is_refused(started, tmp_path, capsys, mode):
    folder = tmp_path / "cache" / "winnow" / "ui-mirror"
    folder.mkdir(parents=True)
    folder.chmod(mode)
    assert main(["ui", "--server", "10.0.0.1:9"]) == 2
    assert f"{folder} can be written by others (mode {mode:o})" in capsys.readouterr().err
    assert "argv" not in started  # refused before Streamlit starts


def test_a_mirror_folder_of_another_user_is_refused(started, tmp_path, monkeypatch):
    folder = tmp_path / "cache" / "winnow" / "ui-mirror"
    folder.mkdir(parents=True, mode=0o700)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(folder).st_uid + 1)  # we are someone else
    with pytest.raises(PermissionError, match="belongs to another user"):
        mirror_url("10.0.0.1:9")


def test_a_mirror_folder_that_is_a_link_is_refused(started, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "cache" / "winnow").mkdir(parents=True)
    (tmp_path / "cache" / "winnow" / "ui-mirror").symlink_to(elsewhere)
    with pytest.raises(PermissionError, match="is not a folder"):
        mirror_url("10.0.0.1:9")


def test_the_dashboard_listens_on_loopback_unless_told(started, tmp_path):
    db = sqlite_url(tmp_path / "winnow.db")
    Store(db)
    assert main(["ui", "--db", db]) == 0
    argv = started["argv"]
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert main(["ui", "--db", db, "--address", "0.0.0.0"]) == 0
    assert started["argv"][started["argv"].index("--server.address") + 1] == "0.0.0.0"


def test_ui_help_says_it_has_no_authentication_and_binds_loopback(capsys):
    with pytest.raises(SystemExit):
        main(["ui", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Without --ui-token it has no authentication of its own" in text
    assert "a visitor sees only a sign-in form until they enter that token" in text
    assert "can press Cancel, which acts with the server's token" in text
    assert "listens on 127.0.0.1 (this machine only) unless --address" in text


def test_the_dashboard_token_reaches_streamlit_in_its_environment_only(
    started, tmp_path, monkeypatch
):
    db = sqlite_url(tmp_path / "winnow.db")
    Store(db)
    (tmp_path / "ui-token").write_text("dash-secret\n")
    assert main(["ui", "--db", db, "--ui-token-file", str(tmp_path / "ui-token")]) == 0
    assert started["env"]["WINNOW_UI_TOKEN"] == "dash-secret"
    assert not any("dash-secret" in part for part in started["argv"])  # `ps` shows argv
    assert started["env"]["WINNOW_UI_SERVER_TOKEN"] == ""  # not the server's token
    monkeypatch.setenv("WINNOW_UI_TOKEN_FILE", str(tmp_path / "ui-token"))
    assert main(["ui", "--db", db]) == 0
    assert started["env"]["WINNOW_UI_TOKEN"] == "dash-secret"
    assert "WINNOW_UI_TOKEN_FILE" not in started["env"]  # resolved here, once
    assert main(["ui", "--db", db, "--ui-token", "flag"]) == 0
    assert started["env"]["WINNOW_UI_TOKEN"] == "flag"
    monkeypatch.delenv("WINNOW_UI_TOKEN_FILE")
    monkeypatch.setenv("WINNOW_UI_TOKEN", "from-env")
    assert main(["ui", "--db", db]) == 0
    assert started["env"]["WINNOW_UI_TOKEN"] == "from-env"


def test_an_empty_dashboard_token_file_is_refused(started, tmp_path, capsys):
    db = sqlite_url(tmp_path / "winnow.db")
    Store(db)
    (tmp_path / "empty").write_text("\n")
    assert main(["ui", "--db", db, "--ui-token-file", str(tmp_path / "empty")]) == 2
    assert "is empty" in capsys.readouterr().err
    assert "argv" not in started


def test_a_networked_dashboard_without_a_token_warns(started, capsys):
    assert main(["ui", "--server", "10.0.0.1:9", "--address", "0.0.0.0"]) == 0
    err = capsys.readouterr().err
    assert "WARNING" in err and "press Cancel, which acts with the server's token" in err
    for quiet in (["--address", "127.0.0.1"], ["--address", "0.0.0.0", "--ui-token", "t"]):
        assert main(["ui", "--server", "10.0.0.1:9", *quiet]) == 0
        assert "WARNING" not in capsys.readouterr().err
