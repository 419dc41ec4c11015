"""``LocalExecutor``: trials on N long-lived worker processes of this machine.

With GPUs, one worker per GPU, pinned with ``CUDA_VISIBLE_DEVICES``; without, N CPU workers with
the cores split between their torch threads. Workers are started with ``spawn`` (no forked CUDA
or thread state) and keep their datasets loaded between trials.

One dispatcher thread hands queued trials to idle workers and watches them:

- a worker that dies mid-trial (segfault, out-of-memory kill, ``kill -9``) is replaced and its
  trial retried on a worker, up to ``max_retries`` times, then failed with the reason;
- a trial running longer than ``timeout`` seconds (counted from when a started worker takes it)
  has its worker killed and replaced, and is failed with the reason (a trial that hangs once
  would hang again);
- ``future.cancel()`` on a queued trial drops it; on a running one it kills the worker (the
  trial really stops) and replaces it.

Every submitted trial's future ends: with the trial's result, a failed result, or cancelled.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from winnow.search_space.trial import Status, TrialResult, TrialSpec
from winnow.workers.executor import Executor, settle
from winnow.workers.worker_main import READY, worker_main

log = logging.getLogger("winnow.workers")
POLL_SECONDS = 0.5  # longest sleep of the dispatcher when nothing wakes it


@dataclass
class _Task:
    id: int
    spec: TrialSpec
    future: Future[TrialResult]
    attempts: int = 0
    deadline: float | None = None


@dataclass
class _Worker:
    index: int
    gpu: int | None
    process: multiprocessing.process.BaseProcess
    conn: Connection
    task: _Task | None = None
    ready: bool = False  # imports done (worker_main.READY received)
    trials: int = 0
    history: list[int] = field(default_factory=list)  # pids, for tests and logs


def default_workers() -> tuple[int, list[int | None]]:
    """One worker per GPU, else one per two CPU cores (at least one, at most 8): small trials
    do best with one thread each, convolutional ones with two."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus:
        return gpus, list(range(gpus))
    count = max(1, min(8, (os.cpu_count() or 1) // 2 or 1))
    return count, [None] * count


class LocalExecutor(Executor):
    def __init__(
        self,
        workers: int | None = None,
        timeout: float | None = None,
        max_retries: int = 2,
        gpus: list[int] | None = None,
    ) -> None:
        if workers is None:
            workers, devices = default_workers()
        else:
            devices = list(gpus) if gpus else [None] * workers
            if len(devices) != workers:
                raise ValueError(f"{workers} workers need {workers} GPUs, got {devices}")
        self.slots = workers
        self.device = "cuda" if devices[0] is not None else "cpu"
        self.timeout, self.max_retries = timeout, max_retries
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self._context = multiprocessing.get_context("spawn")
        self._ids = itertools.count()
        self._queue: deque[_Task] = deque()
        self._lock = threading.Lock()
        self._wake_reader, self._wake_writer = self._context.Pipe(duplex=False)
        self._closed = False
        self.workers = [self._start(i, gpu) for i, gpu in enumerate(devices)]
        self._thread = threading.Thread(target=self._dispatch, name="local-executor", daemon=True)
        self._thread.start()

    # --- the Executor interface ---------------------------------------------------------------

    def submit(self, spec: TrialSpec) -> Future[TrialResult]:
        future: Future[TrialResult] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor is closed")
            self._queue.append(_Task(next(self._ids), spec, future))
        future.add_done_callback(lambda _: self._wake())  # a cancel wakes the dispatcher
        self._wake()
        return future

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        self._thread.join(30)
        for worker in self.workers:
            self._stop(worker)

    # --- workers ------------------------------------------------------------------------------

    def _start(self, index: int, gpu: int | None) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=worker_main,
            args=(child, gpu, self.threads),
            name=f"winnow-worker-{index}",
            daemon=True,
        )
        process.start()
        child.close()
        worker = _Worker(index, gpu, process, parent)
        worker.history.append(process.pid)
        return worker

    def _replace(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(10)
        worker.conn.close()
        fresh = self._start(worker.index, worker.gpu)
        fresh.history = worker.history + fresh.history
        self.workers[worker.index] = fresh

    def _stop(self, worker: _Worker) -> None:
        with contextlib.suppress(OSError):  # a dead worker's pipe is closed
            worker.conn.send(None)
        worker.process.join(5)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(5)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # closed: the dispatcher is gone
            self._wake_writer.send_bytes(b"!")

    # --- the dispatcher -----------------------------------------------------------------------

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    break
            self._assign()
            waiting = [self._wake_reader]
            for worker in self.workers:
                waiting.append(worker.process.sentinel)
                if worker.task is not None or not worker.ready:
                    waiting.append(worker.conn)
            ready = set(wait(waiting, timeout=self._sleep()))
            if self._wake_reader in ready:
                while self._wake_reader.poll():
                    self._wake_reader.recv_bytes()
            for worker in list(self.workers):
                self._check(worker, ready)
        self._fail_all("the executor closed before the trial ran")

    def _assign(self) -> None:
        for worker in self.workers:
            if worker.task is not None or not worker.ready:
                continue
            task = self._next_task()
            if task is None:
                return
            task.attempts += 1
            task.deadline = None if self.timeout is None else time.monotonic() + self.timeout
            worker.task = task
            worker.conn.send((task.id, task.spec))

    def _next_task(self) -> _Task | None:
        with self._lock:
            while self._queue:
                task = self._queue.popleft()
                if not task.future.cancelled():
                    return task
        return None

    def _sleep(self) -> float:
        deadlines = [w.task.deadline for w in self.workers if w.task and w.task.deadline]
        if not deadlines:
            return POLL_SECONDS
        return max(0.0, min(min(deadlines) - time.monotonic(), POLL_SECONDS))

    def _check(self, worker: _Worker, ready: set) -> None:
        task = worker.task
        if worker.conn in ready and (task is not None or not worker.ready):
            try:
                task_id, result = worker.conn.recv()
            except (EOFError, OSError):
                task_id, result = None, None  # died while answering: handled below
            if (task_id, result) == READY:
                worker.ready = True
                return
            if task is not None and task_id == task.id:
                worker.task, worker.trials = None, worker.trials + 1
                settle(task.future, result)
                return
        if worker.process.sentinel in ready or not worker.process.is_alive():
            self._worker_died(worker)
        elif task is not None and task.future.cancelled():
            log.info("worker %d: trial %d cancelled; stopping it", worker.index, task.id)
            worker.task = None
            self._replace(worker)
        elif task is not None and task.deadline and time.monotonic() > task.deadline:
            log.warning("worker %d: trial %d timed out; replacing it", worker.index, task.id)
            worker.task = None
            self._replace(worker)
            message = f"timed out after {self.timeout:g} s (the worker was stopped)"
            settle(task.future, TrialResult(Status.FAILED, error=message, device=self.device))

    def _worker_died(self, worker: _Worker) -> None:
        code = worker.process.exitcode
        task, worker.task = worker.task, None
        pid = worker.process.pid
        log.warning("worker %d (pid %s) died with exit code %s", worker.index, pid, code)
        self._replace(worker)
        if task is None or task.future.cancelled():
            return
        if task.attempts <= self.max_retries:
            with self._lock:
                self._queue.appendleft(task)  # retried first, on whichever worker is free
            return
        message = f"its worker died {task.attempts} times (last exit code {code})"
        settle(task.future, TrialResult(Status.FAILED, error=message, device=self.device))

    def _fail_all(self, message: str) -> None:
        with self._lock:
            tasks = list(self._queue) + [w.task for w in self.workers if w.task]
            self._queue.clear()
        for task in tasks:
            settle(task.future, TrialResult(Status.FAILED, error=message))
