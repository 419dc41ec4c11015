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
from winnow.service.engine.pareto import front_mask, pareto_front
from winnow.service.search_spec import Objective, SearchSpec

CONFIDENCE = 0.95  # of the one-sided bound ``lower``
SEED_SPACE = 2**32  # seeds are uint32 (``SearchSpec.seed``): the further seeds wrap around


def confirm_seeds(spec: SearchSpec) -> list[int]:
    """The confirmation runs' seeds: the spec's ``seed + 1``, ``+ 2``, ... (never its own)."""
    confirm = spec.strategy.confirm
    count = 0 if confirm is None else confirm.seeds
    return [(spec.seed + k) % SEED_SPACE for k in range(1, count + 1)]


def to_confirm(
    spec: SearchSpec,
    trial_ids: Sequence[int],
    points: Sequence[Sequence[float]],
    keys: Sequence[str],
) -> list[int]:
    """The trials to confirm: the front of ``points`` (at one fidelity: ``readout.front_rung``),
    best first by the first objective (ties: the earliest trial), its first ``top_k`` recipes:
    a trial whose candidate (``keys``: each trial's candidate key) an earlier one has, such as
    a reused result of the same network, is the same recipe, confirmed once
    (:func:`recipe_figures` shares its figures)."""
    confirm = spec.strategy.confirm
    if confirm is None or not len(points):
        return []
    front = pareto_front(points, spec.directions)
    sign = -1 if spec.objectives[0].direction == "maximize" else 1
    front.sort(key=lambda i: (sign * points[i][0], trial_ids[i]))
    chosen: dict[str, int] = {}
    for i in front:
        if len(chosen) < confirm.top_k:
            chosen.setdefault(keys[i], int(trial_ids[i]))
    return list(chosen.values())


def confirm_counts(
    spec: SearchSpec,
    trial_ids: Sequence[int],
    points: Sequence[Sequence[float]],
    keys: Sequence[str],
    rows: Iterable[TrialRecord],
) -> tuple[int, int]:
    """``(runs, done)`` of the confirmation of the front (``trial_ids``, ``points``, ``keys``:
    as :func:`to_confirm` takes them): its planned runs and those that ended; ``(0, 0)``
    before any confirmation row."""
    runs = confirm_runs(rows)
    if not runs:
        return 0, 0
    numbers = to_confirm(spec, trial_ids, points, keys)
    plan = {(n, s) for n in numbers for s in confirm_seeds(spec)}
    ended = {
        (n, s)
        for n, by_seed in runs.items()
        for s, row in by_seed.items()
        if row.status not in (Status.QUEUED, Status.RUNNING)
    }
    return len(plan), len(plan & ended)


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


def recipe_figures(
    spec: SearchSpec, rows: Sequence[TrialRecord], trials: Mapping[int, str]
) -> dict[int, dict[str, Any]]:
    """:func:`confirmed_figures` of ``trials`` (trial id -> candidate key): a trial that was not
    confirmed itself gets those of a confirmed trial of the same candidate (the same recipe:
    :func:`to_confirm` confirms it once)."""
    confirmed = confirmed_figures(spec, rows)
    by_key = {row.candidate_key: confirmed[row.number] for row in rows if row.number in confirmed}
    out = {}
    for number, key in trials.items():
        figures = confirmed.get(number, by_key.get(key))
        if figures is not None:
            out[number] = figures
    return out


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
