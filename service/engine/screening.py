"""Zero-cost proxy screening: which proxy-scored candidates the cascade trains.

Each scored candidate joins a population (the last ``Screen.population`` scored in the search).
Its ensemble score is AZ-NAS's rank aggregation over that population until the search has
trained ``calibrate_after`` candidates; from then on it is a ``CalibratedEnsemble`` fitted on the
search's own trained results (proxy values against the first objective at the first rung),
refitted every ``refit_every`` new results. Ground truth from anywhere else is never used.

At each fit, the evidence ladder's rule (``evidence_ladder``): a proxy whose Kendall tau on those
same results is below that of the candidates' parameter counts (``params`` of the trained
results) gets weight 0 in the calibrated ensemble. Both taus are measured on the same rows, those
where the proxy's value and params are both known (``evidence_ladder.paired_kendall``): a proxy
that failed on some candidates is judged on the others. The comparison is signed: a proxy that
ranks the results in reverse (tau below zero) is below params and loses its weight; it is never
used reversed (a negative weight is left to the ensemble's own fit). The rule needs
``evidence_ladder.MIN_RESULTS`` results, so a fit on fewer (``calibrate_after`` may be 4) weighs
every proxy, as rank aggregation does before any fit. Proxies are zeroed only when some proxy
whose tau is measured and not below params' remains, or ``params`` is itself one of the
screen's proxies: zeroing the rest (a constant or failed proxy has no tau) would leave no
score, so none is zeroed then. The zeroed set of the last fit is ``zero_weight``.

A candidate is kept when it ranks in the top ``keep_fraction`` of the population: by score with
one objective; with several, by how many population members dominate it on (score, the other
objectives that proxies already know, such as ``params`` and ``flops``), and always when it is
the population's best on one of those known objectives (the front's end there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from winnow.proxies.ensemble import CalibratedEnsemble, rank_ensemble
from winnow.service.engine import evidence_ladder
from winnow.service.engine.pareto import domination_counts
from winnow.service.search_spec import Objective, Screen

ProxyValues = Mapping[str, float | None]


@dataclass(frozen=True)
class Decision:
    keep: bool
    score: float
    position: int  # 0 = best of the population
    population: int
    ensemble: str  # "rank", "calibrated" or "warmup"


class ProxyScreen:
    """See the module docstring. ``objectives`` are the search's; the first is the one the
    ensemble predicts."""

    def __init__(self, settings: Screen, objectives: Sequence[Objective], seed: int = 0) -> None:
        self.settings = settings
        self.primary = objectives[0]
        self.static = proxy_known(objectives, settings.proxies)
        self.seed = seed
        self.rows: list[ProxyValues] = []
        self.numbers: list[int] = []
        self.labels: dict[int, float] = {}
        self.params: dict[int, float | None] = {}  # of the labelled candidates: the rule's baseline
        self.ensemble: CalibratedEnsemble | None = None
        self.zero_weight: list[str] = []  # the proxies the last fit gave weight 0
        self._labels_at_fit = 0
        self._score_cache: dict[int, float] = {}

    # --- deciding -----------------------------------------------------------------------------

    def add(self, number: int, values: ProxyValues) -> Decision:
        """Add a scored candidate to the population and decide whether it is trained."""
        self.rows.append({p: values.get(p) for p in self.settings.proxies})
        self.numbers.append(number)
        window = slice(-self.settings.population, None)
        rows, numbers = self.rows[window], self.numbers[window]
        if len(self.rows) <= self.settings.min_population:
            return Decision(True, math.nan, 0, len(rows), "warmup")
        scores, kind = self._scores(rows, numbers)
        position = self._position(scores, rows)
        allowed = math.ceil(self.settings.keep_fraction * len(rows))
        return Decision(position < allowed, float(scores[-1]), position, len(rows), kind)

    def _scores(self, rows: list[ProxyValues], numbers: list[int]) -> tuple[np.ndarray, str]:
        if self.ensemble is None:
            columns = {p: [r[p] for r in rows] for p in self.settings.proxies}
            return rank_ensemble(columns), "rank"
        missing = [i for i, n in enumerate(numbers) if n not in self._score_cache]
        if missing:
            columns = {p: [rows[i][p] for i in missing] for p in self.settings.proxies}
            for i, score in zip(missing, self.ensemble.predict(columns), strict=True):
                self._score_cache[numbers[i]] = float(score)
        return np.array([self._score_cache[n] for n in numbers]), "calibrated"

    def _position(self, scores: np.ndarray, rows: list[ProxyValues]) -> int:
        """The newest member's place in the population, 0 = best."""
        return position(scores, rows, self.static)

    # --- learning from trained results --------------------------------------------------------

    def observe(self, number: int, metrics: Mapping[str, float]) -> None:
        """A trained result of a screened candidate; refits the calibrated ensemble when due."""
        if self.primary.name not in metrics or number not in self.numbers:
            return
        value = float(metrics[self.primary.name])
        self.labels[number] = value if self.primary.direction == "maximize" else -value
        baseline = metrics.get(evidence_ladder.BASELINE)
        self.params[number] = None if baseline is None else float(baseline)
        enough = len(self.labels) >= self.settings.calibrate_after
        due = len(self.labels) - self._labels_at_fit >= self.settings.refit_every
        if enough and (self.ensemble is None or due):
            self._refit()

    def _refit(self) -> None:
        index = {n: i for i, n in enumerate(self.numbers)}
        labelled = [n for n in self.labels if n in index]
        if len({self.labels[n] for n in labelled}) < 2:
            return  # a rank loss needs at least two different results
        columns = {p: [self.rows[index[n]][p] for n in labelled] for p in self.settings.proxies}
        target = [self.labels[n] for n in labelled]
        zero = self.below_params(columns, [self.params.get(n) for n in labelled], target)
        self.zero_weight = zero
        ensemble = CalibratedEnsemble(self.settings.proxies)
        self.ensemble = ensemble.fit(columns, target, self.seed, zero=zero)
        self._labels_at_fit = len(self.labels)
        self._score_cache.clear()

    def below_params(
        self,
        columns: Mapping[str, Sequence[float | None]],
        params: Sequence[float | None],
        target: Sequence[float],
    ) -> list[str]:
        """The proxies that rank the results worse than ``params`` does (the module docstring's
        rule): they get weight 0."""
        return below_params(self.settings.proxies, columns, params, target)


