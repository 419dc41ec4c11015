"""Training rungs: the cascade's last stage (``cascade.Trainer``) and the promotions.

A rung's row is written ``running`` before its work starts (so that a crash leaves it to be
re-queued), then the training goes to the executor; when its result comes back it is checked
(objectives present, constraints met), stored, and goes up the ladder: successive-halving rungs
(``SuccessiveHalving``), with the first rung's results labelling the proxy screen and the top
rung's cached (for reuse by hash) and completed; a top-rung run returns its trained weights,
kept as an artifact of its row (``weights``). With ``strategy.continue_rungs`` a promotion
trains on from the candidate's checkpoint (``rung_checkpoints``); each row's metrics carry the
epochs its run trained (``epochs_run``), which the epoch count and budget use.

Each run's epochs come back while it trains (``Executor.submit(spec, on_epoch)``) and become
``epoch_finished`` events through :class:`EpochRelay`."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Any

from optuna.trial import TrialState

from winnow.records import RUN_METRICS
from winnow.search_space.trial import EpochCallback, Status, TrialResult, TrialSpec
from winnow.service.engine.cascade import Passage
from winnow.service.engine.evidence import (
    result_key,
    result_of,
    train_fidelity,
    train_task,
    trained_status,
)
from winnow.service.engine.journal import Journal
from winnow.service.engine.outcomes import Outcomes
from winnow.service.engine.readout import best_values, objective_values
from winnow.service.engine.rung_checkpoints import RungCheckpoints
from winnow.service.engine.screening import ProxyScreen
from winnow.service.engine.state import Tracked
from winnow.service.search_spec import SearchSpec
from winnow.service.store import SqlEquivalenceCache, Store
from winnow.workers.executor import Executor


def train_spec(
    spec: SearchSpec, tracked: Tracked, epochs: int, device: str, **extra: Any
) -> TrialSpec:
    """The ``train`` trial of one candidate's run of ``epochs`` epochs (``extra``: further
    ``TrialSpec`` fields, such as another ``seed`` than the spec's): a rung's and a
    confirmation's."""
    fields: dict[str, Any] = {"seed": spec.seed, "trainer": spec.task.trainer} | extra
    fields.setdefault("epoch_accuracy", spec.task.eval_every_epoch)
    # trainer None: winnow's own loop
    return TrialSpec(
        tracked.candidate, spec.task.dataset, stage="train", epochs=epochs, device=device, **fields
    )


