"""What a stored search shows: its progress, Pareto front and exported recipes, read from the
store's records alone, so the service answers the same for a live search, a finished one, and one
whose server restarted.

A *completed* trial is a candidate with a top-rung training row that succeeded (``ok``) or was
answered from the equivalence cache (``duplicate``): ``TrialRecord.completed``. Trial ids are
candidate numbers within the search.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

import winnow
from winnow.records import SearchRecord, TrialRecord
from winnow.search_space.archs import ArchitectureView, describe
from winnow.service.engine.pareto import pareto_front, search_hypervolume
from winnow.service.search_spec import SearchSpec


class UnknownTrialError(LookupError):
    """An export names a trial that has no completed result in the search."""


@dataclass(frozen=True)
class Completed:
    trial_id: int
    values: list[float]
    row: TrialRecord


def completed_trials(spec: SearchSpec, rows: list[TrialRecord]) -> list[Completed]:
    """The search's completed trials in completion order (see the module docstring)."""
    top = len(spec.strategy.rungs) - 1
    names = [o.name for o in spec.objectives]
    done = []
    for row in rows:
        if not row.completed(top):
            continue
        metrics = row.metrics
        if all(metrics.get(name) is not None for name in names):
            done.append(Completed(row.number, [float(metrics[n]) for n in names], row))
    return done


def progress(spec: SearchSpec, rows: list[TrialRecord]) -> dict[str, Any]:
    """The same counters as ``Engine.progress``, from rows."""
    numbers = {row.number for row in rows}
    train = [row for row in rows if row.stage == "train" and not row.reused]
    done = completed_trials(spec, rows)
    best = {}
    if done:
        values = np.array([c.values for c in done])
        for k, objective in enumerate(spec.objectives):
            column = values[:, k]
            best[objective.name] = float(
                column.max() if objective.direction == "maximize" else column.min()
            )
    return {
        "trained": len(train),
        "proposals": len(numbers),
        "cache_hits": sum(1 for row in rows if row.reused),
        "pruned": sum(1 for row in rows if row.status == "pruned"),
        "failed": sum(1 for row in rows if row.status == "failed"),
        "max_trials": spec.budget.max_trials,
        "hypervolume": search_hypervolume(spec.objectives, [c.values for c in done]),
        "best": best,
    }


def pareto(spec: SearchSpec, rows: list[TrialRecord]) -> dict[str, Any]:
    """``{"objectives", "points": [{"trial_id", objective values..., "candidate"}],
    "hypervolume"}``; points sorted by the first objective, best first."""
    done = completed_trials(spec, rows)
    points = [c.values for c in done]
    front = [done[i] for i in pareto_front(points, spec.directions)]
    first = spec.objectives[0]
    front.sort(key=lambda c: c.values[0], reverse=first.direction == "maximize")
    return {
        "objectives": [o.name for o in spec.objectives],
        "points": [
            {
                "trial_id": c.trial_id,
                **{o.name: c.values[k] for k, o in enumerate(spec.objectives)},
                "candidate": json.loads(c.row.candidate),
            }
            for c in front
        ],
        "hypervolume": search_hypervolume(spec.objectives, points),
    }


def recipe(search: SearchRecord, rows: list[TrialRecord], trial_id: int | None = None) -> dict:
    """The canonical candidate of a completed trial with everything needed to train it again:
    task, epochs, seed, and what it scored. Without ``trial_id``: the front's best on the
    first objective."""
    spec = SearchSpec.model_validate_json(search.spec_json)
    done = {c.trial_id: c for c in completed_trials(spec, rows)}
    if trial_id is None:
        points = pareto(spec, rows)["points"]
        if not points:
            raise UnknownTrialError(f"search {search.id} has no completed trial to export yet")
        trial_id = points[0]["trial_id"]
    if trial_id not in done:
        known = ", ".join(str(t) for t in sorted(done)[:20]) or "none yet"
        raise UnknownTrialError(
            f"trial {trial_id} of search {search.id} has no completed result "
            f"(completed trials: {known})"
        )
    row = done[trial_id].row
    return {
        "format": "winnow.recipe/v1",
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
        "hashes": {"structural": row.structural_hash, "functional": row.functional_hash},
    }


def architecture_view(arch: dict[str, Any]) -> ArchitectureView:
    """What the dashboard shows of a candidate's architecture: its family's ``describe`` (the
    dashboard reads through readout, not the search space)."""
    return describe(arch)
