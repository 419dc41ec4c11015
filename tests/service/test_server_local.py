"""Searches on the server's worker pools: a local worker killed mid-search costs nothing, a
cancel stops the running trial instead of waiting for it, and a search runs on Ray."""

from __future__ import annotations

import os
import signal
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from winnow.service.cli import main
from winnow.service.client import Client
from winnow.workers.local import LocalExecutor
from winnow.workers.pools import PoolConfig


def test_a_search_survives_a_killed_worker_with_every_trial_accounted(make_server, tiny_spec):
    server = make_server(pool=PoolConfig("local", workers=2))
    with Client(server.address) as client:
        search = client.submit(tiny_spec(budget={"max_trials": 12}))
        deadline = time.monotonic() + 120
        while not any(w.task for w in server.pool.workers) and time.monotonic() < deadline:
            time.sleep(0.02)
        busy = next(w for w in server.pool.workers if w.task)
        os.kill(busy.process.pid, signal.SIGKILL)
        info = search.wait(timeout=240)
        rows = search.trials()
    assert info["status"] == "finished" and info["progress"]["trained"] == 12
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    assert all(r["host"] == os.uname().nodename for r in rows)


def health_status(address: str):
    with grpc.insecure_channel(address) as channel:
        request = health_pb2.HealthCheckRequest(service="winnow.v1.SearchService")
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


def wait_for_health(address: str, status, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while health_status(address) != status:
        assert time.monotonic() < deadline, f"health never became {status}"
        time.sleep(0.2)


def test_health_is_not_serving_while_workers_cannot_start_and_a_search_survives_it(
    make_server, tiny_spec, monkeypatch
):
    broken = [True]  # workers die before they are ready (an OOM kill while importing)
    spawn = LocalExecutor._spawn

    def flaky_spawn(self, index, gpu, conn):
        if broken[0]:
            return self._context.Process(target=os._exit, args=(3,), daemon=True)
        return spawn(self, index, gpu, conn)

    monkeypatch.setattr(LocalExecutor, "_spawn", flaky_spawn)
    server = make_server(pool=PoolConfig("local", workers=1))
    status = health_pb2.HealthCheckResponse
    wait_for_health(server.address, status.NOT_SERVING, timeout=60)
    with Client(server.address) as client:
        search = client.submit(tiny_spec(budget={"max_trials": 2}))
        broken[0] = False
        wait_for_health(server.address, status.SERVING, timeout=120)
        info = search.wait(timeout=240)
    assert info["status"] == "finished" and info["progress"]["trained"] == 2


def test_cancel_stops_the_running_trial(make_server, tiny_spec):
    server = make_server(pool=PoolConfig("local", workers=1))
    slow = tiny_spec(budget={"max_trials": 5}, strategy={"name": "random", "rungs": [400]})
    with Client(server.address) as client:
        search = client.submit(slow)
        deadline = time.monotonic() + 120
        while not server.pool.workers[0].task and time.monotonic() < deadline:
            time.sleep(0.02)
        pid = server.pool.workers[0].process.pid
        start = time.monotonic()
        search.cancel()
        info = search.wait(timeout=60)
        assert time.monotonic() - start < 30  # not the minutes the 400 epochs would take
        rows = search.trials()
    assert info["status"] == "cancelled"
    # the search ends as its trial's future is cancelled; the dispatcher replaces the worker
    # just after, so wait for it (bounded) instead of racing it
    deadline = time.monotonic() + 30
    while server.pool.workers[0].process.pid == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.pool.workers[0].process.pid != pid  # the trial's worker was stopped
    assert [(r["status"], r["error"]) for r in rows] == [("failed", "cancelled with the search")]


def test_a_search_runs_on_the_ray_executor(local_ray, make_server, tiny_spec):
    server = make_server(pool=PoolConfig("ray"))
    assert server.pool.slots == 2
    with Client(server.address) as client:
        search = client.submit(tiny_spec(budget={"max_trials": 4}))
        info = search.wait(timeout=240)
        rows = search.trials()
    assert info["status"] == "finished" and info["progress"]["trained"] == 4
    assert all(r["status"] == "ok" and r["host"] == os.uname().nodename for r in rows)


def test_trials_over_the_timeout_fail_and_so_does_the_search(make_server, tiny_spec):
    server = make_server(pool=PoolConfig("local", workers=1, timeout=2.0))
    slow = tiny_spec(budget={"max_trials": 2}, strategy={"name": "random", "rungs": [400]})
    with Client(server.address) as client:
        search = client.submit(slow)
        info = search.wait(timeout=120)
        rows = search.trials()
    assert info["status"] == "failed" and info["progress"]["trained"] == 2
    assert "2 of 2 failed rows: timed out after 2 s" in info["error"]  # the commonest, counted
    assert main(["status", search.id, "--address", server.address]) == 1  # failed: not 0
    assert len(rows) == 2
    assert all(r["status"] == "failed" and "timed out after 2 s" in r["error"] for r in rows)


def test_a_search_streams_each_trials_start_epochs_and_end(make_server, tiny_spec):
    """On the local pool, every epoch of every rung travels worker -> engine -> WatchSearch in
    order: trial_started, its epoch_finished events (loss, seconds), then its trial event with
    the metrics. The promotion continues its first rung's training (``continue_rungs``, the
    default): it runs epochs 3 and 4 of the 4-epoch schedule."""
    server = make_server(pool=PoolConfig("local", workers=1))
    spec = tiny_spec(
        budget={"max_trials": 3},
        strategy={"name": "random", "rungs": [2, 4], "reduction_factor": 2},
    )
    with Client(server.address) as client:
        search = client.submit(spec)
        events = [(e.kind, e.payload) for e in search.watch(timeout=240)]
    runs: dict[tuple[int, int], list[tuple[str, dict]]] = {}
    for kind, payload in events:
        if kind in ("trial_started", "epoch_finished", "trial"):
            runs.setdefault((payload["trial_id"], payload["rung"]), []).append((kind, payload))
    rungs = sorted(rung for _, rung in runs)  # three candidates; a promotion ran too
    assert rungs[:3] == [0, 0, 0] and rungs[3:] and set(rungs[3:]) == {1}
    for (_, rung), run in runs.items():
        kinds = [kind for kind, _ in run]
        epochs, start = (2, 0) if rung == 0 else (4, 2)
        assert kinds == ["trial_started", *["epoch_finished"] * (epochs - start), "trial"], kinds
        started, *epoch_events, (_, finished) = run
        assert started[1]["epochs"] == epochs and "mlp[" in started[1]["candidate"]
        assert started[1]["epochs_to_run"] == finished["metrics"]["epochs_run"] == epochs - start
        assert [p["epoch"] for _, p in epoch_events] == list(range(start + 1, epochs + 1))
        assert all(p["loss"] > 0 and p["seconds"] > 0 for _, p in epoch_events)
        assert all(p["epochs"] == epochs for _, p in epoch_events)
        assert finished["status"] == "ok" and 0 < finished["metrics"]["accuracy"] <= 1
        assert finished["metrics"]["params"] > 0 and "error" not in finished
