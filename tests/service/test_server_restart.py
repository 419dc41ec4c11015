"""A real ``winnow serve`` process: SIGTERM drains and leaves the search resumable; a search
resumed by a server with other data roots is checked against them. (SIGKILL of the server
mid-search: tests/service/test_faults.py.)"""

from __future__ import annotations

import signal

import pytest

from winnow.service.client import Client
from winnow.service.store import Store

from .served import Served, wait_until

SEARCH_SECONDS = 240


@pytest.mark.slow
def test_sigterm_drains_and_leaves_the_search_resumable(tmp_path, tiny_spec):
    served = Served(tmp_path).start().wait_ready()
    store = served.store
    try:
        with Client(served.address, retries=8) as client:
            search = client.submit(tiny_spec(budget={"max_trials": 200}))

        def one_finished() -> bool:
            assert served.alive(), served.log_tail()
            return any(r.status == "ok" for r in store.trials(search.id))

        wait_until(one_finished, SEARCH_SECONDS, "a finished trial", step=0.2)
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(60) == 0
        assert store.search(search.id).status == "queued"
        rows = store.trials(search.id)
        assert rows and all(r.status == "ok" for r in rows)  # the running trial finished, kept
        last = store.events(search.id)[-1]
        assert last.kind == "search_paused" and last.payload["status"] == "queued"
    finally:
        served.close()


def test_a_resumed_search_is_checked_against_the_new_servers_data_roots(
    tmp_path, make_server, tiny_spec
):
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {"train_x": rng.random((40, 64), dtype=np.float32), "train_y": rng.integers(0, 10, 40)}
    arrays |= {"test_x": rng.random((20, 64), dtype=np.float32), "test_y": rng.integers(0, 10, 20)}
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    np.savez(tmp_path / "old" / "tiny.npz", **arrays)
    dataset = f"npz:{tmp_path / 'old' / 'tiny.npz'}"
    # One slot, taken by a long search: the npz search is accepted and waits in the queue.
    first = make_server(data_roots=(tmp_path / "old",), max_concurrent_searches=1)
    with Client(first.address, retries=0) as client:
        blocker = client.submit(tiny_spec(budget={"max_trials": 10_000}))
        queued = client.submit(tiny_spec(task={"dataset": dataset}))
        assert client.search(queued.id).info()["status"] == "queued"
    first.stop(grace=0.5)

    second = make_server(data_roots=(tmp_path / "new",), max_concurrent_searches=2)
    with Client(second.address, retries=0) as client:
        info = client.search(queued.id).wait(timeout=60)
        client.search(blocker.id).cancel()
    assert info["status"] == "failed"
    assert info["error"].startswith(f"dataset {dataset} is outside this server's --data-root")
    assert str(tmp_path / "new") in info["error"]
    assert Store(second.config.db_url).trials(queued.id) == []  # nothing was run on it
