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
- a worker that dies ``MAX_FAILED_STARTS`` times in a row before it is ready (an out-of-memory
  kill while it imports, a broken environment) is restarted with exponential backoff (1 s
  doubling to 30 s) for as long as it takes; trials queue meanwhile, and ``healthy`` is false
  while no worker can start (the server reports NOT_SERVING); a worker whose process cannot even
  be created (``fork``/``spawn`` failing with EAGAIN or ENOMEM, no file descriptors left for its
  pipe) counts as one that died before it was ready, so it takes the same path;
- ``future.cancel()`` on a queued trial drops it; on a running one it kills the worker (the
  trial really stops) and replaces it;
- a trial submitted with ``on_epoch`` has its worker send each epoch's report up the same pipe
  (``worker_main.EpochDone``); the dispatcher calls ``on_epoch`` with it, in its own thread.

Every submitted trial's future ends: with the trial's result, a failed result, or cancelled.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from winnow.search_space.trial import EpochCallback, Status, TrialResult, TrialSpec
from winnow.workers.executor import QueuedExecutor, settle
from winnow.workers.worker_main import READY, EpochDone, worker_main

log = logging.getLogger("winnow.workers")
POLL_SECONDS = 0.5  # longest sleep of the dispatcher when nothing wakes it
MAX_FAILED_STARTS = 3  # deaths before READY in a row after which restarts back off
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0  # seconds between restarts of such a worker, doubling


@dataclass
class _Task:
    id: int
    spec: TrialSpec
    future: Future[TrialResult]
    on_epoch: EpochCallback | None = None
    attempts: int = 0
    deadline: float | None = None


@dataclass
class _Worker:
    index: int
    gpu: str | None
    process: multiprocessing.process.BaseProcess | None  # None or unstarted: not created
    conn: Connection | None  # None if not even its pipe could be made
    task: _Task | None = None
    ready: bool = False  # imports done (worker_main.READY received)
    trials: int = 0
    failed_starts: int = 0  # deaths in a row before READY: a worker that cannot start at all
    restart_at: float | None = None  # dead after failed starts: restarted then (monotonic)
    history: list[int] = field(default_factory=list)  # pids, for tests and logs


def visible_gpus() -> list[str]:
    """This machine's GPUs as ``CUDA_VISIBLE_DEVICES`` names them for this process (so that a
    server started with ``CUDA_VISIBLE_DEVICES=2,3`` pins its workers to 2 and 3)."""
    import torch

    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [v.strip() for v in visible.split(",")] if visible else [str(i) for i in range(count)]
    return names[:count]


