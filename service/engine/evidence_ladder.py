"""The evidence ladder: how well each fidelity of the cascade ranks the candidates that training
then answered, measured by the search on itself.

A *tier* is a source of one score per candidate, higher meaning predicted better:

- ``params``, the trained network's parameter count: the baseline. On all of NAS-Bench-201 it
  ranks CIFAR-10 accuracy with Kendall tau 0.578, ahead of a one-shot supernet (0.485), so
  evidence that ranks worse than params is a cost, not a fidelity;
- each zero-cost proxy of the screen (``proxy.<name>`` of the candidate's proxy row);
- ``ensemble``, the proxy screen's score when it decided (``screen.score`` of the proxy row),
  counted only where a calibrated ensemble gave it (``screen.calibrated``): rank aggregation's
  scores are ranks within a population that moves, and do not compare across candidates;
- the tiers of later scoring stages, :data:`STAGE_TIERS`: ``supernet``, the supernet stage's
  inherited accuracy (``supernet.accuracy``), and ``combined``, that stage's score when it
  decided (``supernet.combined``: a calibrated ensemble over the screen's proxies and the
  inherited accuracy, ``service/engine/supernet_rule.py``), counted, as ``ensemble`` is, only
  where a calibrated fit gave it (``supernet.calibrated``).

Against the search's completed trials (trained at the top rung; the first objective, negated
when minimised), each tier's Kendall tau (``scipy.stats.kendalltau``, tau-b) is measured over
the completed candidates the proxy screen scored (a reused result never met it) that have the
tier's score; ``n`` is how many, and ``tau`` is None while ``n < MIN_RESULTS`` or when the
scores or results are all equal. ``below_params`` flags a tier that ranks worse than params on
the same candidates: params' tau is measured again on the tier's own candidates (those that also
have a params value), reported as ``params_n`` and ``params_tau``, and the tier's tau on those
candidates is compared with it (:func:`paired_kendall`). The comparison is signed: a tier that
ranks the results in reverse (tau below zero) is below params, never used reversed.

The proxy screen applies the same rule, on the trained results it has at each refit, to its
calibrated ensemble (``screening.ProxyScreen``): a proxy that ranks worse than params there gets
weight 0; so does the supernet stage to its combined fit (a proxy, or the inherited accuracy as
the feature ``supernet``). Their labels are those of their last fit, so the set a fit zeroed can
differ from the tiers flagged here: each stage's rows record it (:data:`FITS`: the proxy rows'
``screen.zero_weight.<proxy>``, the supernet rows' ``supernet.zero_weight.<feature>``, on rows a
calibrated fit scored), and a tier's ``zero_weight`` says whether the latest such row of the
tier's own stage has it: a proxy tier the proxy screen's set, the ``supernet`` tier the supernet
stage's.

How a scoring stage joins the ladder (as the supernet stage does): its rows
are written through ``Outcomes.screened(proposal, "supernet", result)`` with its score among the
result's metrics, and one line here names it, e.g. ``Tier("supernet", "supernet",
"supernet.accuracy")`` in :data:`STAGE_TIERS`. The engine feeds every screening row to its
ladder and the readers build theirs from the stored rows, so nothing else changes; a stage tier
is shown once some completed candidate has its score.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from winnow.records import TrialRecord
from winnow.service.search_spec import Objective, SearchSpec

MIN_RESULTS = 5  # completed candidates before a tier's tau is reported
BASELINE = "params"
SCREENED_BY = "proxy"  # the stage whose row marks a candidate as one the cascade screened
CALIBRATED = "screen.calibrated"  # of a proxy row: a calibrated ensemble gave its score
ZERO_WEIGHT = "screen.zero_weight."  # + a proxy's name, of such a row: its fit gave it weight 0
# the supernet stage's (``supernet_rule``): its combined score, and the same two flags
SUPERNET_COMBINED = "supernet.combined"
SUPERNET_CALIBRATED = "supernet.calibrated"
SUPERNET_ZERO_WEIGHT = "supernet.zero_weight."


@dataclass(frozen=True)
class Fit:
    """How a stage's rows say that a calibrated fit scored them (``calibrated`` set and
    nonzero) and which features it gave weight 0 (``zero_weight`` + the feature's name)."""

    calibrated: str
    zero_weight: str


FITS = {
    SCREENED_BY: Fit(CALIBRATED, ZERO_WEIGHT),
    "supernet": Fit(SUPERNET_CALIBRATED, SUPERNET_ZERO_WEIGHT),
}


@dataclass(frozen=True)
class Tier:
    """One tier: the score is ``metric`` of the candidate's ``stage`` row (``train``: its
    completed result's own metrics), counted only where ``only_if`` (a metric of that row) is
    set and nonzero, when given."""

    name: str
    stage: str
    metric: str
    only_if: str | None = None

    def score(self, rows: Mapping[str, Mapping[str, Any]]) -> float | None:
        """This tier's score of one candidate from its rows' metrics by stage (None: none)."""
        metrics = rows.get(self.stage) or {}
        if self.only_if is not None and not metrics.get(self.only_if):
            return None
        value = metrics.get(self.metric)
        return None if value is None or not math.isfinite(float(value)) else float(value)


PARAMS = Tier(BASELINE, "train", BASELINE)  # the baseline every tier is compared with

# Tiers of the scoring stages after the proxy screen (see the module docstring): the supernet
# stage's inherited accuracy (``service/engine/supernet.py``'s ``METRIC``, spelled out: that
# module brings in the supernets and torch, which the ladder's readers do not need) and its
# combined score. The ``supernet`` tier's name is also its feature's in the combined fit
# (``supernet_rule.FEATURE``), so that its ``zero_weight`` shows on this tier.
STAGE_TIERS: tuple[Tier, ...] = (
    Tier("supernet", "supernet", "supernet.accuracy"),
    Tier("combined", "supernet", SUPERNET_COMBINED, only_if=SUPERNET_CALIBRATED),
)


def tiers(proxies: Sequence[str]) -> list[Tier]:
    """The ladder's tiers for a screen over ``proxies``, cheapest evidence first."""
    return [
        PARAMS,
        *(Tier(p, "proxy", f"proxy.{p}") for p in proxies if p != BASELINE),
        Tier("ensemble", "proxy", "screen.score", only_if=CALIBRATED),
        *STAGE_TIERS,
    ]


def kendall(scores: Sequence[float | None], results: Sequence[float]) -> tuple[int, float | None]:
    """``(n, tau)`` of the pairs where the score is known; tau None while ``n < MIN_RESULTS``
    or when it is undefined (all scores, or all results, equal)."""
    pairs = [(s, r) for s, r in zip(scores, results, strict=True) if s is not None]
    if len(pairs) < MIN_RESULTS:
        return len(pairs), None
    x, y = np.array(pairs, dtype=np.float64).T
    tau = stats.kendalltau(x, y).statistic
    return len(pairs), None if not np.isfinite(tau) else float(tau)


def paired_kendall(
    scores: Sequence[float | None], baseline: Sequence[float | None], results: Sequence[float]
) -> tuple[int, float | None, float | None]:
    """``(n, tau, baseline tau)`` over the pairs where both the score and the baseline are known:
    a tier and params compared on the same candidates."""
    both = [s is not None and b is not None for s, b in zip(scores, baseline, strict=True)]
    n, tau = kendall([s if k else None for s, k in zip(scores, both, strict=True)], results)
    _, base = kendall([b if k else None for b, k in zip(baseline, both, strict=True)], results)
    return n, tau, base


def below_baseline(taus: Mapping[str, float | None], baseline: str = BASELINE) -> set[str]:
    """The names whose tau is below the baseline's (both measured); the baseline never is."""
    reference = taus.get(baseline)
    if reference is None:
        return set()
    return {name for name, tau in taus.items() if tau is not None and tau < reference}


def result_value(objective: Objective, metrics: Mapping[str, Any]) -> float | None:
    """A completed result's value of the objective, higher is better (None: none)."""
    value = metrics.get(objective.name)
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value) if objective.direction == "maximize" else -float(value)


