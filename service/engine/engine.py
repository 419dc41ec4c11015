"""The search engine: one search from spec to Pareto front, cheapest evidence first.

Per proposal (an Optuna ``ask`` over the space's distributions) the engine runs its list of
stages (``cascade``): hash, reuse, proxy, screen, supernet (a slot: ``supernet=``), train. A
result stored for an equal function is reused at once (with the candidate's own costs), the
proxy screen keeps the top fraction, and training runs successive-halving rungs whose
promotions go first whenever a worker is free. Plain strategies (``random``, ``tpe``,
``nsga2``, ``gp``) run the train stage alone.

This module is the loop, the budget (``Budget``: ``max_trials`` counts candidates sent to
training, so promotions that are due still run after the last candidate started;
``max_epochs`` and the seconds cap the compute) and cancelling. A ``reproducible`` spec runs one
training at a time, so that results reach the sampler in the same order every run. What a stage
asks lives in ``evidence``, how a candidate is settled (stored, counted, told to the sampler) in
``outcomes``, the rungs in ``training`` and what the search knows in ``state``. Every state
change is written to the store before the engine goes on (``journal``), so ``Engine.resume``
rebuilds the search (sampler included) from the store after any crash: finished trials are
kept, running ones re-queued.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
from concurrent.futures import FIRST_COMPLETED, wait
from typing import Any

import numpy as np

from winnow.records import SearchStatus, TrialRecord
from winnow.search_space.candidate import Candidate
from winnow.search_space.canonical import structural_hash
from winnow.search_space.costs import parameters_of
from winnow.service.engine import readout
from winnow.service.engine.cascade import (
    Passage,
    SizeCapStage,
    Stage,
    TrainStage,
    cascade_stages,
    run_stages,
)
from winnow.service.engine.confirmation import Confirmation, check_executor
from winnow.service.engine.evidence import (
    ProxyRule,
    ProxyScores,
    StoredResults,
    StoreHashMemo,
    WorkerHashes,
    hash_probe,
)
from winnow.service.engine.evidence_ladder import EvidenceLadder
from winnow.service.engine.journal import EventSink, Journal
from winnow.service.engine.outcomes import Outcomes
from winnow.service.engine.pareto import pareto_front, search_hypervolume
from winnow.service.engine.rung_checkpoints import live_checkpoints
from winnow.service.engine.rungs import SuccessiveHalving
from winnow.service.engine.sampling import SamplerViewStorage, make_study
from winnow.service.engine.screening import ProxyScreen
from winnow.service.engine.state import SearchReport, SearchState, Tracked
from winnow.service.engine.supernet import SupernetScreen
from winnow.service.engine.training import Training
from winnow.service.engine.weights import KeptWeights
from winnow.service.search_spec import SearchSpec
from winnow.service.store import SqlEquivalenceCache, Store
from winnow.workers.executor import Executor

__all__ = ["Engine", "SearchReport"]

CANCEL_POLL_SECONDS = 0.5  # how soon a cancelled search stops its running trials


class Engine:
    """Runs one stored search; build it with :meth:`create` or :meth:`resume`. ``rows``: the
    stored trials to rebuild the state from; ``supernet``: a stage for a cascade's supernet slot
    (default: ``supernet.SupernetScreen`` when the spec has ``strategy.supernet``, else
    ``cascade.SupernetStage``, which passes every candidate); ``max_params``: fail
    candidates of more parameters before anything builds them (``cascade.SizeCapStage``; the
    server's ``--max-params``; None: no cap)."""

    def __init__(
        self,
        spec: SearchSpec,
        store: Store,
        executor: Executor,
        search_id: str,
        device: str | None = None,
        on_event: EventSink | None = None,
        rows: list[TrialRecord] | None = None,
        supernet: Stage | None = None,
        max_params: int | None = None,
    ) -> None:
        self.spec, self.store, self.executor, self.search_id = spec, store, executor, search_id
        self.device = device or executor.device
        self.space, self.objectives, strategy = spec.search_space, spec.objectives, spec.strategy
        # reproducible: each result is told before the next ask, whatever the executor's slots
        self.slots = 1 if spec.reproducible else executor.slots
        self.sampler_view = SamplerViewStorage(strategy.pruned_window)
        self.study = make_study(
            strategy.sampler_name,
            spec.directions,
            spec.seed,
            parallel=self.slots > 1,
            storage=self.sampler_view,
        )
        self.cache = SqlEquivalenceCache(store, seed=spec.seed)
        self.ladder = SuccessiveHalving(strategy.rungs, strategy.reduction_factor, spec.directions)
        self.screen = (
            ProxyScreen(strategy.screen, self.objectives, spec.seed) if strategy.cascade else None
        )
        self.state = SearchState()
        if rows is not None:
            parts = (self.ladder, self.screen, self.study, self.sampler_view)
            staged = strategy.cascade and strategy.supernet is not None
            self.state = SearchState.from_rows(
                rows,
                self.space,
                self.objectives,
                *parts,
                supernet=staged,
                starts=readout.rung_starts(strategy),
            )
        self._enqueue_warm_starts(rows or [])
        self.journal = Journal(store, search_id, on_event)
        live = live_checkpoints(spec, store, search_id, rows or [])  # the sweep keeps them
        weights = KeptWeights(spec, store, search_id, rows, frozenset(live))
        self.evidence = (  # the evidence ladder: each fidelity's Kendall tau, for watchers
            EvidenceLadder.for_spec(spec) if rows is None else EvidenceLadder.from_rows(spec, rows)
        )
        self.outcomes = Outcomes(
            spec, self.state, self.journal, self.study, self.ladder, weights, self.evidence
        )
        self.training = Training(
            spec, search_id, self.outcomes, self.screen, self.cache, executor, self.device
        )
        self.confirmation = Confirmation(  # after the budget (``strategy.confirm``)
            spec, self.journal, executor, self.training.epochs, self.device, self.state, rows
        )
        self.max_params = max_params
        if supernet is None and strategy.cascade and strategy.supernet is not None:
            supernet = SupernetScreen(
                spec,
                store,
                self.cache,
                executor,
                self.journal,
                self.state,
                rows,
                cancelled=self._stopped,  # cancel or budget (its event is set below)
                results=self.screen,  # its trained results calibrate the combined score
            )
        self.stages = self._stages(supernet)
        # what ``max_seconds`` counts from: each run of the engine (a resume starts it again,
        # as ``Budget.max_seconds`` says; device seconds are summed from the stored rows)
        self.started = time.perf_counter()
        self._cancelled = threading.Event()
        self._stop_status = SearchStatus.CANCELLED

    def _enqueue_warm_starts(self, rows: list[TrialRecord]) -> None:
        """The spec's warm starts become the first trials the study asks, in order: each is
        enqueued with its Optuna params in this space (checked at submission, so a candidate
        outside the space raises CandidateNotInSpaceError here only for a spec built in
        Python and never checked). A resumed search enqueues those it has not proposed yet
        (the study's queue lived in the crashed process's memory)."""
        proposed = {row.candidate_key for row in rows}
        for data in self.spec.warm_start:
            candidate = Candidate(**data)
            if candidate.key not in proposed:
                params, _ = self.space.to_optuna(candidate)
                self.study.enqueue_trial(params)

    def _stages(self, supernet: Stage | None) -> list[Stage]:
        capped: list[Stage] = []
        if self.max_params is not None:
            capped.append(SizeCapStage(self.max_params, self._parameters))
        if not self.spec.strategy.cascade:
            return [*capped, TrainStage(self.training)]
        return capped + cascade_stages(
            StoreHashMemo(self.store, hash_probe(self.spec)),
            StoredResults(self.spec, self.search_id, self.cache, self.executor),
            ProxyScores(self.spec, self.cache, self.executor, self.device, self.state),
            ProxyRule(self.spec, self.screen),
            self.training,
            supernet,
            compute_hash=WorkerHashes(self.spec, self.executor),
        )

    @functools.cached_property
    def _task_shape(self) -> tuple[tuple[int, ...], int]:
        return self.spec.task.shape()  # may load the dataset: in the engine's thread, once

    def _parameters(self, candidate: Candidate) -> int | None:
        """The candidate's parameters, counted without memory; None when its network cannot
        be built on the meta device (its real build then says why)."""
        input_shape, num_classes = self._task_shape
        try:
            return parameters_of(candidate, num_classes, input_shape)
        except Exception:  # noqa: BLE001 - any build error is the build's to report
            return None

    # --- construction, cancelling, watching ----------------------------------------------------

    @classmethod
    def create(cls, spec: SearchSpec, store: Store, executor: Executor, **kwargs: Any) -> Engine:
        spec.check_names()  # a spec built in Python (not parsed) has not had its names checked
        check_executor(spec, executor)
        spec.task.check_dataset()
        spec.check_user_code()
        search_id = store.create_search(spec.name, spec.task.key, spec.to_json())
        engine = cls(spec, store, executor, search_id, **kwargs)
        engine.journal.event("search_started", {"name": spec.name})
        return engine

    @classmethod
    def resume(cls, store: Store, search_id: str, executor: Executor, **kwargs: Any) -> Engine:
        """The stored search, rebuilt: trials, rungs, screen population and sampler state.
        A stated input shape or class count is checked against the dataset here, in the
        search's thread (``SpecError``), not where the server accepted the spec; a spec
        today's code no longer accepts raises, naming its fields (the manager ends the
        search failed with that message)."""
        spec = readout.stored_spec(store.search(search_id).spec_json).valid()
        check_executor(spec, executor)
        spec.task.check_dataset()
        spec.check_user_code()
        requeued = store.requeue_running(search_id)
        rows = store.trials(search_id)
        engine = cls(spec, store, executor, search_id, rows=rows, **kwargs)
        store.set_search_status(search_id, SearchStatus.RUNNING)
        if rows:
            engine.journal.event("search_resumed", {"requeued": requeued})
        else:  # a queued search starting (the server creates searches before they run)
            engine.journal.event("search_started", {"name": spec.name})
        return engine

    def cancel(self, status: SearchStatus = SearchStatus.CANCELLED) -> None:
        """Stop proposing (from any thread); the running evaluation finishes and is stored,
        and ``run`` returns with the search in ``status``: ``cancelled``, or ``queued`` for a
        server shutting down (the next one resumes it)."""
        if self._cancelled.is_set() and self._stop_status == SearchStatus.CANCELLED:
            return  # a user's cancel stands: a shutdown after it must not make it resumable
        self._stop_status = status
        self._cancelled.set()

    @property
    def counts(self) -> dict[str, int]:
        return self.state.counts

    @property
    def tracked(self) -> dict[int, Tracked]:
        return self.state.tracked

    def progress(self) -> dict[str, Any]:
        """Counters, hypervolume, the front's size and leader, each objective's best value
        on the front and the evidence ladder, for watchers (``readout.progress_view``)."""
        rung, results = self._front_results()
        # one snapshot: gRPC threads call this while the engine's thread adds results
        items = list(results.items())
        ids, points = [i for i, _ in items], [p for _, p in items]
        rungs, tracked = self.spec.strategy.rungs, self.tracked
        return readout.progress_view(
            self.counts,
            self.spec.budget.max_trials,
            self.objectives,
            points,
            self.hypervolume(),
            trial_ids=ids,
            front_epochs=None if rung is None else rungs[rung],
            top_epochs=rungs[-1],
            evidence_ladder=[] if self.evidence is None else self.evidence.measure(),
            confirming=self.confirmation.progress(),
            confirmed=self.confirmation.confirmed(ids, tracked),
        )

    def _front_results(self) -> tuple[int | None, dict[int, list[float]]]:
        """The front's rung (``readout.front_rung``) and its results by candidate number: the
        completed ones (top rung, or reused), else the highest rung below with results."""
        by_rung = [*self.ladder.results[: self.ladder.top], self.state.completed]
        rung = readout.front_rung(by_rung)
        return rung, ({} if rung is None else by_rung[rung])

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> SearchReport:
        try:
            self._loop()
            if self.confirmation.enabled and not self._cancelled.is_set():
                self._confirm()
        except KeyboardInterrupt:
            self.store.set_search_status(
                self.search_id, SearchStatus.CANCELLED, "interrupted; resumable"
            )
            raise
        except BaseException as error:
            self.store.set_search_status(
                self.search_id, SearchStatus.FAILED, f"{type(error).__name__}: {error}"
            )
            # a failed search is not resumed: its checkpoints would only fill the folder
            with contextlib.suppress(Exception):  # the error that ended it is the one to raise
                self.training.checkpoints.release_all()
            raise
        self.outcomes.tell_waiting()
        self.outcomes.weights.delete_dropped()  # those that reused results dropped
        status = self._stop_status if self._cancelled.is_set() else SearchStatus.FINISHED
        if status != SearchStatus.QUEUED:  # a paused search resumes from its checkpoints
            self.training.checkpoints.release_all()
        error = None
        if status == SearchStatus.FINISHED:  # ran to its end: did anything train?
            error = readout.failure_summary(self.store.trials(self.search_id))
            status = SearchStatus.FAILED if error else status
        self.store.set_search_status(self.search_id, status, error)
        report = self.report(status)
        kind = "search_paused" if status == SearchStatus.QUEUED else "search_finished"
        payload = {"status": status, "trained": report.trained, "hv": report.hypervolume}
        self.journal.event(kind, payload)
        return report

    def _loop(self) -> None:
        in_flight = self.training.in_flight
        while True:
            while len(in_flight) < self.slots and not self._stopped():
                if not self._start_next():
                    break
            if not in_flight:
                return
            # a timeout, so that a cancel stops running trials without waiting for them
            wait(list(in_flight), CANCEL_POLL_SECONDS, FIRST_COMPLETED)
            self.training.epochs.flush()  # the running trials' epochs, as events
            if self._cancelled.is_set() and self._stop_status == SearchStatus.CANCELLED:
                for future in in_flight:
                    future.cancel()  # process workers stop the trial; it is stored as failed
            # done() and not wait()'s answer: wait() never counts a future cancelled by its
            # owner (no executor thread marks it "notified"), and would spin on it for ever
            finished = [f for f in in_flight if f.done()]
            for future in finished:
                self.training.finish(future)
            if finished and not self._pausing():  # a paused search resumes from them all
                # resumed candidates waiting for the supernet stage still reach the first rung
                self.training.release_settled(self._may_propose() or bool(self.state.unscreened))

    def _confirm(self) -> None:
        """After the budget: the front's confirmation runs (``confirmation``), until done,
        cancelled (a cancel stops the running ones; a pause lets them end) or out of time
        (``_stopped``: ``max_seconds``, ``max_device_seconds``; the running ones end). When the
        rungs spent the time budget, no run starts: the plan is stored, ``confirm_skipped``."""
        _, front = self._front_results()
        self.confirmation.run(
            self.tracked,
            dict(front),
            self.slots,
            stop=self._stopped,
            kill=lambda: self._cancelled.is_set() and not self._pausing(),
            poll=CANCEL_POLL_SECONDS,
        )

    def _pausing(self) -> bool:
        """Stopped to be resumed (a pause or a server's shutdown: ``cancel(QUEUED)``)."""
        return self._cancelled.is_set() and self._stop_status == SearchStatus.QUEUED

    def _stopped(self) -> bool:
        """Cancelled, or out of time: nothing more starts, not even a promotion."""
        if self._cancelled.is_set():
            return True
        budget = self.spec.budget
        if budget.max_seconds and time.perf_counter() - self.started >= budget.max_seconds:
            return True
        spent = self.state.device_seconds
        return bool(budget.max_device_seconds and spent >= budget.max_device_seconds)

    def _fits(self, rung: int, number: int | None = None) -> bool:
        """Whether a run at ``rung`` (of candidate ``number``: whether its checkpoint exists
        decides how many epochs it trains) fits in what is left of ``budget.max_epochs``."""
        cap = self.spec.budget.max_epochs
        epochs = self.training.checkpoints.epochs_to_run(rung, number)
        return cap is None or self.counts["epochs"] + epochs <= cap

    def _may_propose(self) -> bool:
        """Whether a new candidate may be proposed: fewer than ``max_trials`` candidates sent
        to training, proposals left, and its first rung fits in the epochs left."""
        budget = self.spec.budget
        return (
            self.counts["candidates"] < budget.max_trials
            and self.counts["proposals"] < budget.proposals
            and self._fits(0)
            and not self._stopped()
        )

    def _start_next(self) -> bool:
        """Start one training run: a re-queued one, a promotion if one is due (these are
        candidates already counted, so ``max_trials`` does not stop them), else new proposals
        until one passes the cascade. False when nothing more can start."""
        if self.state.requeued and self._fits(
            self.state.requeued[0][1], self.state.requeued[0][0].number
        ):
            self.training.submit(*self.state.requeued.pop(0))
            return True
        while self.state.unscreened and self._fits(0):
            if self._supernet_stage(self.state.unscreened.pop(0)):
                return True
        promotion = self.ladder.next_promotion()
        if promotion is not None and self._fits(promotion[1], promotion[0]):
            number, rung = promotion
            self.ladder.mark_promoted(rung - 1, number)
            self.training.submit(self.tracked[number], rung)
            return True
        while self._may_propose():
            if self._propose():
                return True
        return False

    def _propose(self) -> bool:
        """Ask, then the stages; True when the candidate was sent to training. Its overhead is
        the time spent on it less its evaluations (hashes, costs, proxies, an in-process run)."""
        start = time.perf_counter()
        tracked = self._ask()
        passage = Passage(self.outcomes, self.store.batch)
        try:
            return run_stages(self.stages, tracked, passage)
        finally:
            tracked.overhead += time.perf_counter() - start - passage.evaluation

    def _supernet_stage(self, tracked: Tracked) -> bool:
        """A resumed candidate that passed the proxy screen but was never judged by the
        supernet stage goes through it (and on to training if kept): True when it trains."""
        names = [stage.name for stage in self.stages]
        rest = self.stages[names.index("supernet") :]
        return run_stages(rest, tracked, Passage(self.outcomes, self.store.batch))

    def _ask(self) -> Tracked:
        start = time.perf_counter()
        trial = self.study.ask()
        candidate = self.space.suggest_optuna(trial)
        sampling = time.perf_counter() - start
        tracked = Tracked(
            len(self.tracked),
            candidate,
            structural_hash(candidate),
            params=dict(trial.params),
            distributions=dict(trial.distributions),
            optuna_number=trial.number,
            trial=trial,  # its report() records the intermediate value of a pruned rung
            sampling=sampling,
        )
        self.tracked[tracked.number] = tracked
        self.counts["proposals"] += 1
        return tracked

    # --- results ------------------------------------------------------------------------------

    def hypervolume(self) -> float:
        """Of the front (``_front_results``): the completed trials', as of the last completion,
        else that of the highest rung reached."""
        rung, results = self._front_results()
        if rung is None or rung == self.ladder.top:
            return self.state.hypervolume
        return search_hypervolume(self.objectives, list(results.values()))

    def front(self) -> list[dict[str, Any]]:
        """The front's points (completed trials, else the highest rung reached: see
        ``report().front_epochs``), each with its candidate number and candidate; once the
        front's confirmation began, the stored front with its confirmed figures
        (``readout.pareto``, the one reading of them)."""
        if self.confirmation.begun:
            return readout.pareto(self.spec, self.store.trials(self.search_id))["points"]
        _, results = self._front_results()
        numbers, points = list(results), list(results.values())
        return [
            {
                "trial_id": numbers[i],
                "candidate": json.loads(self.tracked[numbers[i]].candidate.canonical_json()),
                **{o.name: points[i][k] for k, o in enumerate(self.objectives)},
            }
            for i in pareto_front(points, self.spec.directions)
        ]

    def report(self, status: str = SearchStatus.RUNNING) -> SearchReport:
        overheads = [t.overhead * 1000 for t in self.tracked.values()]
        counts, front_rung = self.counts, self._front_results()[0]
        return SearchReport(
            search_id=self.search_id,
            status=status,
            trained=counts["trained"],
            candidates=counts["candidates"],
            epochs=counts["epochs"],
            proposals=counts["proposals"],
            cache_hits=counts["cache_hits"],
            proxy_evaluations=counts["proxy"],
            pruned=counts["pruned"],
            failed=counts["failed"],
            front=self.front(),
            hypervolume=self.hypervolume(),
            front_epochs=None if front_rung is None else self.ladder.rungs[front_rung],
            top_epochs=self.ladder.rungs[-1],
            history=self.state.history,
            overhead_ms_median=float(np.median(overheads)) if overheads else 0.0,
            wall_seconds=time.perf_counter() - self.started,
            evidence_ladder=[] if self.evidence is None else self.evidence.measure(),
        )
