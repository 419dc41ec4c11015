"""What a search shows: its progress, Pareto front and exported recipes.

Two parts. The first is pure functions of completed objective values and counters (best values,
the front, the hypervolume and its history, the progress counters): the one implementation that
the engine (live), the row views below and the dashboard call. The second reads the store's
records alone, so the service answers the same for a live search, a finished one, and one whose
server restarted.

A *trained* trial is a candidate with a training row that succeeded (``ok``) or was answered
from the equivalence cache (``duplicate``), at any rung (``TrialRecord.trained``); a *completed*
one has such a row at the top rung (``TrialRecord.completed``). The front is made of the
completed trials; while none is, of the trained results at the highest rung reached, and it
says which fidelity it is at (:func:`front_trials`; one fidelity, never a mix). Any trained
trial can be exported. Trial ids are candidate numbers within the search.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

import winnow
from winnow.records import SearchRecord, Status, TrialRecord, epochs_text
from winnow.search_space.archs import ArchitectureView, describe
from winnow.search_space.candidate import Candidate
from winnow.search_space.spec import SearchSpace
from winnow.search_space.specfile import validation_problems
from winnow.service.engine.confirmed import (
    confirm_counts,
    confirmed_figures,
    means,
    on_confirmed_front,
    recipe_figures,
    recipe_identity,
    row_identity,
    run_statuses,
    shared_figures,
)
from winnow.service.engine.evidence_ladder import FITS, EvidenceLadder
from winnow.service.engine.pareto import (
    front_mask,
    hypervolume,
    pareto_front,
    reference_point,
    search_hypervolume,
)
from winnow.service.export.recipe import FORMAT as RECIPE_FORMAT
from winnow.service.search_spec import Budget, Objective, SearchSpec, Strategy, valid_sections

# --- pure views of completed values and counters ----------------------------------------------

# trained: training runs started (each rung's is one); candidates: the candidates sent to
# training (what ``budget.max_trials`` counts); epochs: training epochs of every run started
# (what ``budget.max_epochs`` counts).
PROGRESS_COUNTS = ("trained", "candidates", "epochs", "proposals", "cache_hits", "pruned", "failed")


def objective_values(objectives: Sequence[Objective], metrics: Mapping[str, Any]) -> list[float]:
    """A result's point: its value of each objective, in the spec's order."""
    return [float(metrics[o.name]) for o in objectives]


def best_values(
    objectives: Sequence[Objective], points: Sequence[Sequence[float]]
) -> dict[str, float]:
    """Each objective's best value over ``points`` (empty without points)."""
    if not len(points):
        return {}
    values = np.asarray(points, dtype=np.float64)
    return {
        o.name: float(values[:, k].max() if o.direction == "maximize" else values[:, k].min())
        for k, o in enumerate(objectives)
    }


class GrowingFront:
    """The front and hypervolume of completed points as they arrive: :meth:`add` returns
    ``pareto.search_hypervolume`` of the points so far, recomputed only when the new point joins the
    front or the reference point moves (a minimised objective without a ``reference`` uses 1.1 x
    its largest value so far); otherwise it cannot change."""

    def __init__(self, objectives: Sequence[Objective]) -> None:
        self.objectives = list(objectives)
        self.directions = [o.direction for o in objectives]
        self.front: list[list[float]] = []
        self.hypervolume = 0.0
        self._largest: list[float] | None = None  # per objective: what the reference depends on
        self._reference: list[float] | None = None

    def add(self, point: Sequence[float]) -> float:
        point = [float(v) for v in point]
        largest = self._largest or point
        self._largest = [max(a, b) for a, b in zip(largest, point, strict=True)]
        reference = reference_point(self.objectives, [self._largest])
        candidates = [*self.front, point]
        flags = front_mask(candidates, self.directions)
        if flags[-1] or reference != self._reference:
            self.front = [c for c, keep in zip(candidates, flags, strict=True) if keep]
            self._reference = reference
            self.hypervolume = hypervolume(self.front, self.directions, reference)
        return self.hypervolume


