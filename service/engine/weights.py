"""The trained weights a search keeps, and their retention (``SearchSpec.keep_weights``).

Top-rung training runs ask their worker for the trained ``state_dict``
(``TrialSpec.keep_weights``); the bytes come back with the result and are written to the
store's artifact folder (``store.artifacts``) before the row that records their path, so a
row never names a file that is not complete. After each completed trial only the best
``keep_weights`` completed trials keep theirs: ranked by how many completed trials dominate
each (the front first), then by the first objective, then the earlier trial; the others' rows
are cleared in the step's transaction and their files deleted after it commits
(:meth:`KeptWeights.delete_dropped`), so a crash never leaves a row naming a deleted file (at
worst a file no row names). A reused (cache-answered)
trial was not trained here and has no weights; it still takes its place in the ranking.
"""

from __future__ import annotations

import logging

from winnow.records import TrialRecord
from winnow.service.engine.pareto import domination_counts
from winnow.service.search_spec import SearchSpec
from winnow.service.store import Store
from winnow.service.store.artifacts import Artifacts

log = logging.getLogger("winnow.engine")


class KeptWeights:
    """One search's kept weights; ``rows``: the stored trials of a resumed search;
    ``also_named``: the other files of its folder that the start-up sweep must keep (the
    continued rungs' live checkpoints)."""

    def __init__(
        self,
        spec: SearchSpec,
        store: Store,
        search_id: str,
        rows: list[TrialRecord] | None,
        also_named: frozenset[str] = frozenset(),
    ) -> None:
        self.spec, self.store, self.search_id = spec, store, search_id
        self.limit = spec.keep_weights
        # candidate number -> (row id, path) of the weights kept so far
        self.kept = {r.number: (r.id, r.weights_path) for r in rows or () if r.weights_path}
        self.dropped: list[str] = []  # files whose rows no longer name them, to delete
        if store.artifacts is not None:  # nothing of this search is being written yet
            named = {path for _, path in self.kept.values()} | also_named
            for path in store.artifacts.sweep(search_id, named):
                log.info("search %s: deleted %s, which no trial names", search_id, path)

    @property
    def enabled(self) -> bool:
        """Weights are kept at all: the search wants some and the store has a folder."""
        return self.limit > 0 and self.store.artifacts is not None

    def save(self, number: int, row_id: int, data: bytes) -> str:
        """Write one trial's weights; returns the path its row is to record."""
        assert self.store.artifacts is not None  # only asked for when enabled
        path = self.store.artifacts.write(self.search_id, row_id, data)
        self.kept[number] = (row_id, path)
        return path

    def forget(self, number: int) -> None:
        """Drop a trial's weights that no row names (its result did not count)."""
        _, path = self.kept.pop(number)
        self.dropped.append(path)

    def retain(self, completed: dict[int, list[float]]) -> None:
        """Drop the weights of the trials no longer among the best ``limit`` of ``completed``
        (objective values by candidate number: ``SearchState.completed``): their rows are
        cleared now, their files deleted by :meth:`delete_dropped`."""
        best = set(best_numbers(completed, self.spec.directions, self.limit))
        for number in [n for n in self.kept if n not in best]:
            row_id, path = self.kept.pop(number)
            self.store.update_trial(row_id, weights_path=None)
            self.dropped.append(path)
            log.debug("search %s: trial %d's weights dropped", self.search_id, number)

    def delete_dropped(self) -> None:
        """Delete the dropped files; call it after the transaction that cleared their rows."""
        while self.dropped:
            Artifacts.delete(self.dropped.pop())


def best_numbers(completed: dict[int, list[float]], directions: list[str], limit: int) -> list[int]:
    """The ``limit`` best candidate numbers of ``completed``: by how many others dominate each
    (0: on the front; one vectorised pass, where peeling every front takes a second on a few
    thousand trials, and this runs after each completed one), then by the first objective,
    then the earlier trial. With one objective this is plain sorting."""
    if not completed or limit <= 0:
        return []
    numbers = list(completed)
    points = [completed[n] for n in numbers]
    ranks = domination_counts(points, directions)
    sign = -1.0 if directions[0] == "maximize" else 1.0
    order = sorted(range(len(numbers)), key=lambda i: (ranks[i], sign * points[i][0], numbers[i]))
    return [numbers[i] for i in order[:limit]]
