"""The Ray executor on a local Ray of 2 CPUs: results as in-process, a worker killed mid-trial
(retried by Ray), timeouts and cancellation that stop the running trial."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from winnow.search_space.trial import Status, TrialSpec
from winnow.workers.ray_executor import RayExecutor

from .test_local import LONG, MLP, QUICK, assert_matches_an_in_process_run

TASK_TITLE = b"ray::_run_on_ray"  # Ray names a worker process after the task it runs


@pytest.fixture(scope="module")
def pool(local_ray):
    with RayExecutor(max_retries=1) as executor:
        yield executor


def task_pids() -> set[int]:
    """Processes running a trial now: Ray sets their title to the task's name."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(TASK_TITLE):
                    pids.add(int(entry.name))
            except OSError:
                continue  # ended meanwhile
    return pids


def wait_for_task(timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = task_pids()
        if pids:
            return pids.pop()
        time.sleep(0.1)
    raise AssertionError("no Ray worker picked the trial up")


def test_the_pool_reads_the_cluster(pool):
    assert pool.slots == 2 and pool.device == "cpu"


def test_results_match_an_in_process_run_and_record_the_host(pool):
    assert_matches_an_in_process_run(pool, 1)  # Ray gives a task of num_cpus=1 one thread


def test_a_killed_worker_has_its_trial_retried(pool):
    future = pool.submit(TrialSpec(MLP, "digits", epochs=40))
    pid = wait_for_task()
    os.kill(pid, signal.SIGKILL)
    result = future.result(timeout=240)
    assert result.status == Status.OK and result.metrics["accuracy"] > 0.5


def test_a_trial_that_keeps_killing_its_worker_fails_with_the_reason(local_ray):
    with RayExecutor(max_retries=0) as executor:
        future = executor.submit(LONG)
        os.kill(wait_for_task(), signal.SIGKILL)
        result = future.result(timeout=120)
    assert result.status == Status.FAILED and "worker died" in result.error


def test_a_trial_over_its_timeout_is_stopped_and_failed(local_ray):
    with RayExecutor(timeout=3.0) as executor:
        start = time.monotonic()
        result = executor.submit(LONG).result(timeout=120)
        assert result.status == Status.FAILED and "timed out after 3 s" in result.error
        assert time.monotonic() - start < 30
        deadline = time.monotonic() + 30
        while task_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not task_pids()  # the trial's worker was stopped, not left running


def test_cancelling_a_running_trial_stops_it(pool):
    future = pool.submit(LONG)
    pid = wait_for_task()
    assert future.cancel()
    deadline = time.monotonic() + 30
    while pid in task_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid not in task_pids()
    assert pool.submit(QUICK).result(timeout=120).status == Status.OK


def node(alive: bool, cpus: float | None) -> dict:
    """One entry of ``ray.nodes()``, as Ray gives it (the fields the decision reads)."""
    return {"Alive": alive, "Resources": {} if cpus is None else {"CPU": cpus, "memory": 1e9}}


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        ([node(True, 2.0)], True),
        ([node(False, 2.0), node(True, 1.0)], True),  # the worker died, the head still runs
        ([node(True, 0.0), node(False, 1.0)], False),  # a CPU-less head, its worker gone
        ([node(False, 2.0)], False),
        ([node(True, None)], False),
        ([], False),
    ],
)
def test_has_cpu_node_decides_from_ray_nodes(nodes, expected):
    from winnow.workers.ray_executor import has_cpu_node

    assert has_cpu_node(nodes) is expected


def test_health_follows_the_cluster_and_asks_it_sparingly(pool, monkeypatch):
    import ray

    from winnow.workers import ray_executor

    real_nodes = ray.nodes()
    assert ray_executor.has_cpu_node(real_nodes)  # the real cluster's answer reads as alive
    asked: list[float] = []
    answer = [[node(False, 2.0)]]

    def nodes():
        asked.append(time.monotonic())
        return answer[0]

    monkeypatch.setattr(ray, "nodes", nodes)
    monkeypatch.setattr(pool, "_health", (float("-inf"), True))  # forget the last answer
    assert not pool.healthy  # no alive node with CPUs
    assert all(not pool.healthy for _ in range(50)) and len(asked) == 1  # cached
    answer[0] = real_nodes
    monkeypatch.setattr(ray_executor, "HEALTH_SECONDS", 0.0)
    assert pool.healthy and len(asked) == 2  # the node is back
    monkeypatch.setattr(ray, "nodes", lambda: (_ for _ in ()).throw(ConnectionError("gone")))
    assert not pool.healthy  # a cluster that cannot be asked runs nothing
