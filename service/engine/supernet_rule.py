"""The supernet stage's decision: which candidates it scored go on to training.

Every candidate the stage scores joins its *population* with its features: the screen's proxy
values (``proxy.<name>`` of its proxy row) and its inherited accuracy (``supernet.accuracy``, the
feature :data:`FEATURE`). A candidate is judged by one score per member of the population:

- its inherited accuracy alone, until ``calibrate_after`` (the screen's setting) members have a
  trained result;
- from then on its *combined* score: a ``CalibratedEnsemble`` over ``[each screen proxy...,
  supernet]`` fitted on the members' trained results (the proxy screen's labels: the first
  objective at the first rung, ``ProxyScreen.labels``; never ground truth from elsewhere), with
  the proxy screen's zero-weight rule (``screening.below_params``): a feature whose Kendall tau
  against those results is below that of their parameter counts gets weight 0, the inherited
  accuracy as well as a proxy; ``params``, when a screen proxy, stays a feature (it is the
  baseline, never below itself). This is the issue's "the screen's calibrated ensemble combines
  proxy and supernet scores once trained results exist".

Either way the first ``warmup`` members go on. After them, with one objective (or none of the
others known to the screen's proxies), by :class:`QuantileRule`: a candidate below the
``1 - keep_fraction`` quantile of the population's scores (itself included) is pruned, every
member's combined score being the current fit's. With objectives after the first that the
screen's proxies know (``params``, ``flops``: the proxy screen's "static" ones), the stage
decides as the proxy screen does, by its :func:`screening.position`: a candidate at the
population's best on one of those objectives is kept (the front's end there: a one-score
quantile would prune the small, less accurate nets and cut that end off), else it is kept when
its place by domination count on (score, those objectives) is within the top
``ceil(keep_fraction * population)``; the row records that place (``supernet.position``).

The fit is redone whenever the members' labels have changed since the last, not every
``refit_every`` results as the proxy screen does: at most one fit per trained result, of
15-120 ms (10-200 results, one CPU thread) beside a scoring trial's seconds; and so the fit is a
function of what the rows store alone (the labelled members in order of number, their features
and labels, the seed). A resumed search rebuilds the population from its rows
(:meth:`SupernetRule.rebuild`: the candidates with a ``supernet.accuracy`` and their proxy rows)
and, with the proxy screen rebuilt from the same rows, decides the next candidate exactly as the
search would have.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from winnow.proxies.ensemble import CalibratedEnsemble
from winnow.records import TrialRecord
from winnow.service.engine.evidence_ladder import (
    STAGE_TIERS,
    SUPERNET_CALIBRATED,
    SUPERNET_COMBINED,
    SUPERNET_ZERO_WEIGHT,
)
from winnow.service.engine.screening import below_params, position, proxy_known
from winnow.service.search_spec import Objective

METRIC = "supernet.accuracy"  # a supernet row's inherited accuracy
THRESHOLD = "supernet.threshold"  # the score the candidate was held to (none in the warm-up)
POSITION = "supernet.position"  # its place by domination count (several objectives; 0 = best)
FEATURE = STAGE_TIERS[0].name  # the inherited accuracy's feature: the ladder tier's name

ProxyValues = Mapping[str, float | None]


class TrainedResults(Protocol):
    """The search's trained results by candidate number (``screening.ProxyScreen`` is one):
    ``labels`` the first objective at the first rung, higher is better, and ``params`` the
    results' parameter counts (the zero-weight rule's baseline)."""

    labels: Mapping[int, float]
    params: Mapping[int, float | None]


class NoResults:
    """No trained results: the rule stays on the inherited accuracy alone."""

    def __init__(self) -> None:
        self.labels: Mapping[int, float] = {}
        self.params: Mapping[int, float | None] = {}


class QuantileRule:
    """Keeps the first ``warmup`` of a population, then the scores at or above the
    ``1 - keep_fraction`` quantile of the population's (the new one included)."""

    def __init__(self, keep_fraction: float, warmup: int) -> None:
        self.keep_fraction, self.warmup = keep_fraction, warmup

    def judge(self, population: Sequence[float], score: float) -> tuple[bool, float | None]:
        """(keep, the threshold it was held to: None during the warm-up)."""
        if len(population) <= self.warmup:
            return True, None
        threshold = float(np.quantile(population, 1 - self.keep_fraction))
        return score >= threshold, threshold


@dataclass(frozen=True)
class Verdict:
    """What decided a candidate: ``score`` (the inherited accuracy, or the combined score when
    ``calibrated``), the ``threshold`` it was held to (one objective; None in the warm-up) or
    its ``position`` by domination count and the places kept (``allowed``; several
    objectives), the population's size, and for a combined score the results it was fitted on
    and the features it zeroed."""

    keep: bool
    accuracy: float
    score: float
    threshold: float | None
    population: int
    calibrated: bool = False
    fitted_on: int = 0
    zero_weight: tuple[str, ...] = ()
    position: int | None = None
    allowed: int | None = None

    def metrics(self) -> dict[str, float]:
        """The row's record of it: ``supernet.calibrated``, and ``supernet.threshold``,
        ``supernet.combined`` and ``supernet.zero_weight.<feature>`` where they apply (the
        evidence ladder's ``combined`` tier and zero-weight flags read these)."""
        metrics = {SUPERNET_CALIBRATED: float(self.calibrated)}
        if self.threshold is not None:
            metrics[THRESHOLD] = self.threshold
        if self.position is not None:
            metrics[POSITION] = float(self.position)
        if self.calibrated:
            metrics[SUPERNET_COMBINED] = self.score
            metrics |= {f"{SUPERNET_ZERO_WEIGHT}{f}": 1.0 for f in self.zero_weight}
        return metrics

    def reason(self, keep_fraction: float) -> str:
        """Why a pruned candidate was (its row's error)."""
        if self.position is not None:
            below = (
                f"ranks {self.position} by domination count with the proxy-known objectives, "
                f"outside the top {self.allowed} of {self.population} scored"
            )
        else:
            quantile = f"{1 - keep_fraction:.0%} quantile {self.threshold:.4f}"
            below = f"below the {quantile} of {self.population} scored"
        if not self.calibrated:
            return f"supernet: inherited accuracy {self.accuracy:.4f} {below}"
        return (
            f"supernet: combined score {self.score:.4f} (proxies and inherited accuracy "
            f"{self.accuracy:.4f}, fitted on {self.fitted_on} trained results) {below}"
        )


