"""The local process-pool executor: results as in-process, workers killed mid-trial (retried),
timeouts, cancellation that stops the running trial, and a search that completes through it."""

from __future__ import annotations

import errno
import io
import os
import signal
import time
from concurrent.futures import Future
from dataclasses import replace

import pytest
import torch

from winnow.search_space.candidate import Candidate
from winnow.search_space.trial import Status, TrialSpec
from winnow.workers.local import MAX_FAILED_STARTS, LocalExecutor, _Task, worker_devices
from winnow.workers.run import run_trial

MLP = Candidate(
    architecture={"family": "mlp", "depth": 1, "width": 32, "activation": "relu", "dropout": 0.0},
    optimizer={"name": "adamw", "lr": 3e-3, "batch_size": 64},
)
QUICK = TrialSpec(MLP, "digits", epochs=1)
LONG = TrialSpec(MLP, "digits", epochs=200)  # many seconds: long enough to be interrupted


@pytest.fixture(scope="module")
def pool():
    with LocalExecutor(workers=2, max_retries=1) as executor:
        yield executor


def running_worker(executor: LocalExecutor, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [w for w in executor.workers if w.task is not None]
        if busy:
            return busy[0]
        time.sleep(0.05)
    raise AssertionError("no worker picked the trial up")


def assert_matches_an_in_process_run(pool, worker_threads: int) -> None:
    """QUICK in the pool equals QUICK here with the worker's torch threads (the same float
    sums), its kept weights included (they come back with the result: ``keep_weights``), and
    the result names this machine."""
    kept = replace(QUICK, keep_weights=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(worker_threads)
    try:
        here = run_trial(kept)
    finally:
        torch.set_num_threads(threads)
    there = pool.submit(kept).result(timeout=120)
    assert there.status == Status.OK and there.metrics["accuracy"] == here.metrics["accuracy"]
    assert there.host == os.uname().nodename and there.device == "cpu"
    assert there.weights is not None and weights_of(there).keys() == weights_of(here).keys()
    assert all(torch.equal(weights_of(there)[k], v) for k, v in weights_of(here).items())


def weights_of(result) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(result.weights), weights_only=True)


def test_results_match_an_in_process_run_and_record_the_host(pool):
    assert_matches_an_in_process_run(pool, pool.threads)


def test_a_killed_worker_is_replaced_and_its_trial_retried(pool):
    future = pool.submit(TrialSpec(MLP, "digits", epochs=30))
    worker = running_worker(pool)
    pid = worker.process.pid
    os.kill(pid, signal.SIGKILL)
    result = future.result(timeout=180)
    assert result.status == Status.OK
    replaced = pool.workers[worker.index]
    assert replaced.process.pid != pid and pid in replaced.history


def test_a_trial_that_keeps_killing_its_worker_fails_with_the_reason():
    with LocalExecutor(workers=1, max_retries=0) as executor:
        future = executor.submit(LONG)
        os.kill(running_worker(executor).process.pid, signal.SIGKILL)
        result = future.result(timeout=60)
        assert result.status == Status.FAILED and "worker died 1 times" in result.error
        assert executor.submit(QUICK).result(timeout=120).status == Status.OK


def test_a_trial_over_its_timeout_is_stopped_and_failed():
    # 5 s: the replacement worker's first trial loads its dataset, seconds on a loaded machine
    with LocalExecutor(workers=1, timeout=5.0) as executor:
        executor.submit(QUICK).result(timeout=120)  # started and warm
        start = time.monotonic()
        result = executor.submit(replace(LONG, epochs=2000)).result(timeout=60)
        assert result.status == Status.FAILED and "timed out after 5 s" in result.error
        assert time.monotonic() - start < 25
        assert executor.submit(QUICK).result(timeout=120).status == Status.OK


def test_cancelling_a_running_trial_stops_its_worker(pool):
    future = pool.submit(LONG)
    worker = running_worker(pool)
    pid = worker.process.pid
    assert future.cancel()
    deadline = time.monotonic() + 30
    while pool.workers[worker.index].process.pid == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.workers[worker.index].process.pid != pid  # the trial really stopped
    assert pool.submit(QUICK).result(timeout=120).status == Status.OK


def test_more_trials_than_workers_all_end_each_with_its_own_result(pool):
    specs = [TrialSpec(MLP, "digits", epochs=1, seed=k) for k in range(6)]
    results = [f.result(timeout=180) for f in [pool.submit(spec) for spec in specs]]
    assert all(r.status == Status.OK for r in results)
    threads = torch.get_num_threads()
    torch.set_num_threads(pool.threads)
    try:  # each result is its own trial's, not a neighbour's
        again = [run_trial(specs[k]).metrics["accuracy"] for k in (2, 5)]
    finally:
        torch.set_num_threads(threads)
    assert again == [results[2].metrics["accuracy"], results[5].metrics["accuracy"]]


def test_ctrl_c_in_the_terminal_does_not_kill_a_running_trial(pool):
    future = pool.submit(TrialSpec(MLP, "digits", epochs=20))
    worker = running_worker(pool)
    os.kill(worker.process.pid, signal.SIGINT)  # what a terminal sends the whole group
    assert future.result(timeout=180).status == Status.OK
    assert pool.workers[worker.index].process.pid == worker.process.pid  # not replaced


def test_workers_share_the_visible_gpus_round_robin():
    assert worker_devices(3, ["2", "3"]) == ["2", "3", "2"]
    assert worker_devices(None, ["5"]) == ["5"]  # one per GPU by default
    assert worker_devices(2, []) == [None, None]
    with pytest.raises(ValueError, match="at least one worker"):
        worker_devices(0, [])


def test_a_failing_dispatcher_fails_the_trials_instead_of_hanging(monkeypatch):
    with LocalExecutor(workers=1) as executor:
        future: Future = Future()
        with executor._lock:  # the dispatcher fails only once the task is queued

            def broken() -> None:
                raise RuntimeError("out of processes")

            monkeypatch.setattr(executor, "_assign", broken)
            executor._queue.append(_Task(-1, QUICK, future))
        executor._wake()
        result = future.result(timeout=30)
        assert result.status == Status.FAILED and "out of processes" in result.error
        with pytest.raises(RuntimeError, match="closed"):
            executor.submit(QUICK)


class FlakyStarts(LocalExecutor):
    """A pool whose workers die before they are ready (exit code 3) while ``failing`` is set:
    what an out-of-memory kill during a worker's imports looks like to the pool."""

    failing = True

    def _spawn(self, index, gpu, conn):
        if self.failing:
            return self._context.Process(target=os._exit, args=(3,), daemon=True)
        return super()._spawn(index, gpu, conn)


def wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_workers_that_keep_failing_to_start_back_off_and_recover():
    with FlakyStarts(workers=1) as executor:
        wait_for(lambda: not executor.healthy, timeout=60)
        worker = executor.workers[0]
        assert worker.failed_starts + 1 >= MAX_FAILED_STARTS and worker.restart_at is not None
        future = executor.submit(QUICK)  # the pool stays open: the trial waits in the queue
        time.sleep(0.5)
        assert not future.done()
        executor.failing = False  # the machine recovered: the next restart succeeds
        assert future.result(timeout=120).status == Status.OK
        assert executor.healthy and executor.workers[0].failed_starts == 0
        assert len(executor.workers[0].history) > MAX_FAILED_STARTS


def test_a_long_lived_worker_reports_each_trials_own_peak_memory():
    """A large trial then a small one on the same worker: the small one reports its own peak
    (the process's baseline plus its little model), not the large one's high-water mark."""
    wide = {"family": "mlp", "depth": 2, "width": 4096, "activation": "relu", "dropout": 0.0}
    large = Candidate(
        architecture=wide,
        optimizer={"name": "adamw", "lr": 1e-3, "batch_size": 64},
    )
    with LocalExecutor(workers=1) as executor:
        big = executor.submit(TrialSpec(large, "digits", epochs=1)).result(timeout=300)
        small = executor.submit(QUICK).result(timeout=120)
    assert big.status == small.status == Status.OK, (big.error, small.error)
    big_peak, small_peak = big.metrics["peak_memory_bytes"], small.metrics["peak_memory_bytes"]
    # the large MLP holds ~17M float parameters: weights, gradients and two AdamW moments
    assert big_peak - small_peak > 150e6, (big_peak, small_peak)
    assert 50e6 < small_peak < 2e9  # the interpreter, torch and the digits: plausible


class ForkFails(LocalExecutor):
    """A pool on a machine that cannot create processes for a while: the first ``fail``
    process starts raise EAGAIN, as ``fork`` does when the user is out of processes."""

    fail = MAX_FAILED_STARTS + 1  # past the immediate retries: backoffs, then a start

    def _spawn(self, index, gpu, conn):
        process = super()._spawn(index, gpu, conn)
        if self.fail > 0:
            self.fail -= 1

            def start():
                raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

            process.start = start
        return process


def test_a_process_that_cannot_be_created_is_retried_with_backoff():
    executor = ForkFails(workers=1)  # the first start fails here, in the constructor
    with executor:
        assert not executor.healthy  # no worker yet; the pool is open all the same
        seen_unhealthy = []
        future = executor.submit(QUICK)
        deadline = time.monotonic() + 120
        while not future.done() and time.monotonic() < deadline:
            seen_unhealthy.append(not executor.healthy)
            time.sleep(0.05)
        assert future.result(timeout=1).status == Status.OK
        assert executor.fail == 0 and any(seen_unhealthy) and executor.healthy
        assert executor.workers[0].failed_starts == 0 and len(executor.workers[0].history) == 1
