"""Confirmed figures of a front (``strategy.confirm``): which recipes are confirmed, with which
seeds, and what their confirmation runs say. Pure functions of objective values and stored
rows: the engine (what to run) and ``readout`` (what the front shows) call the same ones.

A recipe's figures per objective are the ``mean``, the sample standard deviation (``std``,
n - 1) and ``lower``: the one-sided 95 % Student-t confidence bound on the bad side of the
mean (``scipy.stats.t``; ``mean - t(0.95, n-1) * std / sqrt(n)`` for an objective to maximise,
``mean + ...`` for one to minimise: the pessimistic figure either way). They come from the
confirmation runs alone: the run that put the recipe on the front was selected for being good
(the winner's curse), so counting it would bias the mean upwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from winnow.records import Status, TrialRecord, confirm_seed
from winnow.service.engine.pareto import crowding_distances, front_mask, pareto_front
from winnow.service.search_spec import Objective, SearchSpec

CONFIDENCE = 0.95  # of the one-sided bound ``lower``
SEED_SPACE = 2**32  # seeds are uint32 (``SearchSpec.seed``): the further seeds wrap around


def confirm_seeds(spec: SearchSpec) -> list[int]:
    """The confirmation runs' seeds: the spec's ``seed + 1``, ``+ 2``, ... (never its own)."""
    confirm = spec.strategy.confirm
    count = 0 if confirm is None else confirm.seeds
    return [(spec.seed + k) % SEED_SPACE for k in range(1, count + 1)]


def recipe_identity(functional: str | None, structural: str | None, key: str = "") -> str:
    """What makes two trials one recipe: the functional hash where it was computed, else the
    structural one (as ``evidence.result_key``, so the trials whose results reuse shares are
    one recipe); ``key`` (the candidate key) where neither is known."""
    return functional or (f"structural:{structural}" if structural else key)


def row_identity(row: TrialRecord) -> str:
    """A stored row's :func:`recipe_identity`."""
    return recipe_identity(row.functional_hash, row.structural_hash, row.candidate_key)


def to_confirm(
    spec: SearchSpec,
    trial_ids: Sequence[int],
    points: Sequence[Sequence[float]],
    recipes: Sequence[str],
) -> list[int]:
    """The trials to confirm: ``top_k`` recipes of the front of ``points`` (at one fidelity:
    ``readout.front_rung``), spread along it. A trial whose recipe (``recipes``: each trial's
    :func:`recipe_identity`) an earlier one on the front has, such as a reused result of an
    equivalent network, is the same recipe, confirmed once and taking no slot of its own
    (:func:`shared_figures` gives it the figures). First each objective's best recipe, in the
    spec's order (round-robin: one end per objective, the best of each, never the worst), then
    the rest by NSGA-II's crowding distance over the front's distinct recipes
    (``pareto.crowding_distances``, the one the rungs' promotions use): the most isolated
    first; ties by the first objective, then the earliest trial. With one objective, or
    ``top_k`` 1, that is the front's best on the first objective; with two, the front's two
    ends, then its middle; with three (accuracy, params, latency), the most accurate, the
    smallest and the fastest before any other, so that a front of accurate-but-large and
    small-but-rough recipes has both ends confirmed, not only its most accurate ``top_k``.
    (Crowding alone gives every end of every objective, worst ones included, an infinite
    distance, so with three objectives it would take the worst ends before the smallest.)"""
    confirm = spec.strategy.confirm
    if confirm is None or not len(points):
        return []
    front = pareto_front(points, spec.directions)
    sign = -1 if spec.objectives[0].direction == "maximize" else 1
    front.sort(key=lambda i: (sign * points[i][0], trial_ids[i]))
    chosen: dict[str, int] = {}  # recipe -> its first trial on the front, best first
    for i in front:
        chosen.setdefault(recipes[i], i)
    distinct = list(chosen.values())
    order = _best_ends(spec, [points[i] for i in distinct])
    crowding = crowding_distances([points[i] for i in distinct], spec.directions)
    rest = sorted((k for k in range(len(distinct)) if k not in order), key=lambda k: -crowding[k])
    return [int(trial_ids[distinct[k]]) for k in [*order, *rest][: confirm.top_k]]


def _best_ends(spec: SearchSpec, points: Sequence[Sequence[float]]) -> list[int]:
    """Each objective's best point (its first on a tie: ``points`` come best first on the
    first objective), in the spec's order, each point once."""
    ends: list[int] = []
    for k, objective in enumerate(spec.objectives):
        sign = -1 if objective.direction == "maximize" else 1
        best = min(range(len(points)), key=lambda j: (sign * points[j][k], j))
        if best not in ends:
            ends.append(best)
    return ends


Runs = Mapping[int, Mapping[int, Status]]  # each confirmed trial's runs: seed -> status