def position(scores: np.ndarray, rows: Sequence[ProxyValues], static: Sequence[Objective]) -> int:
    """The newest (last) member's place in a population, 0 = best: by ``scores`` (higher is
    better) alone when there are no ``static`` objectives (those of the search's objectives
    after the first that proxies already know: ``rows`` hold their values); with some, 0 when
    it is the population's best on one of them (:func:`_at_extreme`), else how many members
    have a lower domination count than it on (score, static objectives). The proxy screen and
    the supernet stage (``supernet_rule``) both decide by it."""
    if not static:
        return int(np.sum(scores > scores[-1]))
    costs = [_column(rows, o) for o in static]
    if any(_at_extreme(c, o) for c, o in zip(costs, static, strict=True)):
        return 0
    points = np.column_stack([scores, *costs])
    directions = ["maximize"] + [o.direction for o in static]
    counts = domination_counts(points, directions)
    return int(np.sum(counts < counts[-1]))


def proxy_known(objectives: Sequence[Objective], proxies: Sequence[str]) -> list[Objective]:
    """The objectives after the first whose values the screen's proxies give (e.g. params)."""
    return [o for o in objectives[1:] if o.name in proxies]


def below_params(
    features: Sequence[str],
    columns: Mapping[str, Sequence[float | None]],
    params: Sequence[float | None],
    target: Sequence[float],
) -> list[str]:
    """The features of a calibrated fit that rank ``target`` worse than ``params`` does, each
    measured on the rows where it and params are both known: the module docstring's rule, which
    the proxy screen and the supernet stage's combined fit (``supernet_rule``) both apply."""
    params = _finite(params)
    below, kept = [], []
    for feature in features:
        _, tau, base = evidence_ladder.paired_kendall(_finite(columns[feature]), params, target)
        if evidence_ladder.below_baseline({feature: tau, evidence_ladder.BASELINE: base}):
            below.append(feature)
        elif tau is not None and base is not None:
            kept.append(feature)  # measured, and not below params
    if not kept and evidence_ladder.BASELINE not in features:
        return []  # no score would be left
    return below


def _at_extreme(column: np.ndarray, objective: Objective) -> bool:
    """Whether the newest member is (one of) the best of the population on this objective.

    Such a candidate is kept whatever its score, as NSGA-II keeps boundary points: the
    front's end at that objective sets the hypervolume there, and the accuracy proxies misjudge
    it (among nb201's cells with no convolution, the 73,306-parameter end, synflow's Spearman
    rank correlation with accuracy was -0.81: the screen kept the worst of them)."""
    best = column.max() if objective.direction == "maximize" else column.min()
    return bool(np.isfinite(column[-1]) and column[-1] == best)


def _finite(values: Sequence[float | None]) -> list[float | None]:
    """Proxy values with the missing and non-finite ones as None (a tau leaves them out)."""
    return [v if v is not None and math.isfinite(v) else None for v in values]


def _column(rows: Sequence[ProxyValues], objective: Objective) -> np.ndarray:
    """A proxy-known objective (e.g. params) per row; a missing value counts as the worst."""
    name = objective.name
    values = np.array([np.nan if r.get(name) is None else float(r[name]) for r in rows])
    worst = -np.inf if objective.direction == "maximize" else np.inf
    return np.where(np.isnan(values), worst, values)
