"""The engine's last phase (``strategy.confirm``): after the budget, the front's recipes are
trained again with further seeds, each run a row of its own (stage ``confirm:<seed>``,
``records.confirm_stage``, at the top rung's epochs and rung), dispatched to the executor as the
rungs' trainings are (``training.train_spec``; results checked by ``evidence.trained_status``
as a rung's are), ``slots`` at a time. What to run, how many ran and what the runs say are the
pure functions of ``confirmed``, which this class calls on the rows it keeps and ``readout`` on
the stored ones; the front and ``export`` read the figures from the rows (``readout.pareto``).
It is a cost on top of ``max_trials`` and ``max_epochs`` (``top_k`` x ``seeds`` top-rung
trainings at most), but not on top of the time budget: once ``max_seconds`` or
``max_device_seconds`` is spent (``Engine._stopped``, whose device seconds include these
runs'), no further run starts and the running ones end and are stored, as a pause's. The front
then says what each recipe got: its figures' ``seeds`` counts its successful runs (a recipe
partly confirmed reports the seeds it has; one with none stays a single run), and
``confirm_runs`` / ``confirm_done`` / ``confirm_failed`` show the planned runs against those
that ended and those of them that failed; the event ``confirm_stopped`` says why it stopped
short. When the rungs spent the time budget themselves (a search ``max_seconds`` ends),
nothing starts: the plan is stored, the event is ``confirm_skipped`` (never
``confirm_started``) and the front stays single runs ("front not confirmed"); ``max_seconds``
counts each run of the engine, so a resume runs the stored plan.

The plan is chosen once: when the confirmation begins, every (trial, seed) pair is written as
a ``queued`` row, and from then on the stored rows are the plan (a resumed search runs them,
whatever ``to_confirm`` would pick from its front now; readers count them). A row goes
``running`` before its run starts, so a resumed search (``Engine.resume``) re-runs only the
pairs of trial and seed without a finished row: the ``running`` ones a dead process left
(re-queued, their rows reused) and those never started. A cancel stops the
running ones (stored failed); a pause lets them end and stores them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from winnow.records import Status, TrialRecord, confirm_stage
from winnow.search_space.specfile import SpecError
from winnow.search_space.trial import TrialResult
from winnow.service.engine.confirmed import (
    confirm_counts,
    confirm_runs,
    confirm_seeds,
    confirmed_figures,
    recipe_identity,
    run_statuses,
    shared_figures,
    to_confirm,
)
from winnow.service.engine.evidence import result_of, trained_status
from winnow.service.engine.journal import Journal, finite, trial_row
from winnow.service.engine.state import SearchState, Tracked
from winnow.service.engine.training import EpochRelay, train_spec
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
    """The confirmation runs of one search; ``rows``: its stored rows (a resumed search's);
    ``state``: the search's, whose counters ``failed`` and ``pruned`` count its runs too (as
    ``readout.tally`` counts the rows of any stage) and whose ``device_seconds`` (what
    ``max_device_seconds`` limits) their seconds."""

    def __init__(
        self,
        spec: SearchSpec,
        journal: Journal,
        executor: Executor,
        relay: EpochRelay,
        device: str,
        state: SearchState,
        rows: list[TrialRecord] | None = None,
    ) -> None:
        self.spec, self.journal, self.executor, self.relay = spec, journal, executor, relay
        self.device, self.state, self.counts = device, state, state.counts
        self.seeds = confirm_seeds(spec)
        self.epochs = spec.strategy.rungs[-1]
        self.rung = len(spec.strategy.rungs) - 1
        # (trial, seed) -> its row as stored (kept here as the runs start and end)
        self.rows = {
            (number, seed): row
            for number, by_seed in confirm_runs(rows or []).items()
            for seed, row in by_seed.items()
        }
        self.requeued = {  # (trial, seed) -> row id
            pair: row.id
            for pair, row in self.rows.items()
            if row.status in (Status.QUEUED, Status.RUNNING)
        }
        self.figures = confirmed_figures(spec, self.rows.values())  # refreshed as runs end
        # a resumed search's stored runs spent device time too (the rungs' rows are replayed)
        ended = (Status.QUEUED, Status.RUNNING)
        state.device_seconds += sum(r.seconds for r in self.rows.values() if r.status not in ended)
        self.in_flight: dict[Future[TrialResult], tuple[Tracked, int, int]] = {}

    @property
    def enabled(self) -> bool:
        return self.spec.strategy.confirm is not None

    @property
    def begun(self) -> bool:
        """Whether a confirmation run was ever started (its row written)."""
        return bool(self.rows)

    def ended(self, pair: tuple[int, int]) -> bool:
        row = self.rows.get(pair)
        return row is not None and row.status not in (Status.QUEUED, Status.RUNNING)

    def progress(self) -> tuple[int, int, int]:
        """``(runs, done, failed)`` of the front's confirmation (``confirmed.confirm_counts``,
        which ``readout.progress`` calls on the stored rows)."""
        return confirm_counts(run_statuses(list(self.rows.values())))  # a snapshot: gRPC threads

    def confirmed(
        self, trial_ids: list[int], tracked: dict[int, Tracked]
    ) -> dict[int, dict[str, Any]]:
        """The figures of ``trial_ids`` (twins of a confirmed recipe share its figures:
        ``confirmed.shared_figures``)."""
        figures = self.figures  # one snapshot (the engine's thread replaces it)
        if not figures:
            return {}
        recipes = {n: identity(t) for n, t in list(tracked.items())}
        return shared_figures(figures, recipes, trial_ids)

    def plan(
        self, front: dict[int, list[float]], tracked: dict[int, Tracked]
    ) -> list[tuple[int, int]]:
        """Every (trial, seed) pair of the front's confirmation: once it began, the pairs
        stored then (a resumed search runs the runs chosen before its pause, whatever the
        front is now); else ``confirmed.to_confirm``'s, each written as a ``queued`` row at
        once, so that the plan is in the store before any run starts (what every reader's
        ``confirm_runs`` counts, and what a resume takes up)."""
        if self.rows:
            return list(self.rows)
        recipes = [identity(tracked[number]) for number in front]
        numbers = to_confirm(self.spec, list(front), list(front.values()), recipes)
        plan = [(number, seed) for number in numbers for seed in self.seeds]
        with self.journal.store.batch():
            for number, seed in plan:
                candidate, stage = tracked[number], confirm_stage(seed)
                row = self.journal.write(candidate, stage, self.epochs, self.rung, Status.QUEUED)
                self.requeued[(number, seed)] = row
                self.rows[(number, seed)] = self.record(candidate, seed, Status.QUEUED)
        return plan

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
        ``stop()`` (a cancel, a pause, or the time budget spent: nothing more starts, and
        ``confirm_stopped`` says how far it got); ``kill()``: cancel the running ones too. A
        front confirmed already (a finished search resumed) writes nothing; one whose time
        budget was spent before its first run writes its plan (``queued`` rows) and the event
        ``confirm_skipped``, and never ``confirm_started``."""
        plan = self.plan(front, tracked)
        pending = [pair for pair in plan if not self.ended(pair)]
        if not pending:  # nothing trained, or every run ended before
            return
        trials = list(dict.fromkeys(number for number, _ in plan))
        payload = {"trials": trials, "seeds": self.seeds, "runs": len(plan)}
        done = len(plan) - len(pending)
        if stop():  # the time budget was spent by the rungs: no run starts
            self.journal.event("confirm_skipped", payload | {"done": done, "left": len(pending)})
            return
        self.journal.event("confirm_started", payload | {"done": done})
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
            self.journal.event("confirm_finished", {"confirmed": _jsonable(self.figures)})
        else:  # stopped short: each recipe's figures count the seeds it got
            done = len(plan) - len(pending)
            self.journal.event("confirm_stopped", payload | {"done": done, "left": len(pending)})

    def submit(self, tracked: Tracked, seed: int) -> None:
        """Write the run's row (or reuse a re-queued one) and send it to the executor."""
        stage = confirm_stage(seed)
        row_id = self.requeued.pop((tracked.number, seed), None)
        if row_id is None:
            row_id = self.journal.write(tracked, stage, self.epochs, self.rung, Status.RUNNING)
        else:
            self.journal.restart(row_id)
        self.rows[(tracked.number, seed)] = self.record(tracked, seed, Status.RUNNING)
        spec = train_spec(self.spec, tracked, self.epochs, self.device, seed=seed)
        self.journal.started(tracked, self.rung, self.epochs, self.epochs, stage=stage, seed=seed)
        future = self.executor.submit(spec, self.relay.reporter(tracked.number, self.rung, stage))
        self.in_flight[future] = (tracked, seed, row_id)

    def finish(self, future: Future[TrialResult]) -> None:
        """Store a run that ended, checked as a rung's training is (``trained_status``:
        failed without an objective, pruned when it breaks a constraint); a cancelled one is
        failed. Only ``ok`` runs count in the figures."""
        self.relay.flush()
        tracked, seed, row_id = self.in_flight.pop(future)
        result = result_of(future)
        status, error = trained_status(self.spec, result)
        if status not in (Status.OK, Status.FAILED, Status.PRUNED):
            status = Status.FAILED
        with self.journal.store.batch():
            stage = confirm_stage(seed)
            self.journal.update(row_id, status, result, error, tracked, self.rung, stage=stage)
        self.rows[(tracked.number, seed)] = self.record(tracked, seed, status, result)
        if status in (Status.FAILED, Status.PRUNED):
            self.counts[status] += 1  # as ``readout.tally`` counts such rows of any stage
        self.state.device_seconds += result.seconds  # what ``max_device_seconds`` limits
        self.figures = confirmed_figures(self.spec, list(self.rows.values()))

    def record(
        self, tracked: Tracked, seed: int, status: str, result: TrialResult | None = None
    ) -> TrialRecord:
        """The run's row as the store keeps it (``journal.trial_row``; a non-finite metric is
        null there), kept in memory so that the figures need no read of the search's rows."""
        if result is not None:
            result = dataclasses.replace(result, metrics=finite(result.metrics))
        search = self.journal.search_id
        stage = confirm_stage(seed)
        return trial_row(search, tracked, stage, self.epochs, self.rung, status, result, False)


def identity(tracked: Tracked) -> str:
    """A tracked candidate's recipe (``confirmed.recipe_identity``, as its rows give it)."""
    return recipe_identity(tracked.functional, tracked.structural, tracked.candidate.key)


def _jsonable(confirmed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The figures with string keys (an event's payload is JSON)."""
    return {str(number): result for number, result in confirmed.items()}
