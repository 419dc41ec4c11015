"""Faults against a real ``winnow serve`` (issue 16's fault suite): SIGKILL of the server
mid-search and of a worker mid-trial lose no finished trial and re-run none (checked in the
store); workers that keep dying as they start leave the pool NOT_SERVING, then it recovers;
16 clients submitting and waiting at once all finish. Hostile requests: test_faults_hostile.py.
"""

from __future__ import annotations

import threading
import time

import pytest

from winnow.service.client import Client
from winnow.service.store import Store

from .served import NOT_SERVING, SERVING, Served, kill_pid, wait_until

pytestmark = pytest.mark.slow
SEARCH_SECONDS = 180


def finished_rows(store: Store, search_id: str) -> dict[int, tuple]:
    """Every finished trial row by its id, with what a re-run would change."""
    return {
        r.id: (r.number, r.stage, r.epochs, r.rung, r.metrics, r.seconds, r.finished_at)
        for r in store.trials(search_id)
        if r.status == "ok"
    }


def ok_count(store: Store, search_id: str) -> int:
    return sum(r.status == "ok" for r in store.trials(search_id))


def assert_kept_and_complete(before: dict, after: dict, budget: int) -> None:
    changed = [row_id for row_id, row in before.items() if after.get(row_id) != row]
    assert not changed, f"finished trials lost or changed: rows {changed}"
    numbers = [number for number, stage, *_ in after.values() if stage == "train"]
    assert sorted(numbers) == list(range(len(numbers)))  # each candidate trained once
    assert len(numbers) == budget


def test_server_kill_9_mid_search_resumes_without_rerunning(tmp_path, tiny_spec):
    # enough trials that the search cannot finish between seeing two and the kill (they take
    # a tenth of a second each; a test process slowed by a busy machine polls late)
    budget = 24
    served = Served(tmp_path, "--workers", "1").start().wait_ready()
    try:
        with Client(served.address, retries=10) as client:
            search = client.submit(tiny_spec(budget={"max_trials": budget}))
        wait_until(lambda: ok_count(served.store, search.id) >= 2, SEARCH_SECONDS, "2 trials")
        served.kill()
        before = finished_rows(served.store, search.id)
        assert 2 <= len(before) < budget

        served.start().wait_ready()
        with Client(served.address, retries=10) as client:
            info = client.search(search.id).wait(timeout=SEARCH_SECONDS)
        assert info["status"] == "finished", served.log_tail()
        assert_kept_and_complete(before, finished_rows(served.store, search.id), budget)
        kinds = [e.kind for e in served.store.events(search.id)]
        assert kinds.count("search_resumed") == 1 and kinds[-1] == "search_finished"
    finally:
        served.close()


def test_worker_kill_9_mid_trial_is_retried_and_loses_nothing(tmp_path, tiny_spec):
    budget = 24  # as above: the search must not end before the test sees one trial running
    served = Served(tmp_path, "--workers", "1").start().wait_ready()
    try:
        with Client(served.address, retries=10) as client:
            search = client.submit(tiny_spec(budget={"max_trials": budget}))

            def running_after_two() -> bool:
                rows = served.store.trials(search.id)
                done = sum(r.status == "ok" for r in rows)
                return done >= 2 and any(r.status == "running" for r in rows)

            wait_until(running_after_two, SEARCH_SECONDS, "a trial running after 2 finished")
            before = finished_rows(served.store, search.id)
            (victim,) = served.worker_pids()
            assert kill_pid(victim)
            info = client.search(search.id).wait(timeout=SEARCH_SECONDS)
        assert info["status"] == "finished", served.log_tail()
        assert_kept_and_complete(before, finished_rows(served.store, search.id), budget)
        assert not [r for r in served.store.trials(search.id) if r.status == "failed"]
        assert victim not in served.worker_pids()  # replaced
        assert f"(pid {victim}) died" in served.log_tail(100_000)
    finally:
        served.close()


def test_workers_dying_at_start_leave_the_pool_not_serving_then_it_recovers(tmp_path, tiny_spec):
    """Four deaths before READY: the third starts the backoff (1 s, then 2 s), during which the
    server says NOT_SERVING; once the killing stops, the worker starts and a canary finishes."""
    served = Served(tmp_path, "--workers", "1").start()  # killed from the first moment
    killed: list[int] = []
    seen: set[int | None] = set()
    try:
        deadline = time.monotonic() + SEARCH_SECONDS
        while len(killed) < 4 and time.monotonic() < deadline:
            killed += [pid for pid in served.worker_pids() if kill_pid(pid)]
            seen.add(served.health())
            time.sleep(0.02)
        assert len(killed) >= 4, served.log_tail()
        seen |= set(_health_for(served, 2.5))
        assert NOT_SERVING in seen, f"health seen while workers died: {seen}"

        wait_until(lambda: served.health() == SERVING, 60, "health SERVING again")
        with Client(served.address, retries=10) as client:
            info = client.submit(tiny_spec(budget={"max_trials": 1})).wait(timeout=SEARCH_SECONDS)
        assert info["status"] == "finished" and info["progress"]["trained"] == 1, info
        assert "starting it again in" in served.log_tail(100_000)
    finally:
        served.close()


def _health_for(served: Served, seconds: float) -> list[int | None]:
    seen, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append(served.health())
        time.sleep(0.1)
    return seen


def test_16_clients_submitting_and_waiting_at_once_all_finish(tmp_path, tiny_spec):
    """16 clients x 2 searches waited on at once: 32 waits, past the server's 24 watch
    streams, so that some clients poll instead; none may fail."""
    served = Served(tmp_path, "--workers", "2", "--max-concurrent-searches", "4").start()
    results: dict[str, dict] = {}
    errors: list[str] = []

    def one_client(index: int) -> None:
        try:
            with Client(served.address, retries=10, timeout=60) as client:
                searches = [
                    client.submit(tiny_spec(name=f"c{index}-{k}", budget={"max_trials": 1}))
                    for k in range(2)
                ]
                waits = [
                    threading.Thread(target=_wait_into, args=(s, results, errors)) for s in searches
                ]
                for thread in waits:
                    thread.start()
                for thread in waits:
                    thread.join(SEARCH_SECONDS)
        except Exception as error:
            errors.append(f"client {index}: {type(error).__name__}: {error}")

    try:
        served.wait_ready()
        clients = [threading.Thread(target=one_client, args=(i,)) for i in range(16)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(SEARCH_SECONDS + 60)
        assert not errors, "\n".join(errors)
        assert len(results) == 32
        wrong = {i: r["status"] for i, r in results.items() if r["status"] != "finished"}
        assert not wrong, wrong
        assert any(r["polled"] for r in results.values())  # the watcher limit was reached
    finally:
        served.close()


def _wait_into(search, results: dict, errors: list[str]) -> None:
    """``Search.wait``, spelled out as its watch and final read, to see which waits polled."""
    try:
        kinds = [event.kind for event in search.watch(timeout=SEARCH_SECONDS)]
        results[search.id] = search.info() | {"polled": "polled" in kinds}
    except Exception as error:
        errors.append(f"search {search.id}: {type(error).__name__}: {error}")