class EpochRelay:
    """Epoch reports as ``epoch_finished`` events, written by the engine's thread alone (the
    store batches per thread; an ``on_event`` listener such as the CLI's bar is not
    thread-safe). A report made in the thread that launched the run (an in-process executor
    trains inside ``submit``) is written at once; one from another thread (a local pool's
    dispatcher) waits in a queue for :meth:`flush`, which the engine's loop calls every turn
    (at most ``engine.CANCEL_POLL_SECONDS`` apart) and before it records finished runs, so a
    run's epochs always come before its ``trial`` event."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.waiting: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def reporter(self, trial_id: int, rung: int, stage: str = "train") -> EpochCallback:
        """The ``on_epoch`` of one training run (``stage``: its row's, ``confirm:<seed>`` for a
        confirmation run), made in the engine's thread."""
        owner = threading.get_ident()

        def report(epoch: int, epochs: int, loss: float, seconds: float) -> None:
            payload = {"trial_id": trial_id, "rung": rung, "stage": stage, "epoch": epoch}
            payload["epochs"] = epochs
            payload |= {"loss": float(loss), "seconds": float(seconds)}
            if threading.get_ident() == owner:
                self.journal.epoch(payload)
            else:
                self.waiting.put(payload)

        return report

    def flush(self) -> None:
        """Write the reports that other threads made."""
        while True:
            try:
                payload = self.waiting.get_nowait()
            except queue.Empty:
                return
            self.journal.epoch(payload)


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
        # future -> (candidate, rung, row id, epochs counted for it at launch)
        self.in_flight: dict[Future[TrialResult], tuple[Tracked, int, int, int]] = {}
        self.epochs = EpochRelay(self.journal)
        self.checkpoints = RungCheckpoints(spec, self.store, search_id)

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
        spec = train_spec(
            self.spec,
            tracked,
            self.ladder.rungs[rung],
            self.device,
            # the top rung's weights are the ones a user exports (the lower rungs' are not)
            keep_weights=rung == self.ladder.top and self.outcomes.weights.enabled,
            # continued rungs: one training under the top rung's schedule, from the last
            # rung's checkpoint (``rung_checkpoints``)
            schedule_epochs=self.checkpoints.schedule_epochs(),
            checkpoint=self.checkpoints.claim(tracked.number),
        )
        planned = self.checkpoints.epochs_to_run(rung, tracked.number)
        counts = self.state.counts
        counts["trained"] += 1
        counts["candidates"] += 1 if rung == 0 else 0  # a promotion is the same candidate
        counts["epochs"] += planned  # corrected by the epochs it ran when it ends
        self.journal.started(tracked, rung, spec.epochs, planned)
        future = self.executor.submit(spec, self.epochs.reporter(tracked.number, rung))
        self.in_flight[future] = (tracked, rung, row_id, planned)

    def release_settled(self, proposing: bool) -> None:
        """Delete the checkpoints of candidates that can no longer be promoted
        (``RungCheckpoints.release_settled``); ``proposing``: new candidates may still come."""
        busy = [rung for _, rung, _, _ in self.in_flight.values()]
        busy += [rung for _, rung, _ in self.state.requeued]
        self.checkpoints.release_settled(self.ladder, busy, proposing)

    def finish(self, future: Future[TrialResult]) -> None:
        """Record a training that ended (or was cancelled)."""
        self.epochs.flush()  # its last epochs before its end
        tracked, rung, row_id, planned = self.in_flight.pop(future)
        start = time.perf_counter()
        result = result_of(future)
        # a run resumed mid-rung (after a kill) trains fewer epochs than planned; a worker
        # that does not say (an oracle) ran what was planned, which its row then records
        ran = int(result.metrics.setdefault("epochs_run", planned))
        self.state.counts["epochs"] += ran - planned
        # written before the store's write lock is taken (a file write and fsync would hold
        # every other search and submission), and before the row names it
        saved = self._write_weights(tracked, row_id, result)
        with self.store.batch():
            self.record(tracked, rung, row_id, result, saved)
        self.outcomes.weights.delete_dropped()  # their rows' clearing is committed now
        self.state.history.append(self._history_entry())
        tracked.overhead += time.perf_counter() - start

    def _write_weights(self, tracked: Tracked, row_id: int, result: TrialResult) -> str | None:
        if result.status != Status.OK or result.weights is None:
            return None
        return self.outcomes.weights.save(tracked.number, row_id, result.weights)

    def record(
        self,
        tracked: Tracked,
        rung: int,
        row_id: int,
        result: TrialResult,
        weights_path: str | None = None,
    ) -> None:
        """Store the training's end; ``weights_path``: its weights, written already."""
        self.state.device_seconds += result.seconds
        status, error = trained_status(self.spec, result)
        if weights_path is not None and status != Status.OK:  # failed an objective or constraint
            self.outcomes.weights.forget(tracked.number)
            weights_path = None
        self.journal.update(row_id, status, result, error, tracked, rung, weights_path)
        if status in (Status.FAILED, Status.PRUNED) or rung == self.ladder.top:
            self.checkpoints.release(tracked.number)  # never promoted again
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
            # what the network is, not what this run did: a reuse trains nothing
            network = {k: v for k, v in metrics.items() if k not in RUN_METRICS}
            self.cache.put(
                self.task, fidelity, result_key(tracked), TrialResult(Status.OK, network)
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