class EvidenceLadder:
    """The ladder of one search, fed as rows arrive (the engine: :meth:`scored` for each
    screening row, :meth:`completed` for each completed result) or from stored rows
    (:meth:`from_rows`, the readers'); :meth:`measure` is cached until a result arrives."""

    def __init__(self, ladder_tiers: Sequence[Tier], objective: Objective) -> None:
        self.tiers, self.objective = list(ladder_tiers), objective
        self._stages = {t.stage for t in self.tiers} - {"train"}
        self._kept = {t.stage: set() for t in self.tiers}
        for t in self.tiers:
            self._kept[t.stage] |= {t.metric} | ({t.only_if} if t.only_if else set())
        self.rows: dict[int, dict[str, dict[str, Any]]] = {}  # number -> stage -> metrics
        self.results: dict[int, float] = {}
        # by stage: (the candidate of its latest calibrated row, the set that row's fit zeroed)
        self._zeroed: dict[str, tuple[int, set[str]]] = {}
        self._measured: list[dict[str, Any]] | None = None
        # Engine.progress (a watcher's thread) measures while the engine's thread adds rows: the
        # lock guards the rows, and the generation keeps a measure begun before a result arrived
        # from being cached after it.
        self._lock = threading.Lock()
        self._generation = 0

    @classmethod
    def for_spec(cls, spec: SearchSpec) -> EvidenceLadder | None:
        """The ladder of a cascade's search (None for a plain strategy: no screen to measure,
        or a spec without objectives, ``readout.StoredSpec``'s stand-in)."""
        if not spec.objectives or not spec.strategy.cascade:
            return None
        return cls(tiers(spec.strategy.screen.proxies), spec.objectives[0])

    @classmethod
    def from_rows(cls, spec: SearchSpec, rows: Iterable[TrialRecord]) -> EvidenceLadder | None:
        """The ladder of a stored search's rows."""
        rows = list(rows)
        top = len(spec.strategy.rungs) - 1
        return cls.from_results(
            spec,
            ((r.number, r.metrics) for r in rows if r.completed(top)),
            ((r.number, r.stage, r.metrics) for r in rows if r.stage != "train"),
        )

    @classmethod
    def from_results(
        cls,
        spec: SearchSpec,
        completed: Iterable[tuple[int, Mapping[str, Any]]],
        scored: Iterable[tuple[int, str, Mapping[str, Any]]],
    ) -> EvidenceLadder | None:
        """The ladder of ``(number, metrics)`` of completed results and ``(number, stage,
        metrics)`` of screening rows (the dashboard's reads hold these columns)."""
        ladder = cls.for_spec(spec)
        if ladder is not None:
            for number, stage, metrics in scored:
                ladder.scored(number, stage, metrics)
            for number, metrics in completed:
                ladder.completed(number, metrics)
        return ladder

    def scored(self, number: int, stage: str, metrics: Mapping[str, Any]) -> None:
        """A screening stage's row of a candidate (failed rows carry no scores: ignored)."""
        if stage in self._stages and metrics:
            kept = {k: metrics[k] for k in self._kept[stage] if k in metrics}
            with self._lock:
                self.rows.setdefault(number, {})[stage] = kept
                self._note_fit(number, stage, metrics)
                self._generation += 1
                self._measured = None

    def _note_fit(self, number: int, stage: str, metrics: Mapping[str, Any]) -> None:
        """Keep the zeroed set of the stage's latest calibrated row; call with the lock held."""
        fit = FITS.get(stage)
        if fit is None or not metrics.get(fit.calibrated):
            return
        if number > self._zeroed.get(stage, (-1, set()))[0]:
            prefix = fit.zero_weight
            zeroed = {k[len(prefix) :] for k in metrics if k.startswith(prefix)}
            self._zeroed[stage] = (number, zeroed)

    def completed(self, number: int, metrics: Mapping[str, Any]) -> None:
        """A completed (top-rung) result of a candidate."""
        value = result_value(self.objective, metrics)
        if value is None:
            return
        with self._lock:
            self.rows.setdefault(number, {})["train"] = {BASELINE: metrics.get(BASELINE)}
            self.results[number] = value
            self._generation += 1
            self._measured = None

    def measure(self) -> list[dict[str, Any]]:
        """Per tier ``{"tier", "n", "tau", "below_params", "params_n", "params_tau",
        "zero_weight"}`` (see the module docstring); a copy, cached until a row arrives."""
        with self._lock:
            measured, generation = self._measured, self._generation
            if measured is None:
                snapshot = self._snapshot()
                zeroed = {stage: set(names) for stage, (_, names) in self._zeroed.items()}
        if measured is None:
            measured = self._measure(*snapshot)
            stages = {t.name: t.stage for t in self.tiers}
            for tier in measured:
                tier["zero_weight"] = tier["tier"] in zeroed.get(stages[tier["tier"]], set())
            with self._lock:
                if self._generation == generation:  # nothing arrived meanwhile
                    self._measured = measured
        return [dict(tier) for tier in measured]

    def _snapshot(self) -> tuple[list[dict[str, dict[str, Any]]], list[float]]:
        """The rows and results of the completed candidates the screen scored (the stage rows
        are replaced, never changed, so a shallow copy holds); call with the lock held."""
        known = [(n, r) for n, r in self.results.items() if SCREENED_BY in self.rows.get(n, {})]
        return [dict(self.rows[n]) for n, _ in known], [r for _, r in known]

    def _measure(
        self, rows: list[dict[str, dict[str, Any]]], results: list[float]
    ) -> list[dict[str, Any]]:
        baseline = [PARAMS.score(r) for r in rows]
        measured = []
        for tier in self.tiers:
            scores = [tier.score(r) for r in rows]
            n, tau = kendall(scores, results)
            if tier in STAGE_TIERS and n == 0:
                continue  # a stage tier is shown once some completed candidate has its score
            paired_n, paired, base = paired_kendall(scores, baseline, results)
            below = tier.name != BASELINE and bool(
                below_baseline({tier.name: paired, BASELINE: base})
            )
            measured.append(
                {
                    "tier": tier.name,
                    "n": n,
                    "tau": tau,
                    "below_params": below,
                    "params_n": paired_n,
                    "params_tau": base,
                }
            )
        return measured
