"""What the engine writes to the store for one search: a row per candidate and stage (inserted
before its work starts, updated when it ends) and the search's events.

A training run's events, which watchers follow (``WatchSearch``, the progress bars):
``trial_started`` ``{trial_id, rung, epochs, epochs_to_run, candidate}`` (a one-line summary)
when it goes to the executor, ``epoch_finished`` ``{trial_id, rung, stage, epoch, epochs, loss,
seconds}`` after each epoch (one row per epoch: a rung trains tens of epochs at most, so no
throttling), and
``trial`` ``{row, trial_id, rung, stage, status, metrics}`` (with ``error`` when there is one;
the metrics' ``epochs_run``: the epochs the run trained) when it ends. A rung's run has stage
``train``; a confirmation run (``confirmation``) has the same three with its row's stage
``confirm:<seed>`` (``records.confirm_stage``; its ``trial_started`` also carries ``stage``
and ``seed``), between ``confirm_started`` ``{trials, seeds, runs, done}`` and
``confirm_finished`` ``{confirmed}`` (``confirm_stopped`` ``{trials, seeds, runs, done,
left}`` when the time budget, a cancel or a pause stops it short; ``confirm_skipped``, same
payload, and no ``confirm_started`` when the time budget was spent before its first run).

Every state change is written before the engine goes on, so that ``Engine.resume`` can rebuild
the search from the store after any crash (``state.SearchState.from_rows``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from winnow.records import Status, TrialRecord
from winnow.search_space.trial import TrialResult
from winnow.service.engine.state import Tracked
from winnow.service.store import Store

EventSink = Callable[[str, dict[str, Any]], None]


class Journal:
    def __init__(self, store: Store, search_id: str, on_event: EventSink | None = None) -> None:
        self.store, self.search_id, self.on_event = store, search_id, on_event

    def write(
        self,
        tracked: Tracked,
        stage: str,
        epochs: int,
        rung: int,
        status: str,
        result: TrialResult | None = None,
        reused: bool = False,
    ) -> int:
        """Insert the candidate's row for one stage; returns its id."""
        record = trial_row(self.search_id, tracked, stage, epochs, rung, status, result, reused)
        row_id = self.store.add_trial(record)
        if result is not None:  # proxy rows are many and are rows already: not stored twice
            payload = {"trial_id": tracked.number}
            payload |= {"stage": stage, "status": status}
            self.event("trial", payload, stored=stage != "proxy")
        return row_id

    def started(self, tracked: Tracked, rung: int, epochs: int, to_run: int, **extra: Any) -> None:
        """A training run went to the executor: to train the network to ``epochs`` epochs, of
        which it runs ``to_run`` (fewer when it continues its last rung's training);
        ``extra``: further fields (a confirmation run's ``stage`` and ``seed``)."""
        payload = {"trial_id": tracked.number, "rung": rung, "epochs": epochs}
        payload |= {"epochs_to_run": to_run, **extra}
        self.event("trial_started", payload | {"candidate": tracked.candidate.describe()})

    def epoch(self, payload: dict[str, Any]) -> None:
        """A training epoch ended (``Training``'s epoch reports)."""
        self.event("epoch_finished", payload)

    def update(
        self,
        row_id: int,
        status: str,
        result: TrialResult,
        error: str | None,
        tracked: Tracked,
        rung: int,
        weights_path: str | None = None,
        stage: str = "train",
    ) -> None:
        """A training row's work ended with ``result`` (stored as ``status``, ``error``, and
        the path of its kept weights, if any); ``stage``: the row's, ``confirm:<seed>`` for a
        confirmation run (``records.confirm_stage``)."""
        self.store.update_trial(
            row_id,
            status=status,
            metrics=result.metrics,
            loss_curve=result.loss_curve,
            accuracy_curve=result.accuracy_curve,
            error=error,
            seconds=result.seconds,
            device=result.device,
            host=result.host,
            finished_at=time.time(),
            weights_path=weights_path,
        )
        payload = {"row": row_id, "trial_id": tracked.number, "rung": rung, "stage": stage}
        payload |= {"status": status, "metrics": finite(result.metrics)}
        self.event("trial", payload | ({"error": error} if error else {}))

    def restart(self, row_id: int) -> None:
        """A re-queued row runs again."""
        self.store.update_trial(row_id, status=Status.RUNNING)

    def event(self, kind: str, payload: dict[str, Any], stored: bool = True) -> None:
        if stored:
            self.store.add_event(self.search_id, kind, payload)
        if self.on_event is not None:
            self.on_event(kind, payload)


def finite(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """Metrics as JSON can carry them: a non-finite value is null (as the store keeps it)."""
    return {k: float(v) if math.isfinite(v) else None for k, v in metrics.items()}


def trial_row(
    search_id: str,
    tracked: Tracked,
    stage: str,
    epochs: int,
    rung: int,
    status: str,
    result: TrialResult | None,
    reused: bool,
) -> TrialRecord:
    """The record of one stage of a candidate (``result``: None while it runs)."""
    now = time.time()
    return TrialRecord(
        id=None,
        search_id=search_id,
        number=tracked.number,
        stage=stage,
        epochs=epochs,
        rung=rung,
        status=Status(status),
        candidate=tracked.candidate.canonical_json(),
        candidate_key=tracked.candidate.key,
        structural_hash=tracked.structural,
        functional_hash=tracked.functional,
        params=tracked.params,
        metrics=result.metrics if result else {},
        loss_curve=result.loss_curve if result else [],
        accuracy_curve=result.accuracy_curve if result else [],
        error=result.error if result else None,
        reused=reused,
        seconds=result.seconds if result else 0.0,
        device=result.device if result else None,
        host=result.host if result else None,
        created_at=now,
        finished_at=now if result else None,
    )
