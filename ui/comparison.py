"""Comparing searches side by side (the Compare page): each search's front, its hypervolume
after each completed trial against one reference point shared by every search, and its counts.
Plain functions of ``reads``' frames and specs (no Streamlit), so tests call them directly.

The hypervolume is ``readout.hypervolume_history`` (the engine's), over objectives whose
``reference`` is fixed to the shared point: a search's own reference may follow its worst value
so far (a minimised objective without one), and two searches' figures measured against two
references cannot be compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from winnow.records import SearchRecord, front_note
from winnow.service.engine import readout
from winnow.service.engine.pareto import front_mask, reference_point, search_hypervolume
from winnow.service.search_spec import Objective, SearchSpec
from winnow.service.store import reads
from winnow.ui import analysis


def _key(objective: Objective) -> tuple[str, str]:
    return objective.name, objective.direction


def objectives_text(objectives: Sequence[Objective]) -> str:
    """``accuracy (maximize), model_bytes (minimize)``."""
    return ", ".join(f"{o.name} ({o.direction})" for o in objectives) or "none"


def shared_objectives(specs: Sequence[SearchSpec]) -> list[Objective]:
    """The objectives (name and direction) every search has, in the first search's order."""
    if not specs:
        return []
    common = set.intersection(*({_key(o) for o in s.objectives} for s in specs))
    return [o for o in specs[0].objectives if _key(o) in common]


def same_objectives(specs: Sequence[SearchSpec]) -> bool:
    """Every search optimises the same objectives in the same directions (order aside)."""
    return len({frozenset(map(_key, s.objectives)) for s in specs}) == 1


def shared_reference(
    shared: Sequence[Objective],
    specs: Sequence[SearchSpec],
    points: Sequence[Sequence[float]],
) -> list[Objective]:
    """``shared`` with one fixed ``reference`` each: the one every search states, else
    ``pareto.reference_point``'s default over every search's completed ``points`` (0 for a
    maximised objective, 1.1 x the worst value for a minimised one)."""
    stated = []
    for objective in shared:
        references = {
            o.reference for s in specs for o in s.objectives if _key(o) == _key(objective)
        }
        agreed = references.pop() if len(references) == 1 else None
        stated.append(objective.model_copy(update={"reference": agreed}))
    fixed = reference_point(stated, points)
    return [o.model_copy(update={"reference": r}) for o, r in zip(stated, fixed, strict=True)]


@dataclass(frozen=True)
class Compared:
    """One search of a comparison: its counters (``readout.tally``'s, with ``completed`` and
    the front's size and hypervolume by its own objectives), its front by its own objectives
    (``front``: ``number`` and the objectives' values, at ``front_epochs``), and its completed
    trials' points on the shared objectives in completion order (``points``), with their
    seconds since the search was created (``seconds``)."""

    search: SearchRecord
    spec: SearchSpec
    progress: dict[str, Any]
    front: pd.DataFrame
    front_epochs: int | None
    points: list[list[float]]
    seconds: list[float]


def compared(
    search: SearchRecord,
    spec: SearchSpec,
    trained: pd.DataFrame,
    counts: pd.DataFrame,
    proposals: int,
    shared: Sequence[Objective],
) -> Compared:
    """A search's part of the comparison from its rows of ``reads.trained`` and
    ``reads.counts`` (the front as ``readout.front_points`` chooses it: the completed trials',
    else the highest rung reached)."""
    names = [o.name for o in spec.objectives]
    columns = (trained[c] for c in ("number", "rung", "metrics"))
    rung, ids, own = readout.front_points(spec, zip(*columns, strict=True))
    flags = front_mask(own, spec.directions)
    front = pd.DataFrame([p for p, keep in zip(own, flags, strict=True) if keep], columns=names)
    front.insert(0, "number", [i for i, keep in zip(ids, flags, strict=True) if keep])
    done = reads.completed(trained, len(spec.strategy.rungs) - 1)
    points = [readout.completed_point(shared, m) for m in done["metrics"]] if shared else []
    finished = done["finished_at"].astype(float) - search.created_at
    timed = [(p, float(t)) for p, t in zip(points, finished, strict=False) if p is not None]
    starts = readout.rung_starts(spec.strategy)
    hypervolume = search_hypervolume(spec.objectives, own)
    progress = analysis.progress(counts, proposals, hypervolume, starts)
    progress |= {"completed": len(done), "front_size": len(front)}
    front_epochs = None if rung is None else spec.strategy.rungs[rung]
    kept, seconds = [p for p, _ in timed], [t for _, t in timed]
    return Compared(search, spec, progress, front, front_epochs, kept, seconds)


def hypervolume_histories(
    searches: Sequence[Compared], objectives: Sequence[Objective]
) -> pd.DataFrame:
    """``search``, ``completed`` (1, 2, ...), ``seconds`` (since the search was created) and
    ``hypervolume`` after each completed trial of each search (``readout.hypervolume_history``;
    ``objectives``: :func:`shared_reference`'s)."""
    frames = [
        pd.DataFrame(
            {
                "search": label(part),
                "completed": range(1, len(part.points) + 1),
                "seconds": part.seconds,
                "hypervolume": readout.hypervolume_history(objectives, part.points),
            }
        )
        for part in searches
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def label(part: Compared) -> str:
    """How the plots and the table name a search: its name and id."""
    return f"{part.search.name} ({part.search.id})"


def strategy_text(spec: SearchSpec) -> str:
    """``cascade (tpe), rungs 2, 6`` or ``tpe, rungs 9``: what proposed and trained."""
    strategy = spec.strategy
    name = getattr(strategy, "name", "?")
    sampler = f" ({getattr(strategy, 'sampler', '?')})" if name == "cascade" else ""
    return f"{name}{sampler}, rungs {', '.join(map(str, strategy.rungs))}"


COUNT_COLUMNS = {
    "proposals": "proposals",
    "candidates": "candidates",
    "training runs": "trained",
    "epochs": "epochs",
    "completed": "completed",
    "hash hits": "cache_hits",
    "pruned": "pruned",
    "failed": "failed",
    "front size": "front_size",
    "hypervolume": "hypervolume",
}


def counts_table(searches: Sequence[Compared], final: dict[str, float]) -> pd.DataFrame:
    """One row per search: its strategy, counters, front (``front``: the fidelity when below
    the top rung) and ``final``, its last hypervolume against the shared reference."""
    rows = []
    for part in searches:
        note = front_note(part.front_epochs, part.spec.strategy.rungs[-1])
        rows.append(
            {
                "search": label(part),
                "status": str(part.search.status),
                "strategy": strategy_text(part.spec),
                **{column: part.progress[key] for column, key in COUNT_COLUMNS.items()},
                "shared hypervolume": final.get(label(part), 0.0),
                "front": note or "",
            }
        )
    return pd.DataFrame(rows)
