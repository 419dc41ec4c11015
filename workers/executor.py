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
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError

from winnow.search_space.trial import TrialResult, TrialSpec
from winnow.workers.run import run_trial

TrialFunction = Callable[[TrialSpec], TrialResult]


class Executor(ABC):
    """Runs trials. ``slots`` trials may be in flight at once; ``submit`` never blocks longer
    than it takes to hand the trial over (the in-process executor is the exception: it runs it)."""

    slots: int = 1
    device: str = "cpu"  # what trials should ask for: "cuda" when the workers hold GPUs

    @abstractmethod
    def submit(self, spec: TrialSpec) -> Future[TrialResult]: ...

    def close(self) -> None:  # noqa: B027 - optional: executors without workers need nothing
        """Release workers; the executor takes no new trials afterwards."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Runs each trial in this process, inside ``submit``; the future is done when it returns.

    ``run`` is the trial function (default :func:`winnow.workers.run_trial`); a function that
    raises gives a future holding the exception, as a process pool's would."""

    def __init__(self, run: TrialFunction = run_trial) -> None:
        self.run = run

    def submit(self, spec: TrialSpec) -> Future[TrialResult]:
        future: Future[TrialResult] = Future()
        try:
            future.set_result(self.run(spec))
        except Exception as error:  # the engine records it as a failed trial
            future.set_exception(error)
        return future


def settle(future: Future[TrialResult], result: TrialResult) -> None:
    """Give a pool's future its result, unless it was cancelled (a cancelled future stays so)."""
    with contextlib.suppress(InvalidStateError):  # cancelled by its owner meanwhile
        future.set_result(result)
