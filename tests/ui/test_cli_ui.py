"""``winnow ui`` refuses bad input before starting Streamlit; ``winnow bench ui`` reports."""

from __future__ import annotations

import json

from winnow.service.cli import main


def test_ui_needs_a_store_or_a_server(capsys):
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
