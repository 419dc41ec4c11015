"""What a search knows, as a value: :class:`SearchState` (its candidates, counters, completed
results, re-queued work, device seconds, hypervolume), owned by the engine and rebuilt from the
stored rows by :meth:`SearchState.from_rows` (``Engine.resume``).

Rows are replayed per candidate in the order they were written: finished rows are kept as they
are (never re-run); rows a dead process left ``queued``/``running`` go back to the queue; a
candidate that passed the screening stages but had no training row yet is queued for its first
rung, unless the spec has a supernet stage (``supernet=True``) and the candidate has its proxy
row but no ``supernet`` row: it is queued for that stage first (``unscreened``), which decides
whether it trains. The rung ladder, the proxy screen's population and labels, the counters and
the completed results are rebuilt, and every candidate is added to a fresh Optuna study with the
state the sampler had been (or would have been) told. Not in the rows, so not rebuilt: the
proxy runs counted by ``counts["proxy"]`` (a cached score and a computed one leave the same row),
their device seconds, and the report's history (a resumed search's starts at the resume).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState, create_trial

from winnow.records import Status, TrialRecord, confirm_seed
from winnow.search_space.candidate import Candidate
from winnow.search_space.canonical import structural_hash
from winnow.search_space.spec import SearchSpace
from winnow.search_space.trial import TrialResult
from winnow.service.engine.cascade import Proposal
from winnow.service.engine.pareto import search_hypervolume
from winnow.service.engine.readout import objective_values, run_epochs
from winnow.service.engine.rungs import SuccessiveHalving
from winnow.service.engine.screening import ProxyScreen
from winnow.service.search_spec import Objective


@dataclass(eq=False)
class RequeuedTrial:
    """A trial rebuilt from the store and still running: Optuna hands out ``Trial`` objects
    (whose ``report`` records an intermediate value) only from ``study.ask()``, while this one
    was added with ``study.add_trial``; its intermediate value goes to the study's storage (the
    engine's own ``SamplerViewStorage``) by the storage's public API, as ``Trial.report`` does."""

    storage: BaseStorage
    trial_id: int

    def report(self, value: float, step: int) -> None:
        self.storage.set_trial_intermediate_value(self.trial_id, int(step), float(value))


@dataclass
class Tracked(Proposal):
    """What the engine holds for one candidate of the search. Equal states compare equal
    without the links to the live study and the timings."""

    params: dict[str, Any] = field(default_factory=dict)
    distributions: dict[str, Any] = field(default_factory=dict)
    optuna_number: int | None = field(default=None, compare=False)
    # what reports an intermediate value (the asked ``optuna.trial.Trial``, or a RequeuedTrial)
    trial: optuna.trial.Trial | RequeuedTrial | None = field(default=None, compare=False)
    told: bool = False
    overhead: float = field(default=0.0, compare=False)  # engine seconds, evaluations excluded
    sampling: float = field(default=0.0, compare=False)  # of which the sampler's ask


def fresh_counts() -> dict[str, int]:
    """``readout.PROGRESS_COUNTS`` and ``proxy`` (proxy runs)."""
    return dict(
        trained=0, candidates=0, epochs=0, proposals=0, cache_hits=0, proxy=0, pruned=0, failed=0
    )


@dataclass
class SearchState:
    """See the module docstring. ``completed`` holds top-rung (or reused) objective values by
    candidate number; ``requeued`` is ``(candidate, rung, row id or None)`` to train first;
    ``unscreened`` the candidates (their proxy scores in ``scores``) that passed the proxy
    screen but were never judged by the supernet stage, to send through it first."""

    tracked: dict[int, Tracked] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=fresh_counts)
    completed: dict[int, list[float]] = field(default_factory=dict)
    requeued: list[tuple[Tracked, int, int | None]] = field(default_factory=list)
    unscreened: list[Tracked] = field(default_factory=list)
    device_seconds: float = 0.0
    hypervolume: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list, compare=False)

    def points(self) -> list[list[float]]:
        return list(self.completed.values())

    @classmethod
    def from_rows(
        cls,
        rows: list[TrialRecord],
        space: SearchSpace,
        objectives: list[Objective],
        ladder: SuccessiveHalving,
        screen: ProxyScreen | None,
        study: optuna.Study,
        storage: BaseStorage,
        supernet: bool = False,
        starts: Sequence[int] = (),
    ) -> SearchState:
        """The state of a search from its stored rows; ``ladder``, ``screen`` and ``study``
        (whose storage is ``storage``) are fresh ones of its spec and are filled in too;
        ``supernet``: whether the spec has a supernet stage; ``starts``: the epoch each rung
        starts from (``readout.rung_starts``), for rows that do not say what they ran."""
        rebuild = _Rebuild(cls(), objectives, ladder, screen, study, storage)
        rebuild.supernet, rebuild.starts = supernet, list(starts)
        ordered = sorted(rows, key=lambda r: (r.number, r.id))
        for number, group in groupby(ordered, key=lambda r: r.number):
            rebuild.candidate(number, list(group), space)
        rebuild.state.hypervolume = search_hypervolume(objectives, rebuild.state.points())
        return rebuild.state


def optuna_params(space: SearchSpace, candidate_json: str) -> tuple[Candidate, dict, dict]:
    """A stored candidate and the Optuna params and distributions that propose it: the params
    its rows keep in ``params_json``, with the distributions only the space knows (both from
    ``SearchSpace.to_optuna``, which checks the candidate is in the space). What the restore
    adds to a fresh study (``importance.path_params`` keys the same by decision path)."""
    candidate = Candidate.from_json(candidate_json)
    params, distributions = space.to_optuna(candidate)
    return candidate, params, distributions


class _Rebuild:
    """Replays one candidate's rows at a time into a state (see the module docstring)."""

    def __init__(self, state, objectives, ladder, screen, study, storage) -> None:
        self.state, self.objectives, self.ladder, self.screen = state, objectives, ladder, screen
        self.study, self.storage = study, storage
        self.supernet = False  # whether a passed proxy row is owed a supernet stage's judgement
        self.starts: list[int] = []  # readout.rung_starts

    def candidate(self, number: int, rows: list[TrialRecord], space: SearchSpace) -> None:
        candidate, params, distributions = optuna_params(space, rows[0].candidate)
        structural = rows[0].structural_hash or structural_hash(candidate)
        tracked = Tracked(number, candidate, structural, params=params, distributions=distributions)
        tracked.functional = next((r.functional_hash for r in rows if r.functional_hash), None)
        self.state.tracked[number] = tracked
        self.state.counts["proposals"] += 1
        self.add_to_study(tracked, *self.replay(tracked, rows))

    def replay(self, tracked: Tracked, rows: list[TrialRecord]):
        """Apply one candidate's rows; returns its sampler state, values and intermediate."""
        state, values, intermediate = TrialState.RUNNING, None, None
        needs_training, last_screen = False, None
        for row in rows:
            metrics = row.metrics
            if confirm_seed(row.stage) is not None:  # after the budget: ``confirmation``'s
                if row.status in (Status.FAILED, Status.PRUNED):
                    self.state.counts[row.status] += 1
                continue
            if row.stage != "train":  # a screening stage: proxy (or supernet)
                state, needs_training = self.screening(tracked, row, metrics)
                last_screen = row
                continue
            needs_training = False
            if row.status in (Status.QUEUED, Status.RUNNING):
                self.state.requeued.append((tracked, row.rung, row.id))
                if row.rung > 0:  # a promotion cut short: re-queued, never promoted again
                    self.ladder.mark_promoted(row.rung - 1, tracked.number)
                state = TrialState.RUNNING
                continue
            state, values, intermediate = self.train(tracked, row, metrics)
        if needs_training and self.supernet and last_screen.stage == "proxy":
            # stopped between the screen and the supernet stage: it has not been judged there
            tracked.scores = TrialResult(Status.OK, dict(last_screen.metrics))
            self.state.unscreened.append(tracked)
        elif needs_training:
            self.state.requeued.append((tracked, 0, None))
        return state, values, intermediate

    def screening(self, tracked: Tracked, row: TrialRecord, metrics: dict):
        if (
            row.stage == "proxy"
            and self.screen is not None
            and row.status in (Status.OK, Status.PRUNED)
        ):
            proxies = self.screen.settings.proxies
            self.screen.add(tracked.number, {p: metrics.get(f"proxy.{p}") for p in proxies})
        if row.status == Status.FAILED:
            self.state.counts["failed"] += 1
            return TrialState.FAIL, False
        if row.status == Status.PRUNED:
            self.state.counts["pruned"] += 1
            return TrialState.PRUNED, False
        return TrialState.RUNNING, True

    def train(self, tracked: Tracked, row: TrialRecord, metrics: dict):
        counts = self.state.counts
        if row.reused:
            counts["cache_hits"] += 1
            if row.status == Status.PRUNED:  # it violated this search's constraints
                counts["pruned"] += 1
                return TrialState.PRUNED, None, None
            values = objective_values(self.objectives, metrics)
            self.state.completed[tracked.number] = values
            return TrialState.COMPLETE, values, None
        counts["trained"] += 1
        counts["candidates"] += 1 if row.rung == 0 else 0
        start = self.starts[row.rung] if 0 <= row.rung < len(self.starts) else 0
        counts["epochs"] += run_epochs(metrics.get("epochs_run"), row.epochs, start)
        self.state.device_seconds += row.seconds
        if row.status in (Status.FAILED, Status.PRUNED):
            counts[row.status] += 1
            return TrialState.FAIL if row.status == Status.FAILED else TrialState.PRUNED, None, None
        if row.rung > 0:
            self.ladder.mark_promoted(row.rung - 1, tracked.number)
        if self.screen is not None and row.rung == 0:
            self.screen.observe(tracked.number, metrics)
        values = objective_values(self.objectives, metrics)
        if row.rung == self.ladder.top:
            self.state.completed[tracked.number] = values
            return TrialState.COMPLETE, values, None
        self.ladder.record(row.rung, tracked.number, values)
        return TrialState.PRUNED, None, (self.ladder.rungs[row.rung], values[0])

    def add_to_study(self, tracked: Tracked, state, values, intermediate) -> None:
        single = len(self.objectives) == 1
        trial = create_trial(
            params=tracked.params,
            distributions=tracked.distributions,
            state=state,
            values=values if state == TrialState.COMPLETE else None,
            intermediate_values={intermediate[0]: intermediate[1]}
            if intermediate and single
            else None,
        )
        self.study.add_trial(trial)
        number = self.study.trials[-1].number  # the newest is never hidden (SamplerViewStorage)
        tracked.optuna_number, tracked.told = number, state != TrialState.RUNNING
        if not tracked.told:
            study_id = self.storage.get_study_id_from_name(self.study.study_name)
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, number)
            tracked.trial = RequeuedTrial(self.storage, trial_id)


@dataclass
class SearchReport:
    search_id: str
    status: str
    trained: int  # training runs (each rung's is one)
    candidates: int  # candidates sent to training (what budget.max_trials counts)
    epochs: int  # training epochs of every run (what budget.max_epochs counts)
    proposals: int
    cache_hits: int
    proxy_evaluations: int
    pruned: int
    failed: int
    front: list[dict[str, Any]]
    hypervolume: float
    front_epochs: int | None  # the front's fidelity: the top rung's, or the highest reached
    top_epochs: int
    history: list[dict[str, float]] = field(default_factory=list)
    overhead_ms_median: float = 0.0
    wall_seconds: float = 0.0
    # each tier's Kendall tau against the completed trials (``evidence_ladder``; cascades only)
    evidence_ladder: list[dict[str, Any]] = field(default_factory=list)
