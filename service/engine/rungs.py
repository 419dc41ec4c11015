"""Asynchronous multi-objective successive halving (ASHA, Li et al. 2020, with MO promotion).

Rung ``k`` trains for ``rungs[k]`` epochs. Whenever a worker is free, the highest rung that has
a promotable trial promotes it: a trial at rung ``k`` is promotable when it is among the best
``floor(n_k / reduction_factor)`` of the ``n_k`` results at that rung and has not been promoted.
"Best" orders by non-dominated rank, then crowding distance (``pareto.promotion_order``); with
one objective that is plain ASHA. Nothing waits for a rung to fill up.
"""

from __future__ import annotations

from collections.abc import Sequence

from winnow.service.engine.pareto import promotion_order


class SuccessiveHalving:
    def __init__(self, rungs: Sequence[int], reduction_factor: int, directions: Sequence[str]):
        self.rungs = list(rungs)
        self.eta = reduction_factor
        self.directions = list(directions)
        self.results: list[dict[int, list[float]]] = [{} for _ in self.rungs]
        self.promoted: list[set[int]] = [set() for _ in self.rungs]

    @property
    def top(self) -> int:
        return len(self.rungs) - 1

    def record(self, rung: int, number: int, values: Sequence[float]) -> None:
        """Trial ``number`` finished rung ``rung`` with objective ``values``."""
        self.results[rung][number] = list(values)

    def mark_promoted(self, rung: int, number: int) -> None:
        self.promoted[rung].add(number)

    def promotable(self, rung: int) -> list[int]:
        """Trials at ``rung`` that may go to ``rung + 1`` now, best first."""
        if rung >= self.top:
            return []
        numbers = list(self.results[rung])
        order = promotion_order([self.results[rung][n] for n in numbers], self.directions)
        best = [numbers[i] for i in order[: len(numbers) // self.eta]]
        return [n for n in best if n not in self.promoted[rung]]

    def next_promotion(self) -> tuple[int, int] | None:
        """``(number, next rung)`` of the promotion to run now, from the highest rung down."""
        for rung in range(self.top - 1, -1, -1):
            candidates = self.promotable(rung)
            if candidates:
                return candidates[0], rung + 1
        return None
