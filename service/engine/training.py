"""Training rungs: the cascade's last stage (``cascade.Trainer``) and the promotions.

A rung's row is written ``running`` before its work starts (so that a crash leaves it to be
re-queued), then the training goes to the executor; when its result comes back it is checked
(objectives present, constraints met), stored, and goes up the ladder: successive-halving rungs
(``SuccessiveHalving``), with the first rung's results labelling the proxy screen and the top
rung's cached (for reuse by hash) and completed."""

from __future__ import annotations

import time
from concurrent.futures import Future

from optuna.trial import TrialState

from winnow.search_space.trial import Status, TrialResult, TrialSpec
from winnow.service.engine.cascade import Passage
from winnow.service.engine.evidence import (
    missing,
    result_key,
    result_of,
    train_fidelity,
    train_task,
    violations,
)
from winnow.service.engine.outcomes import Outcomes
from winnow.service.engine.readout import best_values, objective_values
from winnow.service.engine.screening import ProxyScreen
from winnow.service.engine.state import Tracked
from winnow.service.search_spec import SearchSpec
from winnow.service.store import SqlEquivalenceCache, Store
from winnow.workers.executor import Executor


class Training:
    """Writes through the outcomes' journal and state, and settles candidates through them."""

    def __init__(
        self,
        spec: SearchSpec,
        search_id: str,
        outcomes: Outcomes,
        screen: ProxyScreen | None,
        cache: SqlEquivalenceCache,
        executor: Executor,
        device: str,
    ) -> None:
        self.spec, self.outcomes, self.screen, self.cache = spec, outcomes, screen, cache
        self.state, self.journal, self.ladder = outcomes.state, outcomes.journal, outcomes.ladder
        self.executor, self.device = executor, device
        self.task = train_task(spec, search_id)
        self.in_flight: dict[Future[TrialResult], tuple[Tracked, int, int]] = {}

    @property
    def store(self) -> Store:
        return self.journal.store

    def start(self, tracked: Tracked, passage: Passage) -> None:
        """The train stage: the first rung, its launch timed as evaluation (an in-process
        executor trains inside ``submit``)."""
        row_id = self.queue(tracked, 0)
        passage.evaluate(lambda: self.launch(tracked, 0, row_id))

    def submit(self, tracked: Tracked, rung: int, row_id: int | None = None) -> None:
        """Queue (or re-queue) one rung's training and send it to the executor."""
        self.launch(tracked, rung, self.queue(tracked, rung, row_id))

    def queue(self, tracked: Tracked, rung: int, row_id: int | None = None) -> int:
        """Write the rung's row as ``running``; returns its id."""
        if row_id is None:
            return self.journal.write(
                tracked, "train", self.ladder.rungs[rung], rung, Status.RUNNING
            )
        self.journal.restart(row_id)
        return row_id

    def launch(self, tracked: Tracked, rung: int, row_id: int) -> None:
        spec = TrialSpec(
            tracked.candidate,
            self.spec.task.dataset,
            stage="train",
            epochs=self.ladder.rungs[rung],
            seed=self.spec.seed,
            device=self.device,
        )
        counts = self.state.counts
        counts["trained"] += 1
        counts["candidates"] += 1 if rung == 0 else 0  # a promotion is the same candidate
        counts["epochs"] += spec.epochs
        self.in_flight[self.executor.submit(spec)] = (tracked, rung, row_id)

    def finish(self, future: Future[TrialResult]) -> None:
        """Record a training that ended (or was cancelled)."""
        tracked, rung, row_id = self.in_flight.pop(future)
        start = time.perf_counter()
        result = result_of(future)
        with self.store.batch():
            self.record(tracked, rung, row_id, result)
        self.state.history.append(self._history_entry())
        tracked.overhead += time.perf_counter() - start

    def record(self, tracked: Tracked, rung: int, row_id: int, result: TrialResult) -> None:
        self.state.device_seconds += result.seconds
        status, error = result.status, result.error
        objectives = self.spec.objectives
        violated = violations(self.spec, result.metrics) if result.status == Status.OK else []
        if result.status == Status.OK and missing(objectives, result.metrics):
            lacking = missing(objectives, result.metrics)
            status, error = Status.FAILED, f"missing objective(s) in metrics: {lacking}"
        elif violated:
            status, error = Status.PRUNED, "; ".join(violated)
        self.journal.update(row_id, status, result, error)
        if status in (Status.FAILED, Status.PRUNED):
            self.state.counts[status] += 1
            self.outcomes.tell(
                tracked, TrialState.FAIL if status == Status.FAILED else TrialState.PRUNED
            )
        else:
            self.rung_done(tracked, rung, result.metrics)

    def rung_done(self, tracked: Tracked, rung: int, metrics: dict[str, float]) -> None:
        if self.screen is not None and rung == 0:
            self.screen.observe(tracked.number, metrics)
        if rung == self.ladder.top:
            fidelity = train_fidelity(self.ladder.rungs[rung])
            self.cache.put(
                self.task, fidelity, result_key(tracked), TrialResult(Status.OK, metrics)
            )
            self.outcomes.complete(tracked, metrics)
            return
        self.ladder.record(rung, tracked.number, objective_values(self.spec.objectives, metrics))
        if tracked.number not in self.ladder.promotable(rung):
            self.outcomes.tell(tracked, TrialState.PRUNED, intermediate=(rung, metrics))

    def _history_entry(self) -> dict[str, float]:
        """The report's history: training runs and candidates so far, the first objective's
        best and the hypervolume of the completed trials."""
        primary = self.spec.objectives[0]
        firsts = [[values[0]] for values in self.state.completed.values()]
        best = best_values([primary], firsts).get(primary.name, float("nan"))
        counts = self.state.counts
        entry = {"trained": counts["trained"], "candidates": counts["candidates"], "best": best}
        return {**entry, "hypervolume": self.state.hypervolume, "objective": primary.name}
