"""Seeded stores for the dashboard's tests, the app under ``AppTest``, and a real dashboard
server for the browser test (``serve``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from winnow.bench.seed import seed_search
from winnow.records import TrialRecord
from winnow.service.cli.ui import APP, streamlit_command
from winnow.service.search_spec import SearchSpec
from winnow.service.store import Store, sqlite_url

ROOT = Path(__file__).resolve().parents[2]
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, always


@dataclass
class Seeded:
    """A store holding a finished digits search (``search_id``, mlp) and a running nb201 one."""

    url: str
    store: Store
    search_id: str
    running_id: str

    def spec(self, search_id: str | None = None) -> SearchSpec:
        return SearchSpec.model_validate_json(
            self.store.search(search_id or self.search_id).spec_json
        )

    def rows(self, search_id: str | None = None) -> list[TrialRecord]:
        return self.store.trials(search_id or self.search_id)


@pytest.fixture(scope="session")
def seeded(tmp_path_factory) -> Iterator[Seeded]:
    url = sqlite_url(tmp_path_factory.mktemp("ui") / "seeded.db")
    store = Store(url)
    search_id = seed_search(store, 600, seed=3)
    running_id = seed_search(store, 120, seed=4, status="running", space="nb201-joint")
    yield Seeded(url, store, search_id, running_id)
    store.close()


@pytest.fixture
def fresh(tmp_path) -> Iterator[Seeded]:
    """A store of its own, for tests that write to it."""
    url = sqlite_url(tmp_path / "fresh.db")
    store = Store(url)
    search_id = seed_search(store, 200, seed=5)
    running_id = seed_search(store, 60, seed=6, status="running")
    yield Seeded(url, store, search_id, running_id)
    store.close()


@pytest.fixture(autouse=True)
def _keep_main_module(monkeypatch):
    """Streamlit's ``AppTest`` installs the script as ``__main__`` and leaves it there; worker
    processes spawned later in the session would re-run the dashboard as their main module."""
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])


@pytest.fixture
def app(monkeypatch):
    """``app(url, search=None, trial=None, server=None, token=None, compare=None)``: the
    dashboard's script, run once (``token``: the dashboard's own, which a visitor must enter;
    ``compare``: the ids the Compare page compares)."""

    def make(
        url: str,
        search: str | None = None,
        trial: int | None = None,
        server=None,
        token=None,
        compare: list[str] | None = None,
    ):
        monkeypatch.setenv("WINNOW_UI_DB", url)
        monkeypatch.setenv("WINNOW_UI_SERVER", server or "")
        monkeypatch.setenv("WINNOW_UI_TOKEN", token or "")  # the dashboard's own token
        st.cache_data.clear()  # every test reads its store afresh
        at = AppTest.from_file(str(APP), default_timeout=60)
        if search is not None:
            at.query_params["search"] = search
        if trial is not None:
            at.query_params["trial"] = str(trial)
        if compare is not None:
            at.query_params["compare"] = ",".join(compare)
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        return at

    return make


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve(url: str, log_path: Path) -> Iterator[str]:
    """``streamlit run`` on the store at ``url``, on a free loopback port; its base URL (the
    browser test's dashboard, one per module)."""
    port = free_port()
    env = os.environ | {"WINNOW_UI_DB": url, "WINNOW_UI_SERVER": ""}
    log = log_path.open("w")
    process = subprocess.Popen(
        streamlit_command("127.0.0.1", port), env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, process)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _wait_healthy(base: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}")
        try:
            with NO_PROXY.open(f"{base}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer at {base} in {timeout} s")


@pytest.fixture
def artifacts() -> Path:
    """Where tests leave files for people to look at (screenshots)."""
    folder = Path(os.environ.get("WINNOW_TEST_ARTIFACTS", ROOT / "runs" / "test-artifacts" / "ui"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
