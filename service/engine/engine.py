"""The search engine: one search from spec to Pareto front, cheapest evidence first.

Per proposal (an Optuna ``ask`` over the space's distributions):

1. **hash** (cascade) — structural hash, then the functional hash; a trained result stored under
   that hash for the task (by any search, unless ``reuse_across_searches`` is off) is reused at
   once, with the candidate's own costs (params, FLOPs, ...: ``_own_costs``): the trial is
   stored as ``duplicate`` and the sampler told its values.
2. **proxy** (cascade) — zero-cost proxies (cached by hash); constraints that proxies already
   know (``params``, ``flops``) are checked; ``ProxyScreen`` keeps the top fraction. Screened-out
   candidates are stored ``pruned`` with their scores and the sampler is told ``PRUNED``.
3. **supernet** — ``supernet_stage`` is a hook that passes every candidate until the supernet
   exists.
4. **train** — successive-halving rungs (``SuccessiveHalving``); promotions go first whenever a
   worker is free. A trial that does not go up when its rung result arrives is told ``PRUNED``
   (with its value as an intermediate value for one objective); if it is promoted later and
   finishes the top rung, the sampler is told that result as a new completed trial.

Plain strategies (``random``, ``tpe``, ``nsga2``, ``gp``) skip 1-3. Every state change is written
to the store before the engine goes on, so ``Engine.resume`` rebuilds the search (sampler
included) from the store after any crash: finished trials are kept, running ones re-queued.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState, create_trial

from winnow.search_space.candidate import Candidate
from winnow.search_space.canonical import structural_hash
from winnow.search_space.functional_hash import (
    DEFAULT_MANTISSA_BITS,
    HASH_VERSION,
    Probe,
    functional_hash,
)
from winnow.search_space.trial import Status, TrialResult, TrialSpec
from winnow.service.engine.pareto import pareto_front, search_hypervolume
from winnow.service.engine.rungs import SuccessiveHalving
from winnow.service.engine.sampling import SamplerViewStorage, make_study
from winnow.service.engine.screening import ProxyScreen
from winnow.service.search_spec import SearchSpec
from winnow.service.store import SqlEquivalenceCache, Store
from winnow.workers.executor import Executor

CANCEL_POLL_SECONDS = 0.5  # how soon a cancelled search stops its running trials
PROGRESS_COUNTS = ("trained", "proposals", "cache_hits", "pruned", "failed")
# The settings functional hashes are taken with; memoised hashes are keyed by it.
HASH_PROBE = f"v{HASH_VERSION}|{Probe()}|mantissa={DEFAULT_MANTISSA_BITS}"
# Objectives that the proxy stage already measures (its metric is ``proxy.<name>``).
STATIC_FROM_PROXIES = ("params", "flops")
# Metrics of the built network itself, not of the function it computes (see Engine._own_costs).
STATIC_COSTS = ("params", "flops", "model_bytes", "bitops")
COSTS_FIDELITY = "costs"


@dataclass
class Tracked:
    """What the engine holds for one candidate of the search."""

    number: int
    candidate: Candidate
    params: dict[str, Any]
    distributions: dict[str, Any]
    structural: str
    functional: str | None = None
    optuna_number: int | None = None
    trial_id: int | None = None  # the study's id of that trial, for intermediate reports
    told: bool = False
    overhead: float = 0.0  # engine seconds spent on this candidate, evaluations excluded
    sampling: float = 0.0  # of which the sampler's ask and suggestions


@dataclass
class SearchReport:
    search_id: str
    status: str
    trained: int
    proposals: int
    cache_hits: int
    proxy_evaluations: int
    pruned: int
    failed: int
    front: list[dict[str, Any]]
    hypervolume: float
    history: list[dict[str, float]] = field(default_factory=list)
    overhead_ms_median: float = 0.0
    wall_seconds: float = 0.0


class Engine:
    """Runs one stored search; build it with :meth:`create` or :meth:`resume`."""

    def __init__(
        self,
        spec: SearchSpec,
        store: Store,
        executor: Executor,
        search_id: str,
        device: str | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.spec, self.store, self.executor = spec, store, executor
        self.search_id, self.on_event = search_id, on_event
        self.device = device or executor.device
        self.space = spec.search_space
        self.objectives = spec.objectives
        strategy = spec.strategy
        self.sampler_view = SamplerViewStorage(strategy.pruned_window)
        self.study = make_study(
            strategy.sampler_name,
            spec.directions,
            spec.seed,
            parallel=executor.slots > 1,
            storage=self.sampler_view,
        )
        self.cache = SqlEquivalenceCache(store, seed=spec.seed)
        self.ladder = SuccessiveHalving(strategy.rungs, strategy.reduction_factor, spec.directions)
        self.screen = (
            ProxyScreen(strategy.screen, spec.objectives, spec.seed) if strategy.cascade else None
        )
        self.tracked: dict[int, Tracked] = {}
        self.in_flight: dict[Future[TrialResult], tuple[Tracked, int, int]] = {}
        self.requeued: list[tuple[Tracked, int, int | None]] = []  # (candidate, rung, row id)
        self._hypervolume = 0.0
        self.completed: dict[int, list[float]] = {}  # top-rung (or reused) objective values
        self.history: list[dict[str, float]] = []
        self.counts = dict(trained=0, proposals=0, cache_hits=0, proxy=0, pruned=0, failed=0)
        self.device_seconds = 0.0
        self.started = time.perf_counter()
        self._cancelled = threading.Event()
        self._stop_status = "cancelled"

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def create(cls, spec: SearchSpec, store: Store, executor: Executor, **kwargs: Any) -> Engine:
        spec.check_names()  # a spec built in Python (not parsed) has not had its names checked
        spec.task.check_dataset()
        search_id = store.create_search(spec.name, spec.task.key, spec.to_json())
        engine = cls(spec, store, executor, search_id, **kwargs)
        engine._event("search_started", {"name": spec.name})
        return engine

    @classmethod
    def resume(cls, store: Store, search_id: str, executor: Executor, **kwargs: Any) -> Engine:
        """The stored search, rebuilt: trials, rungs, screen population and sampler state."""
        row = store.search(search_id)
        spec = SearchSpec.model_validate_json(row.spec_json)
        engine = cls(spec, store, executor, search_id, **kwargs)
        requeued = store.requeue_running(search_id)
        # restore.py needs Engine and Tracked from this module, hence the import here
        from winnow.service.engine.state import restore_engine

        rows = store.trials(search_id)
        restore_engine(engine, rows)
        store.set_search_status(search_id, "running")
        if rows:
            engine._event("search_resumed", {"requeued": requeued})
        else:  # a queued search starting (the server creates searches before they run)
            engine._event("search_started", {"name": spec.name})
        return engine

    def cancel(self, status: str = "cancelled") -> None:
        """Stop proposing (from any thread); the running evaluation finishes and is stored,
        and ``run`` returns with the search in ``status``: ``cancelled``, or ``queued`` for a
        server shutting down (the next one resumes it)."""
        if self._cancelled.is_set() and self._stop_status == "cancelled":
            return  # a user's cancel stands: a shutdown after it must not make it resumable
        self._stop_status = status
        self._cancelled.set()

    def progress(self) -> dict[str, Any]:
        """Counters, hypervolume and each objective's best completed value, for watchers."""
        best = {}
        points = np.array(list(self.completed.values())) if self.completed else None
        for k, objective in enumerate(self.objectives):
            if points is not None:
                column = points[:, k]
                best[objective.name] = float(
                    column.max() if objective.direction == "maximize" else column.min()
                )
        return {
            **{k: self.counts[k] for k in PROGRESS_COUNTS},
            "max_trials": self.spec.budget.max_trials,
            "hypervolume": self._hypervolume,
            "best": best,
        }

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> SearchReport:
        try:
            self._loop()
        except KeyboardInterrupt:
            self.store.set_search_status(self.search_id, "cancelled", "interrupted; resumable")
            raise
        except BaseException as error:
            self.store.set_search_status(
                self.search_id, "failed", f"{type(error).__name__}: {error}"
            )
            raise
        self._tell_waiting_at_end()
        status = self._stop_status if self._cancelled.is_set() else "finished"
        self.store.set_search_status(self.search_id, status)
        report = self.report(status)
        kind = "search_paused" if status == "queued" else "search_finished"
        self._event(kind, {"status": status, "trained": report.trained, "hv": report.hypervolume})
        return report

    def _loop(self) -> None:
        while True:
            while len(self.in_flight) < self.executor.slots and self._budget_left():
                if not self._start_next():
                    break
            if not self.in_flight:
                return
            # a timeout, so that a cancel stops running trials without waiting for them
            wait(list(self.in_flight), CANCEL_POLL_SECONDS, FIRST_COMPLETED)
            if self._cancelled.is_set() and self._stop_status == "cancelled":
                for future in self.in_flight:
                    future.cancel()  # process workers stop the trial; it is stored as failed
            # done() and not wait()'s answer: wait() never counts a future cancelled by its
            # owner (no executor thread marks it "notified"), and would spin on it for ever
            for future in [f for f in self.in_flight if f.done()]:
                self._finish_training(future)

    def _budget_left(self) -> bool:
        if self._cancelled.is_set():
            return False
        budget = self.spec.budget
        if self.counts["trained"] >= budget.max_trials:
            return False
        if budget.max_seconds and time.perf_counter() - self.started >= budget.max_seconds:
            return False
        return not (budget.max_device_seconds and self.device_seconds >= budget.max_device_seconds)

    def _start_next(self) -> bool:
        """Start one training run: a promotion if one is due, else new proposals until one
        passes the cascade. False when nothing more can start."""
        if self.requeued:
            self._submit_training(*self.requeued.pop(0))
            return True
        promotion = self.ladder.next_promotion()
        if promotion is not None:
            number, rung = promotion
            self.ladder.mark_promoted(rung - 1, number)
            self._submit_training(self.tracked[number], rung)
            return True
        while self.counts["proposals"] < self.spec.budget.proposals and self._budget_left():
            if self._propose():
                return True
        return False

    # --- one proposal through the cascade -----------------------------------------------------

    def _propose(self) -> bool:
        """Ask, then the cascade (or nothing, for plain strategies); True when the candidate
        was sent to training."""
        start = time.perf_counter()
        tracked = self._ask()
        evaluation = 0.0
        try:
            if self.spec.strategy.cascade:
                row_id, evaluation = self._cascade(tracked)
                if row_id is None:
                    return False
            else:
                row_id = self._queue_training(tracked, 0)
            evaluation += self._launch(tracked, 0, row_id)
            return True
        finally:
            tracked.overhead += time.perf_counter() - start - evaluation

    def _cascade(self, tracked: Tracked) -> tuple[int | None, float]:
        """Hash, reuse, screen: the first rung's row id when the candidate goes on to training,
        and the seconds spent evaluating (hashes, costs, proxies: not engine overhead).

        Writes are grouped into a few transactions, none held open across an evaluation (a
        SQLite write lock held during training would stall every other search on the file)."""
        evaluation = self._hash(tracked)
        with self.store.batch():  # one transaction when nothing needs evaluating
            reused = self._stored_result(tracked)
            proxy = None if reused is not None else self._cached_proxies(tracked)
            row_id = None if proxy is None else self._screen_and_queue(tracked, proxy)
        if reused is not None:
            metrics, seconds = self._own_costs(tracked, reused.metrics)
            with self.store.batch():
                self._record_reuse(tracked, metrics)
            return None, evaluation + seconds
        if proxy is None:
            proxy, seconds = self._run_proxies(tracked)
            evaluation += seconds
            with self.store.batch():
                row_id = self._screen_and_queue(tracked, proxy)
        return row_id, evaluation

    def _ask(self) -> Tracked:
        start = time.perf_counter()
        trial = self.study.ask()
        candidate = self.space.suggest_optuna(trial)
        sampling = time.perf_counter() - start
        tracked = Tracked(
            len(self.tracked),
            candidate,
            dict(trial.params),
            dict(trial.distributions),
            structural_hash(candidate),
            optuna_number=trial.number,
            trial_id=trial._trial_id,
            sampling=sampling,
        )
        self.tracked[tracked.number] = tracked
        self.counts["proposals"] += 1
        return tracked

    def _hash(self, tracked: Tracked) -> float:
        """Fill in the functional hash, memoised by structural hash in the store (which keeps
        what it read in memory); returns the seconds spent computing it (evaluation, not
        overhead)."""
        functional = self.store.functional_hash(tracked.structural, HASH_PROBE)
        seconds = 0.0
        if functional is None:
            start = time.perf_counter()
            functional = functional_hash(tracked.candidate)
            seconds = time.perf_counter() - start
            self.store.remember_functional_hash(tracked.structural, HASH_PROBE, functional)
        tracked.functional = functional
        return seconds

    def _stored_result(self, tracked: Tracked) -> TrialResult | None:
        """A stored top-rung result for the same function on this task, if any: stored by a
        cascade under its functional hash, or by a plain strategy under its structural one
        (see ``_result_key``)."""
        task, fidelity = self._train_task(), _train_fidelity(self.ladder.rungs[-1])
        result = self.cache.get(task, fidelity, tracked.functional)
        if result is None and self.spec.strategy.reuse_across_searches:  # else only ours
            result = self.cache.get(task, fidelity, _structural_key(tracked.structural))
        if result is None or result.status != Status.OK or not self._has_objectives(result):
            return None
        return result

    def _own_costs(
        self, tracked: Tracked, metrics: dict[str, float]
    ) -> tuple[dict[str, float], float]:
        """A reused result's metrics with this candidate's own costs; and the seconds that
        measuring them took.

        Functionally equal candidates can differ in parameters that never reach the output (an
        nb201 cell whose convolutions feed nothing computes the identity cell's function with
        4.7x its parameters), so the costs stored with the result are its first candidate's.
        These are measured (a ``costs`` trial: the built network, no data) and cached by the
        candidate's key."""
        stale = [m for m in STATIC_COSTS if m in metrics]
        if not stale:
            return metrics, 0.0
        key, seconds = f"candidate:{tracked.candidate.key}", 0.0
        costs = self.cache.get(self.spec.task.key, COSTS_FIDELITY, key)
        if costs is None:
            spec = TrialSpec(tracked.candidate, self.spec.task.dataset, stage="costs")
            start = time.perf_counter()
            costs = _result_of(self.executor.submit(spec))
            seconds = time.perf_counter() - start
            if costs.status != Status.OK:  # the first candidate's costs are better than none
                return metrics, seconds
            self.cache.put(self.spec.task.key, COSTS_FIDELITY, key, costs)
        return {**metrics, **{m: costs.metrics[m] for m in stale if m in costs.metrics}}, seconds

    def _record_reuse(self, tracked: Tracked, metrics: dict[str, float]) -> None:
        self.counts["cache_hits"] += 1
        reused = TrialResult(Status.OK, metrics)
        epochs, top = self.ladder.rungs[-1], self.ladder.top
        self._write_row(tracked, "train", epochs, top, "duplicate", reused, True)
        self._complete(tracked, metrics)

    @property
    def _proxy_fidelity(self) -> str:
        return f"proxy[{','.join(self.spec.strategy.screen.proxies)}]"

    def _cached_proxies(self, tracked: Tracked) -> TrialResult | None:
        return self.cache.get(self.spec.task.key, self._proxy_fidelity, tracked.functional)

    def _run_proxies(self, tracked: Tracked) -> tuple[TrialResult, float]:
        """Score the candidate with the screen's proxies; cache the scores (one commit)."""
        spec = TrialSpec(
            tracked.candidate,
            self.spec.task.dataset,
            stage="proxy",
            seed=self.spec.seed,
            device=self.device,
            proxies=tuple(self.spec.strategy.screen.proxies),
        )
        start = time.perf_counter()
        result = _result_of(self.executor.submit(spec))
        seconds = time.perf_counter() - start
        self.counts["proxy"] += 1
        self.device_seconds += result.seconds
        if result.status == Status.OK:
            self.cache.put(self.spec.task.key, self._proxy_fidelity, tracked.functional, result)
        return result, seconds

    def _screen(self, tracked: Tracked, result: TrialResult) -> bool:
        """Constraints that proxies know, then the proxy screen; writes the proxy row."""
        if result.status != Status.OK:
            self._write_row(tracked, "proxy", 0, -1, "failed", result)
            self.counts["failed"] += 1
            self._tell(tracked, TrialState.FAIL)
            return False
        values = {p: result.metrics.get(f"proxy.{p}") for p in self.spec.strategy.screen.proxies}
        violated = self._violations(_static_metrics(result.metrics))
        assert self.screen is not None
        decision = self.screen.add(tracked.number, values)
        metrics = {**result.metrics, "screen.score": decision.score}
        metrics["screen.position"] = decision.position
        screened = TrialResult(Status.OK, metrics, error=result.error, seconds=result.seconds)
        if violated or not decision.keep:
            screened.status = Status.PRUNED
            screened.error = "; ".join(violated) or (
                f"proxy screen: place {decision.position + 1} of {decision.population} "
                f"({decision.ensemble} ensemble), keeping the top "
                f"{self.spec.strategy.screen.keep_fraction:.0%}"
            )
            self._write_row(tracked, "proxy", 0, -1, "pruned", screened)
            self.counts["pruned"] += 1
            self._tell(tracked, TrialState.PRUNED)
            return False
        self._write_row(tracked, "proxy", 0, -1, "ok", screened)
        return True

    def _screen_and_queue(self, tracked: Tracked, proxy: TrialResult) -> int | None:
        """The proxy screen, then the supernet stage; the first rung's row id when both pass."""
        if not self._screen(tracked, proxy) or not self.supernet_stage(tracked):
            return None
        return self._queue_training(tracked, 0)

    def supernet_stage(self, tracked: Tracked) -> bool:
        """The supernet fidelity's hook: True lets the candidate go on to training. A no-op
        until the supernet exists."""
        return True

    # --- training rungs -----------------------------------------------------------------------

    def _submit_training(self, tracked: Tracked, rung: int, row_id: int | None = None) -> None:
        """Queue (or re-queue) one rung's training and send it to the executor."""
        self._launch(tracked, rung, self._queue_training(tracked, rung, row_id))

    def _queue_training(self, tracked: Tracked, rung: int, row_id: int | None = None) -> int:
        """Write the rung's row as ``running`` (before the work starts, so that a crash leaves
        it to be re-queued); returns its id."""
        if row_id is None:
            epochs = self.ladder.rungs[rung]
            return self._write_row(tracked, "train", epochs, rung, "running")
        self.store.update_trial(row_id, status="running")
        return row_id

    def _launch(self, tracked: Tracked, rung: int, row_id: int) -> float:
        """Hand the training to the executor; returns the seconds ``submit`` took (the whole
        evaluation with an in-process executor, which is not engine overhead)."""
        spec = TrialSpec(
            tracked.candidate,
            self.spec.task.dataset,
            stage="train",
            epochs=self.ladder.rungs[rung],
            seed=self.spec.seed,
            device=self.device,
        )
        self.counts["trained"] += 1
        start = time.perf_counter()
        future = self.executor.submit(spec)
        self.in_flight[future] = (tracked, rung, row_id)
        return time.perf_counter() - start

    def _finish_training(self, future: Future[TrialResult]) -> None:
        tracked, rung, row_id = self.in_flight.pop(future)
        start = time.perf_counter()
        result = _result_of(future)
        with self.store.batch():
            self._record_training(tracked, rung, row_id, result)
        self._record_history()
        tracked.overhead += time.perf_counter() - start

    def _record_training(self, tracked: Tracked, rung: int, row_id: int, result: TrialResult):
        self.device_seconds += result.seconds
        status, error = str(result.status), result.error
        violated = self._violations(result.metrics) if result.status == Status.OK else []
        if result.status == Status.OK and not self._has_objectives(result):
            status, error = "failed", f"missing objective(s) in metrics: {self._missing(result)}"
        elif violated:
            status, error = "pruned", "; ".join(violated)
        self._update_row(row_id, status, result, error)
        if status == "failed":
            self.counts["failed"] += 1
            self._tell(tracked, TrialState.FAIL)
        elif status == "pruned":
            self.counts["pruned"] += 1
            self._tell(tracked, TrialState.PRUNED)
        else:
            self._rung_done(tracked, rung, result.metrics)

    def _rung_done(self, tracked: Tracked, rung: int, metrics: dict[str, float]) -> None:
        if self.screen is not None and rung == 0:
            self.screen.observe(tracked.number, metrics)
        if rung == self.ladder.top:
            self.cache.put(
                self._train_task(),
                _train_fidelity(self.ladder.rungs[rung]),
                self._result_key(tracked),
                TrialResult(Status.OK, metrics),
            )
            self._complete(tracked, metrics)
            return
        self.ladder.record(rung, tracked.number, self._values(metrics))
        if tracked.number not in self.ladder.promotable(rung):
            self._tell(tracked, TrialState.PRUNED, intermediate=(rung, metrics))

    def _complete(self, tracked: Tracked, metrics: dict[str, float]) -> None:
        values = self._values(metrics)
        self.completed[tracked.number] = values
        if tracked.told:  # pruned at a lower rung, promoted later: a new completed trial
            self.study.add_trial(
                create_trial(
                    params=tracked.params, distributions=tracked.distributions, values=values
                )
            )
        else:
            self._tell(tracked, TrialState.COMPLETE, values=values)
        self._hypervolume = self._compute_hypervolume()
        self._event("front", {"number": tracked.number, "hypervolume": self._hypervolume})

    # --- telling the sampler ------------------------------------------------------------------

    def _tell(
        self,
        tracked: Tracked,
        state: TrialState,
        values: list[float] | None = None,
        intermediate: tuple[int, dict[str, float]] | None = None,
    ) -> None:
        if tracked.told or tracked.trial_id is None:
            return
        if intermediate is not None and len(self.objectives) == 1:
            rung, metrics = intermediate
            trial = optuna.trial.Trial(self.study, tracked.trial_id)
            trial.report(self._values(metrics)[0], self.ladder.rungs[rung])
        self.study.tell(tracked.optuna_number, values, state=state)
        tracked.told = True

    def _tell_waiting_at_end(self) -> None:
        """Candidates still open when the budget ends (none with a synchronous executor)."""
        for tracked in self.tracked.values():
            self._tell(tracked, TrialState.PRUNED)

    # --- metrics, constraints, front ----------------------------------------------------------

    def _values(self, metrics: dict[str, float]) -> list[float]:
        return [float(metrics[o.name]) for o in self.objectives]

    def _has_objectives(self, result: TrialResult) -> bool:
        return not self._missing(result)

    def _missing(self, result: TrialResult) -> list[str]:
        return [o.name for o in self.objectives if o.name not in result.metrics]

    def _violations(self, metrics: dict[str, float]) -> list[str]:
        return [f"violates {c}" for c in self.spec.constraints if c.satisfied(metrics) is False]

    def hypervolume(self) -> float:
        """Of the completed trials, as of the last completion."""
        return self._hypervolume

    def _compute_hypervolume(self) -> float:
        return search_hypervolume(self.objectives, list(self.completed.values()))

    def front(self) -> list[dict[str, Any]]:
        numbers = list(self.completed)
        points = [self.completed[n] for n in numbers]
        return [
            {
                "number": numbers[i],
                "candidate": json.loads(self.tracked[numbers[i]].candidate.canonical_json()),
                **{o.name: points[i][k] for k, o in enumerate(self.objectives)},
            }
            for i in pareto_front(points, self.spec.directions)
        ]

    def _record_history(self) -> None:
        primary, direction = self.objectives[0].name, self.objectives[0].direction
        values = [v[0] for v in self.completed.values()]
        best = (max if direction == "maximize" else min)(values) if values else float("nan")
        entry = {"trained": self.counts["trained"], "best": best, "hypervolume": self.hypervolume()}
        self.history.append({**entry, "objective": primary})

    def report(self, status: str = "running") -> SearchReport:
        overheads = [t.overhead * 1000 for t in self.tracked.values()]
        return SearchReport(
            search_id=self.search_id,
            status=status,
            trained=self.counts["trained"],
            proposals=self.counts["proposals"],
            cache_hits=self.counts["cache_hits"],
            proxy_evaluations=self.counts["proxy"],
            pruned=self.counts["pruned"],
            failed=self.counts["failed"],
            front=self.front(),
            hypervolume=self.hypervolume(),
            history=self.history,
            overhead_ms_median=float(np.median(overheads)) if overheads else 0.0,
            wall_seconds=time.perf_counter() - self.started,
        )

    # --- the store ----------------------------------------------------------------------------

    def _result_key(self, tracked: Tracked) -> str:
        """The cache key of a trained result: the functional hash where the cascade computed
        it; plain strategies never hash functionally (milliseconds a trial that they do not
        need), so theirs go under the structural hash, which the cascade looks up as well."""
        return tracked.functional or _structural_key(tracked.structural)

    def _train_task(self) -> str:
        task = self.spec.task.key
        return task if self.spec.strategy.reuse_across_searches else f"{task}#{self.search_id}"

    def _write_row(
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
        now = time.time()
        row_id = self.store.insert_trial(
            dict(
                search_id=self.search_id,
                number=tracked.number,
                stage=stage,
                epochs=epochs,
                rung=rung,
                status=status,
                candidate_json=tracked.candidate.canonical_json(),
                candidate_key=tracked.candidate.key,
                structural_hash=tracked.structural,
                functional_hash=tracked.functional,
                params_json=json.dumps(tracked.params),
                metrics_json=_metrics_json(result.metrics if result else {}),
                loss_curve_json=json.dumps(result.loss_curve if result else []),
                error=result.error if result else None,
                reused=reused,
                seconds=result.seconds if result else 0.0,
                device=result.device if result else None,
                host=result.host if result else None,
                created_at=now,
                finished_at=now if result else None,
            )
        )
        if result is not None:  # proxy rows are many and are rows already: not stored twice
            payload = {"number": tracked.number, "stage": stage, "status": status}
            self._event("trial", payload, stored=stage != "proxy")
        return row_id

    def _update_row(self, row_id: int, status: str, result: TrialResult, error: str | None):
        self.store.update_trial(
            row_id,
            status=status,
            metrics_json=_metrics_json(result.metrics),
            loss_curve_json=json.dumps(result.loss_curve),
            error=error,
            seconds=result.seconds,
            device=result.device,
            host=result.host,
            finished_at=time.time(),
        )
        self._event("trial", {"row": row_id, "status": status})

    def _event(self, kind: str, payload: dict[str, Any], stored: bool = True) -> None:
        if stored:
            self.store.add_event(self.search_id, kind, payload)
        if self.on_event is not None:
            self.on_event(kind, payload)


def _metrics_json(metrics: dict[str, float]) -> str:
    """Metrics as JSON, a non-finite number as null: NaN is not JSON, and the SQL JSON functions
    that read it (SQLite's json_extract, PostgreSQL's json) refuse the whole document."""
    finite = {
        k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in metrics.items()
    }
    return json.dumps(finite)


def _structural_key(structural: str) -> str:
    return f"structural:{structural}"  # apart from functional hashes, which are bare


def _train_fidelity(epochs: int) -> str:
    return f"train[{epochs} epochs]"


def _static_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Cost metrics the proxy stage measured, under their training-time names."""
    return {m: metrics[f"proxy.{m}"] for m in STATIC_FROM_PROXIES if f"proxy.{m}" in metrics}


def _result_of(future: Future[TrialResult]) -> TrialResult:
    """A worker that raised is a failed trial, with the exception as its error."""
    try:
        return future.result()
    except CancelledError:
        return TrialResult(Status.FAILED, error="cancelled with the search")
    except Exception as error:
        return TrialResult(Status.FAILED, error=f"{type(error).__name__}: {error}")
