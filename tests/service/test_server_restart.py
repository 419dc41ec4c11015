"""A real ``winnow serve`` process: killed with SIGKILL mid-search and restarted, the search
finishes with every finished trial kept as it was; SIGTERM drains and leaves the search
resumable."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from winnow.service.client import Client
from winnow.service.store import Store, sqlite_url

# Trials take a fraction of a second: enough of them that the kill lands mid-search.
BUDGET = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(db_url: str, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "winnow.service.cli", "serve", "--db", db_url]
    command += ["--address", f"127.0.0.1:{port}", "--log-format", "text", "--grace", "1"]
    return subprocess.Popen(command, env=os.environ | {"OMP_NUM_THREADS": "1"})


def wait_for_ok_rows(store: Store, search_id: str, n: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server ended early"
        if sum(r.status == "ok" for r in store.trials(search_id)) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} finished trials after 240 s")


def finished_rows(store: Store, search_id: str) -> dict[int, tuple]:
    return {
        r.id: (r.number, r.stage, r.epochs, r.metrics, r.finished_at)
        for r in store.trials(search_id)
        if r.status == "ok"
    }


def test_server_killed_mid_search_resumes_it_on_restart(tmp_path, tiny_spec):
    db_url, port = sqlite_url(tmp_path / "winnow.db"), free_port()
    store = Store(db_url)
    process = serve(db_url, port)
    try:
        with Client(f"127.0.0.1:{port}", retries=8) as client:
            search = client.submit(tiny_spec(budget={"max_trials": BUDGET}))
        wait_for_ok_rows(store, search.id, 3, process)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        before = finished_rows(store, search.id)
        assert 3 <= len(before) < BUDGET

        process = serve(db_url, port)
        with Client(f"127.0.0.1:{port}", retries=8) as client:
            info = client.search(search.id).wait(timeout=240)
        assert info["status"] == "finished" and info["progress"]["trained"] == BUDGET
        after = finished_rows(store, search.id)
        assert all(after[row_id] == kept for row_id, kept in before.items())
        numbers = [number for number, stage, *_ in after.values() if stage == "train"]
        assert len(numbers) == len(set(numbers)) == BUDGET  # nothing re-run, nothing lost
        kinds = [e.kind for e in store.events(search.id)]
        assert kinds.count("search_resumed") == 1 and kinds[-1] == "search_finished"
    finally:
        process.kill()
        process.wait(30)


def test_sigterm_drains_and_leaves_the_search_resumable(tmp_path, tiny_spec):
    db_url, port = sqlite_url(tmp_path / "winnow.db"), free_port()
    store = Store(db_url)
    process = serve(db_url, port)
    try:
        with Client(f"127.0.0.1:{port}", retries=8) as client:
            search = client.submit(tiny_spec(budget={"max_trials": 200}))
        wait_for_ok_rows(store, search.id, 1, process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        process.kill()
        process.wait(30)
    assert store.search(search.id).status == "queued"
    rows = store.trials(search.id)
    assert rows and all(r.status == "ok" for r in rows)  # the running trial finished and stayed
    last = store.events(search.id)[-1]
    assert last.kind == "search_paused" and last.payload["status"] == "queued"


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
