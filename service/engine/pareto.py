"""Pareto fronts, non-dominated ranks, crowding distance and hypervolume.

Points are rows of objective values; ``directions`` says per column whether larger
(``maximize``) or smaller (``minimize``) is better. Everything converts to minimisation first.

Non-dominated sorting and crowding distance are written here (a few lines each, on the handful
of trials of one rung) because Optuna keeps its versions private to NSGA-II; the hypervolume is
Optuna's exact WFG implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

# Private, kept on purpose: Optuna has no public hypervolume function (its public surface only
# plots a study's hypervolume history), and this one is exact (WFG) and fast. It exists from
# Optuna 4.0 (hence the floor in pyproject.toml).
from optuna._hypervolume import compute_hypervolume

if TYPE_CHECKING:
    from winnow.service.search_spec import Objective


def as_losses(points: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Rows to minimise: maximised columns are negated."""
    values = np.asarray(points, dtype=np.float64).reshape(len(points), len(directions))
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return values * signs


def domination_counts(points: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """How many points dominate each point (Fonseca and Fleming's rank; 0 on the Pareto front):
    one vectorised pass, for ranking large populations where peeling fronts is too slow."""
    return _dominated_by(as_losses(points, directions)).sum(1)


def _dominated_by(losses: np.ndarray) -> np.ndarray:
    """``[i, j]``: row j dominates row i (no worse everywhere, better somewhere)."""
    no_worse = (losses[None, :, :] <= losses[:, None, :]).all(-1)
    better = (losses[None, :, :] < losses[:, None, :]).any(-1)
    return no_worse & better


def non_dominated_ranks(points: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Rank 0 for the Pareto front, 1 for the front of the rest, and so on."""
    losses = as_losses(points, directions)
    dominated_by = _dominated_by(losses)
    ranks = np.full(len(losses), -1)
    remaining = np.ones(len(losses), dtype=bool)
    rank = 0
    while remaining.any():
        front = remaining & ~(dominated_by[:, remaining].any(1))
        ranks[front] = rank
        remaining &= ~front
        rank += 1
    return ranks


def crowding_distances(points: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """NSGA-II's crowding distance within one front: the sum over objectives of the gap between
    a point's neighbours, normalised by the objective's range; the ends get infinity."""
    losses = as_losses(points, directions)
    n, m = losses.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(losses[:, k], kind="stable")
        column = losses[order, k]
        span = column[-1] - column[0]
        distance[order[[0, -1]]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (column[2:] - column[:-2]) / span
    return distance


def promotion_order(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices best first: by non-dominated rank, then by crowding distance within a rank
    (larger first), then by index (earlier first). With one objective this is plain sorting."""
    if not len(points):
        return []
    ranks = non_dominated_ranks(points, directions)
    crowding = np.zeros(len(points))
    for rank in np.unique(ranks):
        members = np.flatnonzero(ranks == rank)
        crowding[members] = crowding_distances([points[i] for i in members], directions)
    return sorted(range(len(points)), key=lambda i: (ranks[i], -crowding[i], i))


def front_mask(points: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Points no other point dominates: one vectorised pass (peeling every front, as
    :func:`non_dominated_ranks` does, takes a second on a few thousand points)."""
    if not len(points):
        return np.zeros(0, dtype=bool)
    return domination_counts(points, directions) == 0


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points, in input order."""
    return [int(i) for i in np.flatnonzero(front_mask(points, directions))]


def hypervolume(
    points: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]
) -> float:
    """The volume dominated by ``points`` and bounded by ``reference`` (given in the objectives'
    own units and directions); points not better than the reference everywhere add nothing."""
    if not len(points):
        return 0.0
    losses = as_losses(points, directions)
    ref = as_losses([reference], directions)[0]
    inside = losses[np.all(losses < ref, axis=1)]
    if not len(inside):
        return 0.0
    if losses.shape[1] == 1:  # a length; the engine computes this after every trial
        return float(ref[0] - inside.min())
    return float(compute_hypervolume(inside, ref))


def reference_point(
    objectives: Sequence[Objective], points: Sequence[Sequence[float]]
) -> list[float]:
    """Each objective's ``reference``, else 0 for a maximised one and 1.1 x the worst value of
    ``points`` for a minimised one."""
    values = np.array(points if len(points) else [[0.0] * len(objectives)], dtype=np.float64)
    return [
        o.reference
        if o.reference is not None
        else (0.0 if o.direction == "maximize" else 1.1 * float(values[:, k].max()))
        for k, o in enumerate(objectives)
    ]


def search_hypervolume(objectives: Sequence[Objective], points: Sequence[Sequence[float]]) -> float:
    """A search's hypervolume: its completed points against :func:`reference_point`."""
    directions = [o.direction for o in objectives]
    return hypervolume(points, directions, reference_point(objectives, points))