def confirm_counts(runs: Runs) -> tuple[int, int, int]:
    """``(runs, done, failed)`` of the front's confirmation: its planned runs, those that
    ended and those of them that failed or were pruned (``runs``: the statuses of the stored
    rows, :func:`run_statuses`); ``(0, 0, 0)`` before it began. The plan is what was stored
    when the confirmation began (``Confirmation.run`` writes a ``queued`` row for each of its
    runs first), never :func:`to_confirm` again: a resumed search runs, and every reader
    counts, the runs chosen then. (A search stored before those rows were written, stopped
    short, counts the runs it started.) The one count: ``readout.progress`` (from rows) and
    ``Confirmation.progress`` (live) call it."""
    statuses = [status for by_seed in runs.values() for status in by_seed.values()]
    ended = [s for s in statuses if s not in (Status.QUEUED, Status.RUNNING)]
    failed = [s for s in ended if s in (Status.FAILED, Status.PRUNED)]
    return len(statuses), len(ended), len(failed)


def run_statuses(rows: Iterable[TrialRecord]) -> dict[int, dict[int, Status]]:
    """The statuses of the stored confirmation runs by trial and seed (:func:`confirm_counts`)."""
    return {
        number: {seed: row.status for seed, row in by_seed.items()}
        for number, by_seed in confirm_runs(rows).items()
    }


def confirm_runs(rows: Iterable[TrialRecord]) -> dict[int, dict[int, TrialRecord]]:
    """The stored confirmation rows (stage ``confirm:<seed>``) by trial and seed."""
    runs: dict[int, dict[int, TrialRecord]] = {}
    for row in rows:
        seed = confirm_seed(row.stage)
        if seed is not None:
            runs.setdefault(row.number, {})[seed] = row
    return runs


def figures(
    objectives: Sequence[Objective], runs: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """``{objective: {"mean", "std", "lower"}, "seeds": n}`` over the metrics of ``n``
    successful runs (``std`` and ``lower`` None under two runs); None without a run."""
    if not runs:
        return None
    n = len(runs)
    out: dict[str, Any] = {"seeds": n}
    for o in objectives:
        values = np.array([float(r[o.name]) for r in runs])
        mean = float(values.mean())
        std = float(values.std(ddof=1)) if n >= 2 else None
        lower = None
        if std is not None:
            half = float(stats.t.ppf(CONFIDENCE, n - 1)) * std / math.sqrt(n)
            lower = mean - half if o.direction == "maximize" else mean + half
        out[o.name] = {"mean": mean, "std": std, "lower": lower}
    return out


def confirmed_figures(spec: SearchSpec, rows: Iterable[TrialRecord]) -> dict[int, dict[str, Any]]:
    """Each confirmed trial's :func:`figures` over its successful confirmation runs that carry
    every objective (a failed run is left out, and ``seeds`` says how many counted)."""
    out = {}
    for number, by_seed in confirm_runs(rows).items():
        good = [
            r.metrics
            for r in by_seed.values()
            if r.status == Status.OK
            and all(r.metrics.get(o.name) is not None for o in spec.objectives)
        ]
        result = figures(spec.objectives, good)
        if result is not None:
            out[number] = result
    return out


def shared_figures(
    confirmed: Mapping[int, dict[str, Any]],
    recipes: Mapping[int, str],
    trial_ids: Iterable[int],
) -> dict[int, dict[str, Any]]:
    """The figures of ``trial_ids`` (``confirmed``: :func:`confirmed_figures`; ``recipes``:
    trial id -> :func:`recipe_identity`): a trial that was not confirmed itself gets those of
    a confirmed trial of the same recipe (:func:`to_confirm` confirms it once)."""
    by_recipe = {recipes[n]: f for n, f in confirmed.items() if n in recipes}
    out = {}
    for number in trial_ids:
        found = confirmed.get(number, by_recipe.get(recipes.get(number, "")))
        if found is not None:
            out[number] = found
    return out


def recipe_figures(
    spec: SearchSpec, rows: Sequence[TrialRecord], trial_ids: Iterable[int]
) -> dict[int, dict[str, Any]]:
    """:func:`shared_figures` of ``trial_ids`` from the stored rows."""
    recipes = {row.number: row_identity(row) for row in rows}
    return shared_figures(confirmed_figures(spec, rows), recipes, trial_ids)


def means(objectives: Sequence[Objective], result: Mapping[str, Any]) -> list[float]:
    """A confirmed trial's point: its mean of each objective, in the spec's order."""
    return [float(result[o.name]["mean"]) for o in objectives]


def on_confirmed_front(
    objectives: Sequence[Objective], confirmed: Mapping[int, Mapping[str, Any]]
) -> dict[int, bool]:
    """For each confirmed trial, whether its means are on the front of the confirmed means
    (False: it fell off the front once confirmed)."""
    numbers = list(confirmed)
    points = [means(objectives, confirmed[n]) for n in numbers]
    mask = front_mask(points, [o.direction for o in objectives])
    return {n: bool(keep) for n, keep in zip(numbers, mask, strict=True)}