def worker_devices(workers: int | None, gpus: list[str] | None = None) -> list[str | None]:
    """The GPU each worker is pinned to (``None``: CPU). By default one worker per GPU, else one
    per two CPU cores (at most 8: small trials do best with one thread each, convolutional ones
    with two); more workers than GPUs share them round-robin."""
    gpus = visible_gpus() if gpus is None else [str(g) for g in gpus]
    if workers is None:
        workers = len(gpus) or max(1, min(8, (os.cpu_count() or 1) // 2))
    if workers < 1:
        raise ValueError(f"a local executor needs at least one worker, got {workers}")
    return [gpus[i % len(gpus)] if gpus else None for i in range(workers)]


class LocalExecutor(QueuedExecutor):
    def __init__(
        self,
        workers: int | None = None,
        timeout: float | None = None,
        max_retries: int = 2,
        gpus: list[str] | None = None,
    ) -> None:
        devices = worker_devices(workers, gpus)
        self.slots = len(devices)
        self.device = "cuda" if devices[0] is not None else "cpu"
        self.timeout, self.max_retries = timeout, max_retries
        self.threads = max(1, (os.cpu_count() or 1) // self.slots)
        self._context = multiprocessing.get_context("spawn")
        self._ids = itertools.count()
        self._wake_reader, self._wake_writer = self._context.Pipe(duplex=False)
        self._wake_pending = False
        self._init_queue("local-executor", self._dispatch)
        self.workers = [self._start(i, gpu) for i, gpu in enumerate(devices)]
        self._thread.start()

    # --- QueuedExecutor -----------------------------------------------------------------------

    def _queued(
        self, spec: TrialSpec, future: Future[TrialResult], on_epoch: EpochCallback | None
    ) -> _Task:
        return _Task(next(self._ids), spec, future, on_epoch)

    def _release(self) -> None:
        for worker in self.workers:
            self._stop(worker)
        self._wake_reader.close()
        self._wake_writer.close()

    # --- workers ------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Open, and some worker is not stuck in failed starts: trials can run (or will soon)."""
        return not self._closed and any(w.restart_at is None for w in self.workers)

    def _start(
        self, index: int, gpu: str | None, failed_starts: int = 0, history: list[int] | None = None
    ) -> _Worker:
        """Worker ``index``, started; or, if the machine cannot create its process now, a
        worker record that waits for a restart as one that died before it was ready does."""
        worker = _Worker(index, gpu, None, None, failed_starts=failed_starts)
        worker.history = list(history or [])
        child = None
        try:
            worker.conn, child = self._context.Pipe()
            worker.process = self._spawn(index, gpu, child)
            worker.process.start()
        except (OSError, MemoryError) as error:  # EAGAIN, ENOMEM, EMFILE: the machine is full
            self._not_created(worker, error)
        else:
            worker.history.append(worker.process.pid)
        finally:
            if child is not None:
                child.close()
        return worker

    def _not_created(self, worker: _Worker, error: BaseException) -> None:
        """Treat a process the machine could not create as one that died before READY: retry
        at once, and after ``MAX_FAILED_STARTS`` in a row back off (a fork that failed for
        want of memory or processes would fail again straight away)."""
        log.warning("worker %d: could not create its process: %r", worker.index, error)
        if worker.conn is not None:
            worker.conn.close()
        if worker.failed_starts + 1 >= MAX_FAILED_STARTS:
            self._back_off(worker, None)
        else:
            worker.restart_at = time.monotonic()  # the dispatcher's next pass starts it again

    def _spawn(
        self, index: int, gpu: str | None, conn: Connection
    ) -> multiprocessing.process.BaseProcess:
        """The (not yet started) process of worker ``index``."""
        return self._context.Process(
            target=worker_main,
            args=(conn, gpu, self.threads),
            name=f"winnow-worker-{index}",
            daemon=True,
        )

    def _replace(self, worker: _Worker) -> None:
        if _started(worker):
            if worker.process.is_alive():
                worker.process.kill()
            worker.process.join(10)
        if worker.conn is not None:
            worker.conn.close()
        failed_starts = 0 if worker.ready else worker.failed_starts + 1
        self.workers[worker.index] = self._start(
            worker.index, worker.gpu, failed_starts, worker.history
        )

    def _stop(self, worker: _Worker) -> None:
        if worker.conn is not None:
            with contextlib.suppress(OSError):  # a dead worker's pipe is closed
                worker.conn.send(None)
        if _started(worker):
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(5)
        if worker.conn is not None:
            worker.conn.close()

    def _wake(self) -> None:
        """Wake the dispatcher. At most one byte waits in the pipe: a full pipe would block
        the dispatcher itself, which runs the futures' callbacks that call this."""
        if self._wake_pending:
            return
        self._wake_pending = True
        with contextlib.suppress(OSError):  # closed: the dispatcher is gone
            self._wake_writer.send_bytes(b"!")

    # --- the dispatcher -----------------------------------------------------------------------

    def _dispatch(self) -> None:
        """The dispatcher thread. Whatever happens to it, every future still open ends."""
        reason = "the executor closed before the trial ended"
        try:
            while not self._closed:
                self._dispatch_once()
        except Exception as error:  # a bug or a machine out of processes: fail, don't hang
            log.exception("the local executor's dispatcher failed")
            reason = f"the local executor failed: {error}"
            with self._lock:
                self._closed = True
        self._fail_all(reason)

    def _dispatch_once(self) -> None:
        self._restart_due()
        self._assign()
        waiting = [self._wake_reader]
        for worker in self.workers:
            if worker.restart_at is not None:
                continue  # dead, waiting out its backoff: its sentinel would always be ready
            waiting.append(worker.process.sentinel)
            if worker.task is not None or not worker.ready:
                waiting.append(worker.conn)
        ready = set(wait(waiting, timeout=self._sleep()))
        if self._wake_reader in ready:
            self._wake_pending = False  # before draining: a wake after this sends a new byte
            while self._wake_reader.poll():
                self._wake_reader.recv_bytes()
        for worker in list(self.workers):
            if worker.restart_at is None:
                self._check(worker, ready)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for worker in list(self.workers):
            if worker.restart_at is not None and now >= worker.restart_at:
                log.info("worker %d: starting it again", worker.index)
                self._replace(worker)

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
            with contextlib.suppress(OSError):  # died just now: its sentinel says so next
                worker.conn.send((task.id, task.spec, task.on_epoch is not None))

    def _next_task(self) -> _Task | None:
        with self._lock:
            while self._queue:
                task = self._queue.popleft()
                if not task.future.cancelled():
                    return task
        return None

    def _sleep(self) -> float:
        deadlines = [w.task.deadline for w in self.workers if w.task and w.task.deadline]
        deadlines += [w.restart_at for w in self.workers if w.restart_at is not None]
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
                worker.ready, worker.failed_starts = True, 0
                return
            if isinstance(result, EpochDone):
                if task is not None and task_id == task.id:
                    _report_epoch(task, result)
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
        if not worker.ready and worker.failed_starts + 1 >= MAX_FAILED_STARTS:
            self._back_off(worker, code)  # it had no trial: a worker gets one once ready
            return
        self._replace(worker)
        if task is None or task.future.cancelled():
            return
        if task.attempts <= self.max_retries:
            with self._lock:
                self._queue.appendleft(task)  # retried first, on whichever worker is free
            return
        message = f"its worker died {task.attempts} times (last exit code {code})"
        settle(task.future, TrialResult(Status.FAILED, error=message, device=self.device))

    def _back_off(self, worker: _Worker, code: int | None) -> None:
        """Restart a worker that keeps dying before it is ready later, not at once: waiting
        gives the machine time to recover (memory freed, a disk emptied), and the pool stays
        open, so searches keep their queued trials instead of failing them all."""
        streak = worker.failed_starts + 1 - MAX_FAILED_STARTS
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2**streak)
        log.error(
            "worker %d died %d times in a row before it was ready (last exit code %s; its log "
            "above says why); starting it again in %g s",
            worker.index,
            worker.failed_starts + 1,
            code,
            delay,
        )
        worker.restart_at = time.monotonic() + delay

    def _fail_all(self, message: str) -> None:
        with self._lock:
            tasks = list(self._queue) + [w.task for w in self.workers if w.task]
            self._queue.clear()
        for task in tasks:
            settle(task.future, TrialResult(Status.FAILED, error=message))


def _started(worker: _Worker) -> bool:
    """Whether the worker's process was created (one never started has no pid, and joining
    it would raise)."""
    return worker.process is not None and worker.process.pid is not None


def _report_epoch(task: _Task, done: EpochDone) -> None:
    """Hand an epoch's report to the trial's listener; a listener that fails is logged, and
    neither the trial nor the dispatcher suffers for it."""
    if task.on_epoch is None or task.future.done():
        return
    try:
        task.on_epoch(*done)
    except Exception:
        log.exception("the epoch listener of trial %d failed", task.id)