def hypervolume_history(
    objectives: Sequence[Objective], points: Sequence[Sequence[float]]
) -> list[float]:
    """The hypervolume after each completed point, in completion order."""
    growing = GrowingFront(objectives)
    return [growing.add(point) for point in points]


def rung_starts(strategy: Strategy) -> list[int]:
    """The epoch each rung's run starts from: its last rung's end when rungs continue
    (``strategy.continue_rungs``), else 0 (each rung trains from scratch)."""
    rungs = strategy.rungs
    return [0, *rungs[:-1]] if strategy.continue_rungs else [0] * len(rungs)


def run_epochs(epochs_run: Any, epochs: int, start: int = 0) -> int:
    """The epochs one training run trained: its row's ``metrics.epochs_run`` (what the worker
    ran: a run resumed mid-rung, or one that found no checkpoint, says so), else, for a row
    without it (written by an older winnow), its rung's epochs less the epoch the rung starts
    from (``start``: :func:`rung_starts`). Every count of epochs (the stored views, a resumed
    engine's) goes through it."""
    return int(epochs_run) if epochs_run is not None else int(epochs) - start


def tally(
    groups: Iterable[tuple[Any, ...]],
    proposals: int,
    starts: Sequence[int] = (),
) -> dict[str, int]:
    """The progress counters from ``(stage, epochs, rung, status, reused, rows[, epochs_run,
    rows_with_epochs_run])`` groups of stored trials: trained counts training rows that ran (a
    reused result trained nothing), candidates those of the first rung (every candidate sent
    to training has one), epochs the sum of their ``metrics.epochs_run`` (``epochs_run``: the
    group's sum over the ``rows_with_epochs_run`` rows that have it), the rows without it
    counted by :func:`run_epochs` (``starts``: :func:`rung_starts`), cache hits the reused
    rows, pruned and failed the rows of those statuses at any stage."""
    counts = dict.fromkeys(PROGRESS_COUNTS, 0) | {"proposals": proposals}
    for stage, epochs, rung, status, reused, rows, *measured in groups:
        rows, ran = int(rows), stage == "train" and not reused
        ran_sum, ran_rows = (int(measured[0] or 0), int(measured[1])) if measured else (0, 0)
        start = starts[int(rung)] if ran and 0 <= int(rung) < len(starts) else 0
        counts["trained"] += rows if ran else 0
        counts["candidates"] += rows if ran and int(rung) == 0 else 0
        unmeasured = (rows - ran_rows) * run_epochs(None, epochs, start)
        counts["epochs"] += ran_sum + unmeasured if ran else 0
        counts["cache_hits"] += rows if reused else 0
        counts["pruned"] += rows if status == "pruned" else 0
        counts["failed"] += rows if status == "failed" else 0
    return counts


@dataclass(frozen=True)
class FrontPoint:
    """A front point as it is shown: its trial, its values (a confirmed one's: its means),
    its confirmation figures (None: not confirmed) and whether its means are on the front of
    the confirmed means (None: not confirmed)."""

    index: int  # in the points given to :func:`ranked_front`
    trial_id: int
    values: list[float]
    confirmed: dict[str, Any] | None = None
    on_confirmed_front: bool | None = None


def ranked_front(
    objectives: Sequence[Objective],
    points: Sequence[Sequence[float]],
    trial_ids: Sequence[int],
    confirmed: Mapping[int, dict[str, Any]] | None = None,
) -> list[FrontPoint]:
    """The front of ``points`` in the order every reader shows it, best first: the confirmed
    recipes still on the confirmed front (``confirmed``: trial id -> its figures,
    ``confirmed.recipe_figures``), then the unconfirmed points, then the confirmed ones that
    fell off; within each, by the first objective (a confirmed one's mean), the earliest
    trial first among equals. Its first point is the front's leader and what ``recipe``
    exports by default: a lucky single run never outranks a confirmed mean."""
    front = pareto_front(points, [o.direction for o in objectives])
    figures = {} if confirmed is None else confirmed
    mine = {trial_ids[i]: figures[trial_ids[i]] for i in front if trial_ids[i] in figures}
    kept = on_confirmed_front(objectives, mine)
    ranked = []
    for i in front:
        number, found = int(trial_ids[i]), mine.get(trial_ids[i])
        values = [float(v) for v in points[i]] if found is None else means(objectives, found)
        ranked.append(FrontPoint(i, number, values, found, kept.get(number)))
    sign = -1 if objectives and objectives[0].direction == "maximize" else 1
    ranked.sort(
        key=lambda p: (
            p.on_confirmed_front is False,
            p.confirmed is None,
            sign * p.values[0] if p.values else 0.0,
            p.trial_id,
        )
    )
    return ranked


