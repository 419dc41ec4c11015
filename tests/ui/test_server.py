"""The dashboard against a real winnow server: ``--server`` alone (the pages read a local
mirror of the server's searches) and cancelling a running search from the Search page."""

from __future__ import annotations

import time

import pytest

from winnow.service.client import Client
from winnow.service.server import ServerConfig, WinnowServer
from winnow.service.store import Store, sqlite_url
from winnow.ui.mirror import sync

# One-epoch MLPs on the digits, far more than the test waits for: it cancels the search.
LONG_SPEC = {
    "name": "long",
    "space": {
        "architecture": {"family": "mlp", "depth": [1, 2], "width": [16, 32, 64]},
        "optimizer": {"name": "adamw", "lr": {"low": 1e-3, "high": 1e-2, "log": True}},
    },
    "task": {"dataset": "digits"},
    "objectives": [
        {"name": "accuracy", "direction": "maximize"},
        {"name": "params", "direction": "minimize"},
    ],
    "budget": {"max_trials": 500},
    "strategy": {"name": "random", "rungs": [1]},
    "seed": 0,
}


@pytest.fixture
def server(tmp_path):
    server = WinnowServer(
        ServerConfig(db_url=sqlite_url(tmp_path / "server.db"), address="127.0.0.1:0")
    ).start()
    yield server
    server.stop(grace=0.5)


def _wait_for(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.2)
    raise TimeoutError("condition not met in time")


def test_server_only_dashboard_mirrors_and_cancels(server, app, tmp_path):
    with Client(server.address, timeout=20) as client:
        search = client.submit(LONG_SPEC)
        _wait_for(lambda: search.trials(status="ok"))
        at = app("", search=search.id, server=server.address)
        assert at.title[0].value == "Search long"
        at.button(key="cancel").click().run()
        at.button(key="cancel-yes").click().run()
        assert not at.error, at.error[0].value
        assert "Search is now" in at.success[0].value
        final = search.wait(timeout=60)
        assert final["status"] == "cancelled"
        mirror = Store(sqlite_url(tmp_path / "mirror.db"))
        sync(server.address, None, mirror)
        mirrored = {(r.id, r.status) for r in mirror.trials(search.id)}
        assert mirrored == {(t["row_id"], t["status"]) for t in search.trials()}
        assert mirror.search(search.id).status == "cancelled"
