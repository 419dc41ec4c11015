"""The dashboard against a real winnow server: ``--server`` alone (the pages read a local
mirror of the server's searches, per-epoch curves included) and cancelling a running search
from the Search page."""

from __future__ import annotations

import time

from winnow.service.client import Client
from winnow.service.store import Store, sqlite_url
from winnow.ui.mirror import sync


def _wait_for(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.2)
    raise TimeoutError("condition not met in time")


def test_server_only_dashboard_mirrors_and_cancels(make_server, app, tiny_spec, tmp_path):
    server = make_server()
    long = tiny_spec(name="long", budget={"max_trials": 500})  # far more than the test waits for
    with Client(server.address, timeout=20) as client:
        search = client.submit(long)
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
        sync(client, mirror)
        mirrored = {(r.id, r.status) for r in mirror.trials(search.id)}
        assert mirrored == {(t["row_id"], t["status"]) for t in search.trials()}
        assert mirror.search(search.id).status == "cancelled"
        # the per-epoch curves cross the API: the mirror's rows hold the server's
        server_store = Store(sqlite_url(tmp_path / "winnow.db"))
        stored = {r.id: (r.loss_curve, r.accuracy_curve) for r in server_store.trials(search.id)}
        carried = {r.id: (r.loss_curve, r.accuracy_curve) for r in mirror.trials(search.id)}
        assert carried == stored and any(loss and accuracy for loss, accuracy in stored.values())
