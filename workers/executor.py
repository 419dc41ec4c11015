"""Executors: where trials run. The engine submits a ``TrialSpec`` and later collects its
``TrialResult``; it never knows whether the trial ran in this process, in a local worker process
or on a Ray cluster.

``Executor`` is the interface (cf. ``concurrent.futures.Executor``, which its futures are);
``InProcessExecutor`` runs each trial at once in the calling process (tests, benchmarks, and the
oracle); ``local.LocalExecutor`` runs them on worker processes of this machine and
``ray_executor.RayExecutor`` on a Ray cluster.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from winnow.search_space.trial import EpochCallback, TrialResult, TrialSpec
from winnow.workers.run import run_trial

# a trial and its epoch callback (None: nobody listens) -> its result; ``run_trial`` is one
TrialFunction = Callable[[TrialSpec, EpochCallback | None], TrialResult]


class Executor(ABC):
    """Runs trials. ``slots`` trials may be in flight at once; ``submit`` never blocks longer
    than it takes to hand the trial over (the in-process executor is the exception: it runs it).

    ``on_epoch`` hears a training trial's epochs as they end: in the calling thread (in
    process) or in the pool's own thread (local workers); an executor that cannot relay them
    (Ray, today) never calls it."""

    slots: int = 1
    # False: ``train`` trials are answered from a table, not trained (an oracle), so a seed
    # changes nothing and a search's ``strategy.confirm`` is refused
    trains: bool = True
    device: str = "cpu"  # what trials should ask for: "cuda" when the workers hold GPUs

    @property
    def healthy(self) -> bool:
        """Whether submitted trials can run now (the server's health check reports it)."""
        return True

    @abstractmethod
    def submit(
        self, spec: TrialSpec, on_epoch: EpochCallback | None = None
    ) -> Future[TrialResult]: ...

    def close(self) -> None:  # noqa: B027 - optional: executors without workers need nothing
        """Release workers; the executor takes no new trials afterwards."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Runs each trial in this process, inside ``submit``; the future is done when it returns.

    ``run`` is the trial function (default :func:`winnow.workers.run_trial`), called with the
    spec and ``on_epoch``; a function that raises gives a future holding the exception, as a
    process pool's would."""

    def __init__(self, run: TrialFunction = run_trial) -> None:
        self.run = run

    def submit(self, spec: TrialSpec, on_epoch: EpochCallback | None = None) -> Future[TrialResult]:
        future: Future[TrialResult] = Future()
        try:
            future.set_result(self.run(spec, on_epoch))
        except Exception as error:  # the engine records it as a failed trial
            future.set_exception(error)
        return future


class QueuedExecutor(Executor):
    """What the local and Ray pools share: ``submit`` queues the trial and wakes the pool's own
    thread, which hands trials out and completes their futures; ``close`` stops taking trials,
    wakes that thread and waits for it (it fails what is left), then ``_release``s the pool."""

    def _init_queue(self, thread_name: str, target: Callable[[], None]) -> None:
        self._queue: deque[Any] = deque()
        self._lock = threading.Lock()
        self._closed = False  # no new trials (set by close, or by a failed pool thread)
        self._released = False  # close() ran
        self._thread = threading.Thread(target=target, name=thread_name, daemon=True)

    @property
    def healthy(self) -> bool:
        return not self._closed

    def submit(self, spec: TrialSpec, on_epoch: EpochCallback | None = None) -> Future[TrialResult]:
        future: Future[TrialResult] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor is closed")
            self._queue.append(self._queued(spec, future, on_epoch))
        future.add_done_callback(lambda _: self._wake())  # a cancel is acted on at once
        self._wake()
        return future

    def close(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = self._closed = True
        self._wake()
        self._thread.join(30)
        self._release()

    @abstractmethod
    def _queued(
        self, spec: TrialSpec, future: Future[TrialResult], on_epoch: EpochCallback | None
    ) -> Any:
        """The queue entry of a submitted trial."""

    @abstractmethod
    def _wake(self) -> None:
        """Wake the pool's thread."""

    @abstractmethod
    def _release(self) -> None:
        """Free the workers once the pool's thread has ended."""


def settle(future: Future[TrialResult], result: TrialResult) -> None:
    """Give a pool's future its result, unless it was cancelled (a cancelled future stays so)."""
    with contextlib.suppress(InvalidStateError):  # cancelled by its owner meanwhile
        future.set_result(result)