def front_leader(
    objectives: Sequence[Objective],
    points: Sequence[Sequence[float]],
    trial_ids: Sequence[int],
    confirmed: Mapping[int, dict[str, Any]] | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """The front's size and its leader: the first of :func:`ranked_front` (the trial
    ``recipe`` exports by default), as ``{"trial_id", "values": {objective: value}}`` (None
    without points); a confirmed leader's values are its means, and it carries what
    :func:`confirmed_point` adds to a point (``confirmed`` with its ``seeds``, ``single_run``,
    ``on_confirmed_front``), so that every reader can say the figure is a mean over N seeds.
    Unlike :func:`best_values`, one trial's values: each objective's best usually comes from
    a different trial."""
    ranked = ranked_front(objectives, points, trial_ids, confirmed)
    if not ranked:
        return 0, None
    first = ranked[0]
    values = {o.name: first.values[k] for k, o in enumerate(objectives)}
    leader: dict[str, Any] = {"trial_id": first.trial_id, "values": values}
    if first.confirmed is not None:
        single = {o.name: float(points[first.index][k]) for k, o in enumerate(objectives)}
        leader |= {"confirmed": first.confirmed, "single_run": single}
        leader["on_confirmed_front"] = first.on_confirmed_front
    return len(ranked), leader


def result_recipes(trained: Mapping[str, Iterable[Any]]) -> dict[int, str]:
    """Each trained result's recipe (``confirmed.recipe_identity``) by candidate number, from
    the columns of ``reads.trained`` (``number``, ``functional_hash``, ``structural_hash``,
    ``candidate_key``), for :func:`listed_confirmation`."""
    names = ("number", "functional_hash", "structural_hash", "candidate_key")
    columns = zip(*(trained[name] for name in names), strict=True)
    return {int(n): recipe_identity(f, s, k) for n, f, s, k in columns}


def listed_confirmation(
    spec: SearchSpec,
    runs: Sequence[TrialRecord],
    trained: Mapping[str, Iterable[Any]],
    trial_ids: Sequence[int],
    points: Sequence[Sequence[float]],
) -> tuple[tuple[int, int, int], dict[int, dict[str, Any]] | None]:
    """The confirmation's ``(runs, done, failed)`` and the front's figures (``confirmed`` of
    :func:`progress_view`) for readers that hold columns, not a search's every row (a listing,
    the dashboard): ``runs``: the search's confirmation rows (``reads.confirmation_runs``);
    ``trained``: the columns of ``reads.trained``, whose recipes (:func:`result_recipes`) let a
    twin of a confirmed recipe share its figures; ``trial_ids``, ``points``: the front's
    fidelity's results (:func:`front_points`). ``((0, 0, 0), None)`` without confirmation,
    before any recipe is read."""
    if spec.strategy.confirm is None or not runs:
        return (0, 0, 0), None
    confirming = confirm_counts(run_statuses(runs))
    everyone = result_recipes(trained) | {row.number: row_identity(row) for row in runs}
    figures = shared_figures(confirmed_figures(spec, runs), everyone, trial_ids)
    return confirming, figures


def progress_view(
    counts: Mapping[str, int],
    max_trials: int,
    objectives: Sequence[Objective],
    points: Sequence[Sequence[float]],
    hypervolume_value: float | None = None,
    trial_ids: Sequence[int] | None = None,
    *,
    front_epochs: int | None = None,
    top_epochs: int | None = None,
    evidence_ladder: Sequence[Mapping[str, Any]] = (),
    confirming: tuple[int, int, int] = (0, 0, 0),
    confirmed: Mapping[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What watchers see of a search: the counters, the budget, the hypervolume (computed from
    ``points`` unless given; ``points`` are the front's fidelity's, :func:`front_rung`), each
    objective's best value on the front (``best``: per objective, from different trials), the
    front's size and its leader (:func:`front_leader`; ``trial_ids`` are the points' trials,
    their positions without it), the front's fidelity (``front_epochs``, below
    ``top_epochs`` when no trial completed: ``records.front_note``) and the evidence ladder
    (``evidence_ladder.EvidenceLadder.measure``: each tier's Kendall tau against the completed
    trials; empty for a plain strategy, and in a listing's progress) and the confirmation's
    ``(runs, done, failed)`` (``confirmed.confirm_counts``: ``confirm_runs``,
    ``confirm_done``, ``confirm_failed``); ``confirmed``: the front's confirmation figures by
    trial, which choose the leader."""
    if hypervolume_value is None:
        hypervolume_value = search_hypervolume(objectives, points)
    ids = range(len(points)) if trial_ids is None else trial_ids
    front_size, leader = front_leader(objectives, points, ids, confirmed)
    return {
        **{k: counts[k] for k in PROGRESS_COUNTS},
        "max_trials": max_trials,
        "hypervolume": hypervolume_value,
        "best": best_values(objectives, points),
        "front_size": front_size,
        "leader": leader,
        "front_epochs": front_epochs,
        "top_epochs": top_epochs,
        "evidence_ladder": [dict(tier) for tier in evidence_ladder],
        "confirm_runs": confirming[0],
        "confirm_done": confirming[1],
        "confirm_failed": confirming[2],
    }


def front_rung(results_by_rung: Sequence[Sized]) -> int | None:
    """The rung the front is made of: the highest one with a trained result (the top rung once
    a trial completed), or None before any result. Results of different fidelities are never
    compared: a one-epoch accuracy does not dominate a nine-epoch one."""
    reached = [rung for rung, results in enumerate(results_by_rung) if len(results)]
    return reached[-1] if reached else None


# --- views of the stored rows -----------------------------------------------------------------


class UnknownTrialError(LookupError):
    """An export names a trial that has no trained result in the search (the message says
    why), or the search has none yet."""


class SpecNoLongerValidError(ValueError):
    """A stored search's spec that today's code no longer accepts (written by an older
    winnow) where the full spec is needed: resuming it, exporting its recipe."""


@dataclass(frozen=True)
class StoredSpec:
    """A stored search's spec as this winnow reads it. ``problem`` is None when the spec still
    validates (``spec`` is it); otherwise it says why not, and ``spec`` is a stand-in made of
    the sections that still validate, enough for the views of this module: a budget whose
    ``max_trials`` is the stored number, and no objectives (so no front) unless both the
    objectives and the strategy's rungs still validate."""

    spec: SearchSpec
    problem: str | None = None

    @property
    def note(self) -> str | None:
        """What a reader shows of a spec that no longer validates (None when it does)."""
        return None if self.problem is None else f"spec no longer valid: {self.problem}"

    def valid(self) -> SearchSpec:
        """The spec; ``SpecNoLongerValidError`` when it no longer validates."""
        if self.problem is not None:
            raise SpecNoLongerValidError(self.note)
        return self.spec


def stored_spec(spec_json: str) -> StoredSpec:
    """The one lenient read of a stored search's ``spec_json`` (every reader of stored searches
    uses it: a search stored by an older winnow stays readable and cancellable when its spec no
    longer parses)."""
    spec_json = _stored_defaults(spec_json)
    try:
        return StoredSpec(SearchSpec.model_validate_json(spec_json))
    except ValidationError as error:  # text that is not JSON included
        problems = validation_problems(error, SearchSpec)
        problem = "; ".join(f"field {field or 'spec'!r}: {m}" for field, m in problems)
    try:
        data = json.loads(spec_json)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's stack
        data = None
    return StoredSpec(_stand_in(data if isinstance(data, dict) else {}), problem)


def _stored_defaults(spec_json: str) -> str:
    """``spec_json`` through :func:`stored_defaults` (text that is not JSON left as it is)."""
    try:
        data = json.loads(spec_json)
    except (ValueError, RecursionError):
        return spec_json
    changed = stored_defaults(data)
    return spec_json if changed is data else json.dumps(changed)


def stored_defaults(data: Any) -> Any:
    """A stored spec (parsed JSON) with the values a field's absence meant when it was stored,
    where today's default differs: a strategy stored before ``continue_rungs`` existed trained
    every rung from scratch (``false``; a new spec's default is true), and keeps doing so when
    resumed, so its epoch counts stay those it stored. ``data`` itself when nothing differs."""
    strategy = data.get("strategy", {}) if isinstance(data, dict) else None
    if not isinstance(strategy, dict) or "continue_rungs" in strategy:
        return data
    return {**data, "strategy": {**strategy, "continue_rungs": False}}


def _stand_in(data: dict[str, Any]) -> SearchSpec:
    """``StoredSpec.spec`` of a spec that no longer validates (see ``StoredSpec``)."""
    sections = valid_sections(data)
    strategy = sections.get("strategy")
    if "budget" not in sections:
        raw = data.get("budget")
        trials = raw.get("max_trials") if isinstance(raw, dict) else None
        trials = trials if isinstance(trials, int) and not isinstance(trials, bool) else 0
        sections["budget"] = Budget.model_construct(max_trials=max(trials, 0))
    if strategy is None or "objectives" not in sections:
        sections["objectives"] = []  # no front: the results cannot be placed on one
        sections["strategy"] = Strategy.model_construct(rungs=[0])  # 0: no fidelity known
    return SearchSpec.model_construct(**sections)


@dataclass(frozen=True)
class Completed:
    """A trained result (``TrialRecord.trained``) with its objective values."""

    trial_id: int
    values: list[float]
    row: TrialRecord


def decisions(space: SearchSpace, candidate_json: str) -> dict[str, Any]:
    """A stored candidate's decided values by decision path (``SearchSpace.flatten``: one
    ``optimizer.lr`` whichever optimizer, as importance names it), for plotting parameters
    against objectives; empty when the candidate no longer parses."""
    try:
        return space.flatten(Candidate.from_json(candidate_json))
    except ValueError:  # pydantic's ValidationError: an older winnow's row
        return {}


def failure_summary(rows: Iterable[TrialRecord]) -> str | None:
    """Why a search that ran to its end has nothing to show, or None when some trial trained
    successfully (at any rung) or was answered from the cache: the commonest error of the
    failed rows with its count, else how many candidates were screened out."""
    rows = list(rows)
    if any(r.trained for r in rows):
        return None
    errors = Counter(r.error or "no error recorded" for r in rows if r.status == Status.FAILED)
    if errors:
        error, count = errors.most_common(1)[0]
        failed = sum(errors.values())
        return f"no trial trained successfully; {count} of {failed} failed rows: {error}"
    pruned = sum(1 for r in rows if r.status == Status.PRUNED)
    return f"no trial trained successfully ({pruned} candidates pruned, none trained)"


def completed_point(
    objectives: Sequence[Objective], metrics: Mapping[str, Any]
) -> list[float] | None:
    """A trained result's point, or None when it lacks an objective's value (such a result
    counts as trained but is on no front) or no objective is known (``StoredSpec``)."""
    if not objectives or any(metrics.get(o.name) is None for o in objectives):
        return None
    return objective_values(objectives, metrics)


def trained_trials(spec: SearchSpec, rows: list[TrialRecord]) -> list[Completed]:
    """The search's trained results at every rung, in completion order (see the module
    docstring)."""
    done = []
    for row in rows:
        point = completed_point(spec.objectives, row.metrics) if row.trained else None
        if point is not None:
            done.append(Completed(row.number, point, row))
    return done


def completed_trials(spec: SearchSpec, rows: list[TrialRecord]) -> list[Completed]:
    """The search's completed trials (trained at the top rung) in completion order."""
    top = len(spec.strategy.rungs) - 1
    return [c for c in trained_trials(spec, rows) if c.row.rung == top]


def front_trials(spec: SearchSpec, rows: list[TrialRecord]) -> tuple[int | None, list[Completed]]:
    """The rung the front is made of (:func:`front_rung`) and the trained results at it."""
    trained = trained_trials(spec, rows)
    by_rung: list[list[Completed]] = [[] for _ in spec.strategy.rungs]
    for result in trained:
        by_rung[result.row.rung].append(result)
    rung = front_rung(by_rung)
    return rung, ([] if rung is None else by_rung[rung])


def front_points(
    spec: SearchSpec, results: Iterable[tuple[int, int, Mapping[str, Any]]]
) -> tuple[int | None, list[int], list[list[float]]]:
    """The front's rung, trial ids and points from ``(trial_id, rung, metrics)`` of trained
    results: :func:`front_trials`'s choice (results without an objective's value set aside
    first), for callers that hold columns, such as a listing's aggregate reads."""
    by_rung: list[tuple[list[int], list[list[float]]]] = [([], []) for _ in spec.strategy.rungs]
    for trial_id, rung, metrics in results:
        point = completed_point(spec.objectives, metrics)
        if point is not None:
            by_rung[int(rung)][0].append(int(trial_id))
            by_rung[int(rung)][1].append(point)
    rung = front_rung([ids for ids, _ in by_rung])
    return (None, [], []) if rung is None else (rung, *by_rung[rung])


def stored_progress(
    spec: SearchSpec,
    groups: Iterable[tuple[str, int, int, str, bool, int]],
    proposals: int,
    front: tuple[int | None, Sequence[int], Sequence[Sequence[float]]],
    ladder: Sequence[Mapping[str, Any]] = (),
    confirming: tuple[int, int, int] = (0, 0, 0),
    confirmed: Mapping[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A stored search's progress from its ``tally`` groups, proposals and front (rung, trial
    ids, points): what ``progress`` computes from rows, and a listing from aggregate reads of
    a page (without the evidence ``ladder``, which needs the rows; with the confirmation's
    ``confirming`` and ``confirmed`` of :func:`listed_confirmation`, which reads only the
    confirmation rows)."""
    rung, ids, points = front
    rungs = spec.strategy.rungs
    return progress_view(
        tally(groups, proposals, rung_starts(spec.strategy)),
        spec.budget.max_trials,
        spec.objectives,
        points,
        trial_ids=ids,
        front_epochs=None if rung is None else rungs[rung],
        top_epochs=rungs[-1],
        evidence_ladder=ladder,
        confirming=confirming,
        confirmed=confirmed,
    )


def progress(spec: SearchSpec, rows: list[TrialRecord]) -> dict[str, Any]:
    """The same counters as ``Engine.progress``, from rows."""
    groups = (
        (row.stage, row.epochs, row.rung, row.status, row.reused, 1, *_measured(row))
        for row in rows
    )
    rung, front = front_trials(spec, rows)
    points, ids = [c.values for c in front], [c.trial_id for c in front]
    front_view, proposals = (rung, ids, points), len({row.number for row in rows})
    ladder = EvidenceLadder.from_rows(spec, rows)
    measured = [] if ladder is None else ladder.measure()
    confirming, confirmed = (0, 0, 0), None
    if spec.strategy.confirm is not None:
        confirming = confirm_counts(run_statuses(rows))
        confirmed = recipe_figures(spec, rows, ids)
    return stored_progress(spec, groups, proposals, front_view, measured, confirming, confirmed)


def _measured(row: TrialRecord) -> tuple[int, int]:
    """``(epochs_run, 1)`` of a row whose metrics say, else ``(0, 0)`` (a ``tally`` group's)."""
    ran = row.metrics.get("epochs_run")
    return (0, 0) if ran is None else (int(ran), 1)


def is_screen_flag(metric: str) -> bool:
    """A screening row's flag of its stage's fit (whether a calibrated ensemble scored it, which
    features that ensemble zeroed: ``evidence_ladder.FITS``), not a score: the dashboard ranks
    nothing by it."""
    return any(metric == f.calibrated or metric.startswith(f.zero_weight) for f in FITS.values())


def evidence_ladder(
    spec: SearchSpec,
    completed: Iterable[tuple[int, Mapping[str, Any]]],
    scored: Iterable[tuple[int, str, Mapping[str, Any]]],
) -> list[dict[str, Any]]:
    """The evidence ladder (``Engine.progress``'s ``evidence_ladder``) from ``(number,
    metrics)`` of the completed trials and ``(number, stage, metrics)`` of the screening rows:
    for readers that hold columns, such as the dashboard's reads."""
    ladder = EvidenceLadder.from_results(spec, completed, scored)
    return [] if ladder is None else ladder.measure()


def pareto(spec: SearchSpec, rows: list[TrialRecord]) -> dict[str, Any]:
    """``{"objectives", "points": [{"trial_id", objective values..., "candidate"}],
    "hypervolume", "epochs", "top_epochs"}``: the front at ``epochs`` (the fidelity of
    :func:`front_trials`, None when empty; below ``top_epochs`` when no trial completed), in
    the order of :func:`ranked_front` (confirmed points on the confirmed front, by their
    means, then unconfirmed ones, then those that fell off once confirmed:
    :func:`confirmed_point`); the hypervolume stays that of the single runs (the measure
    every search has, comparable across searches)."""
    rung, done = front_trials(spec, rows)
    points, ids = [c.values for c in done], [c.trial_id for c in done]
    confirmed = None
    if spec.strategy.confirm is not None:  # a twin of a confirmed recipe shares its figures
        confirmed = recipe_figures(spec, rows, ids)
    ranked = ranked_front(spec.objectives, points, ids, confirmed)
    return {
        "objectives": [o.name for o in spec.objectives],
        "points": [confirmed_point(spec, done[p.index], p) for p in ranked],
        "hypervolume": search_hypervolume(spec.objectives, points),
        "epochs": None if rung is None else spec.strategy.rungs[rung],
        "top_epochs": spec.strategy.rungs[-1],
    }


def confirmed_point(spec: SearchSpec, result: Completed, ranked: FrontPoint) -> dict[str, Any]:
    """A front point: ``{"trial_id", objective values..., "candidate"}``; a confirmed one
    (``confirmed.confirmed_figures``) has its means as its values, its figures (``confirmed``:
    ``{objective: {"mean", "std", "lower"}, "seeds"}``), the run that put it on the front
    (``single_run``) and ``on_confirmed_front``: whether its means are on the front of the
    confirmed recipes' means (False: it fell off once confirmed)."""
    single = {o.name: result.values[k] for k, o in enumerate(spec.objectives)}
    shown = {o.name: ranked.values[k] for k, o in enumerate(spec.objectives)}
    point = {"trial_id": result.trial_id, **shown, "candidate": json.loads(result.row.candidate)}
    if ranked.confirmed is None:
        return point
    extra = {"confirmed": ranked.confirmed, "single_run": single}
    return point | extra | {"on_confirmed_front": ranked.on_confirmed_front}


def recipe(search: SearchRecord, rows: list[TrialRecord], trial_id: int | None = None) -> dict:
    """The canonical candidate of a trained trial with everything needed to train it again:
    task, epochs (of its highest trained rung), seed, and what it scored (with
    ``confirmed``: its confirmation runs' figures). Without ``trial_id``: the front's best on
    the first objective (the front of :func:`front_trials`, below the top rung when no trial
    completed; by the confirmed means, among those still on the front, once confirmed)."""
    spec = stored_spec(search.spec_json).valid()  # the recipe retrains: it needs the whole spec
    if trial_id is None:
        points = pareto(spec, rows)["points"]
        if not points:
            when = "" if search.ended else " yet"
            raise UnknownTrialError(
                f"search {search.id} ({search.status}) has no trained trial to export{when}: "
                + (failure_summary(rows) or "none has finished training")
            )
        trial_id = points[0]["trial_id"]
    trained = [c for c in trained_trials(spec, rows) if c.trial_id == trial_id]
    if not trained:
        raise UnknownTrialError(_why_not_trained(search, rows, trial_id))
    row = max(trained, key=lambda c: c.row.rung).row
    confirmed = None
    if spec.strategy.confirm is not None:
        confirmed = recipe_figures(spec, rows, [trial_id]).get(trial_id)
    return {
        "format": RECIPE_FORMAT,
        "winnow_version": winnow.__version__,
        "search_id": search.id,
        "trial_id": trial_id,
        "candidate": json.loads(row.candidate),
        "training": {
            "task": spec.task.model_dump(mode="json", exclude_none=True),
            "epochs": row.epochs,
            "seed": spec.seed,
        },
        "metrics": row.metrics,
        # the confirmation runs' figures (``strategy.confirm``): what the metrics' run is worth
        **({"confirmed": confirmed} if confirmed is not None else {}),
        "hashes": {"structural": row.structural_hash, "functional": row.functional_hash},
        "artifacts": kept_artifacts(spec, row),  # the exporters' (``export.recipe.PRIVATE``)
    }


def kept_artifacts(spec: SearchSpec, row: TrialRecord) -> dict[str, str | None]:
    """The server's paths of what the search kept for the trial's row (``weights``), or, when
    nothing was kept, why not (``missing``): the ``weights`` exporter's error message."""
    if row.weights_path is not None:
        return {"weights": row.weights_path}
    trial, top = f"trial {row.number}'s weights were not kept", spec.strategy.rungs[-1]
    if row.reused:
        why = "its result was reused from an equal network trained before, not trained here"
    elif row.rung != len(spec.strategy.rungs) - 1:
        why = (
            f"it trained {epochs_text(row.epochs)}, and only completed trials "
            f"({epochs_text(top)}) keep them"
        )
    elif spec.keep_weights == 0:
        why = "the search kept none (keep_weights: 0); rerun it with keep_weights above 0"
    else:
        why = (
            f"only the top {spec.keep_weights} of the front are (keep_weights: "
            f"{spec.keep_weights}), on a server with an artifact folder (beside a SQLite "
            "database; PostgreSQL: winnow serve --artifacts DIR); rerun with a larger "
            "keep_weights, or export a trial that kept them (winnow pareto)"
        )
    return {"weights": None, "missing": f"{trial}: {why}"}


def _why_not_trained(search: SearchRecord, rows: list[TrialRecord], trial_id: int) -> str:
    """Why trial ``trial_id`` has no trained result: unknown, still running, failed, pruned."""
    mine = [r for r in rows if r.number == trial_id]
    name = f"trial {trial_id} of search {search.id}"
    if not mine:
        numbers = sorted({r.number for r in rows})
        known = f"trial ids 0 to {numbers[-1]}" if numbers else "no trials yet"
        return f"{name} does not exist ({known})"
    last = mine[-1]
    where = f"at rung {last.rung} ({epochs_text(last.epochs)})" if last.stage == "train" else ""
    where = where or f"at the {last.stage} stage"
    if last.status in (Status.QUEUED, Status.RUNNING):
        return f"{name} is still {last.status} {where}; export it when it has trained"
    if last.status == Status.FAILED:
        return f"{name} failed {where}: {last.error or 'no error recorded'}"
    if last.status == Status.PRUNED:
        return f"{name} was pruned {where} and never trained: {last.error or 'no reason recorded'}"
    return f"{name} has no trained result with every objective ({where})"


def architecture_view(arch: dict[str, Any]) -> ArchitectureView:
    """What the dashboard shows of a candidate's architecture: its family's ``describe`` (the
    dashboard reads through readout, not the search space)."""
    return describe(arch)
