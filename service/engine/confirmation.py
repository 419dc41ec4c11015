"""The engine's last phase (``strategy.confirm``): after the budget, the front's recipes are
trained again with further seeds, each run a row of its own (stage ``confirm:<seed>``,
``records.confirm_stage``, at the top rung's epochs and rung), dispatched to the executor as the
rungs' trainings are, ``slots`` at a time. What to run and what the runs say are the pure
functions of ``confirmed``; the front and ``export`` read the figures from the rows
(``readout.pareto``).

Each row is written ``running`` before its run starts, so a resumed search (``Engine.resume``)
re-runs only the pairs of trial and seed without a finished row: the ``running`` ones a dead
process left (re-queued, their rows reused) and those never started. A cancel stops the
running ones (stored failed); a pause lets them end and stores them."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from winnow.records import Status, TrialRecord, confirm_stage
from winnow.search_space.specfile import SpecError
from winnow.search_space.trial import TrialResult, TrialSpec
from winnow.service.engine.confirmed import (
    confirm_runs,
    confirm_seeds,
    confirmed_figures,
    to_confirm,
)
from winnow.service.engine.evidence import missing, result_of
from winnow.service.engine.journal import Journal
from winnow.service.engine.state import Tracked
from winnow.service.engine.training import EpochRelay
from winnow.service.search_spec import SearchSpec
from winnow.workers.executor import Executor


def check_executor(spec: SearchSpec, executor: Executor) -> None:
    """Refuse confirmation (``SpecError``) where training is looked up, not run
    (``Executor.trains`` false: an oracle): every seed would get the table's one answer."""
    if spec.strategy.confirm is not None and not executor.trains:
        message = (
            f"training is answered from a table ({type(executor).__name__}), which gives one "
            "answer per network whatever the seed; leave strategy.confirm out"
        )
        raise SpecError.of("search spec", [("strategy.confirm", message)])


class Confirmation:
    """The confirmation runs of one search; ``rows``: its stored rows (a resumed search's)."""

    def __init__(
        self,
        spec: SearchSpec,
        journal: Journal,
        executor: Executor,
        relay: EpochRelay,
        device: str,
        rows: list[TrialRecord] | None = None,
    ) -> None:
        self.spec, self.journal, self.executor, self.relay = spec, journal, executor, relay
        self.device = device
        self.seeds = confirm_seeds(spec)
        self.epochs = spec.strategy.rungs[-1]
        self.rung = len(spec.strategy.rungs) - 1
        self.finished: set[tuple[int, int]] = set()
        self.requeued: dict[tuple[int, int], int] = {}  # (trial, seed) -> row id
        for number, by_seed in confirm_runs(rows or []).items():
            for seed, row in by_seed.items():
                if row.status in (Status.QUEUED, Status.RUNNING):
                    self.requeued[(number, seed)] = row.id
                else:
                    self.finished.add((number, seed))
        self.in_flight: dict[Future[TrialResult], tuple[Tracked, int, int]] = {}
        self.counts: dict[str, int] | None = None  # the search's counters (``failed``)
        self.planned: set[tuple[int, int]] = set()  # the front's (trial, seed) pairs, once begun

    @property
    def enabled(self) -> bool:
        return self.spec.strategy.confirm is not None

    def progress(self) -> tuple[int, int]:
        """``(runs, done)``: as ``confirmed.confirm_counts`` reads them from the rows."""
        return len(self.planned), len(self.planned & self.finished)

    def plan(
        self, front: dict[int, list[float]], tracked: dict[int, Tracked]
    ) -> list[tuple[int, int]]:
        """Every (trial, seed) pair of the front's confirmation (``confirmed.to_confirm``)."""
        keys = [tracked[number].candidate.key for number in front]
        numbers = to_confirm(self.spec, list(front), list(front.values()), keys)
        return [(number, seed) for number in numbers for seed in self.seeds]

    def run(
        self,
        tracked: dict[int, Tracked],
        front: dict[int, list[float]],
        slots: int,
        stop: Callable[[], bool],
        kill: Callable[[], bool],
        poll: float,
    ) -> None:
        """Run the front's missing confirmation runs, ``slots`` at a time, until done or
        ``stop()`` (nothing more starts); ``kill()``: cancel the running ones too."""
        plan = self.plan(front, tracked)
        if not plan:  # nothing trained: nothing to confirm
            return
        self.planned = set(plan)
        pending = [pair for pair in plan if pair not in self.finished]
        trials = sorted({number for number, _ in plan})
        payload = {"trials": trials, "seeds": self.seeds, "runs": len(plan)}
        self.journal.event("confirm_started", payload | {"done": len(plan) - len(pending)})
        while True:
            while pending and len(self.in_flight) < slots and not stop():
                number, seed = pending.pop(0)
                self.submit(tracked[number], seed)
            if not self.in_flight:
                break
            wait(list(self.in_flight), poll, FIRST_COMPLETED)
            self.relay.flush()
            if kill():
                for future in self.in_flight:
                    future.cancel()
            for future in [f for f in self.in_flight if f.done()]:
                self.finish(future)
        if not pending:
            confirmed = confirmed_figures(
                self.spec, self.journal.store.trials(self.journal.search_id)
            )
            self.journal.event("confirm_finished", {"confirmed": _jsonable(confirmed)})

    def submit(self, tracked: Tracked, seed: int) -> None:
        """Write the run's row (or reuse a re-queued one) and send it to the executor."""
        row_id = self.requeued.pop((tracked.number, seed), None)
        if row_id is None:
            row_id = self.journal.write(
                tracked, confirm_stage(seed), self.epochs, self.rung, Status.RUNNING
            )
        else:
            self.journal.restart(row_id)
        spec = TrialSpec(
            tracked.candidate,
            self.spec.task.dataset,
            stage="train",
            epochs=self.epochs,
            seed=seed,
            device=self.device,
            trainer=self.spec.task.trainer,
        )
        payload = {"trial_id": tracked.number, "rung": self.rung, "epochs": self.epochs}
        payload |= {"epochs_to_run": self.epochs, "stage": confirm_stage(seed), "seed": seed}
        self.journal.event("trial_started", payload | {"candidate": tracked.candidate.describe()})
        future = self.executor.submit(spec, self.relay.reporter(tracked.number, self.rung))
        self.in_flight[future] = (tracked, seed, row_id)

    def finish(self, future: Future[TrialResult]) -> None:
        """Store a run that ended: ``ok`` with every objective, else ``failed``."""
        self.relay.flush()
        tracked, seed, row_id = self.in_flight.pop(future)
        result = result_of(future)
        status, error = result.status, result.error
        lacking = missing(self.spec.objectives, result.metrics)
        if status == Status.OK and lacking:
            status, error = Status.FAILED, f"missing objective(s) in metrics: {lacking}"
        elif status not in (Status.OK, Status.FAILED):
            status = Status.FAILED
        with self.journal.store.batch():
            stage = confirm_stage(seed)
            self.journal.update(row_id, status, result, error, tracked, self.rung, stage=stage)
        self.finished.add((tracked.number, seed))
        if status == Status.FAILED and self.counts is not None:
            self.counts["failed"] += 1  # as ``readout.tally`` counts failed rows of any stage


def _jsonable(confirmed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The figures with string keys (an event's payload is JSON)."""
    return {str(number): result for number, result in confirmed.items()}