class SupernetRule:
    """The stage's population and its decision (see the module docstring). ``objectives``:
    the search's (the first is the one the score predicts); none, or one: the quantile rule."""

    def __init__(
        self,
        keep_fraction: float,
        warmup: int,
        proxies: Sequence[str],
        calibrate_after: int,
        results: TrainedResults | None = None,
        seed: int = 0,
        objectives: Sequence[Objective] = (),
    ) -> None:
        self.quantile = QuantileRule(keep_fraction, warmup)
        self.keep_fraction, self.warmup = keep_fraction, warmup
        self.static = proxy_known(objectives, proxies)
        self.proxies, self.features = list(proxies), [*proxies, FEATURE]
        self.calibrate_after, self.seed = calibrate_after, seed
        self.results = results or NoResults()
        self.numbers: list[int] = []
        self.columns: dict[str, list[float | None]] = {f: [] for f in self.features}
        self.ensemble: CalibratedEnsemble | None = None
        self.zero_weight: list[str] = []  # the features the current fit gave weight 0
        self._fitted: tuple[tuple[int, float], ...] = ()  # the (number, label)s it was fitted on
        self._combined: list[float] = []  # every member's score under the current fit

    @property
    def scores(self) -> list[float]:
        """The members' inherited accuracies."""
        return [float(s) for s in self.columns[FEATURE] if s is not None]

    def judge(self, number: int, proxies: ProxyValues, accuracy: float) -> Verdict:
        """Add a scored candidate to the population and decide whether it is trained."""
        self.remember(number, proxies, accuracy)
        self._refit_when_due()
        size = len(self.numbers)
        calibrated = self.ensemble is not None
        scores = self._combined if calibrated else self.scores
        fitted = len(self._fitted) if calibrated else 0
        zeroed = tuple(self.zero_weight) if calibrated else ()
        verdict = Verdict(True, accuracy, scores[-1], None, size, calibrated, fitted, zeroed)
        if not self.static:
            keep, threshold = self.quantile.judge(scores, scores[-1])
            return replace(verdict, keep=keep, threshold=threshold)
        if size <= self.warmup:
            return verdict
        rows = [{o.name: self.columns[o.name][i] for o in self.static} for i in range(size)]
        place = position(np.array(scores), rows, self.static)
        allowed = math.ceil(self.keep_fraction * size)
        return replace(verdict, keep=place < allowed, position=place, allowed=allowed)

    def remember(self, number: int, proxies: ProxyValues, accuracy: float) -> None:
        """Add a member without deciding (a resumed search's, from its rows)."""
        values = {p: _finite(proxies.get(p)) for p in self.proxies} | {FEATURE: accuracy}
        self.numbers.append(number)
        for feature in self.features:
            self.columns[feature].append(values[feature])
        if self.ensemble is not None:
            row = {f: [values[f]] for f in self.features}
            self._combined.append(float(self.ensemble.predict(row)[0]))

    def rebuild(self, rows: Iterable[TrialRecord], stage: str = "supernet") -> None:
        """The population of a stored search: every candidate with a score in a ``stage`` row
        (a failed scoring's row has none), with its proxy row's values."""
        rows = list(rows)
        proxy_rows = {r.number: r.metrics for r in rows if r.stage == "proxy"}
        for row in rows:
            accuracy = row.metrics.get(METRIC) if row.stage == stage else None
            if accuracy is not None:
                proxies = proxy_rows.get(row.number, {})
                values = {p: proxies.get(f"proxy.{p}") for p in self.proxies}
                self.remember(row.number, values, accuracy)

    def _refit_when_due(self) -> None:
        labels = self.results.labels
        labelled = sorted((n, i) for i, n in enumerate(self.numbers) if n in labels)
        fitted = tuple((n, float(labels[n])) for n, _ in labelled)
        if len(fitted) < self.calibrate_after or fitted == self._fitted:
            return
        target = [label for _, label in fitted]
        if len(set(target)) < 2:
            return  # a rank loss needs at least two different results
        columns = {f: [self.columns[f][i] for _, i in labelled] for f in self.features}
        params = [self.results.params.get(n) for n, _ in labelled]
        zero = below_params(self.features, columns, params, target)
        ensemble = CalibratedEnsemble(self.features).fit(columns, target, self.seed, zero=zero)
        self.ensemble, self.zero_weight, self._fitted = ensemble, zero, fitted
        self._combined = [float(s) for s in ensemble.predict(self.columns)]


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)
