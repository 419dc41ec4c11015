"""Ensembles of zero-cost proxies: a rank aggregation and a calibrated, learned combination.

- :func:`rank_ensemble` is the non-parametric aggregation of AZ-NAS (Lee & Ham, "AZ-NAS:
  Assembling Zero-Cost Proxies for Network Architecture Search", CVPR 2024): every proxy ranks
  the population and a candidate's score is the sum over proxies of ``log(rank / N)``, so a
  candidate that any proxy ranks near the bottom is pulled down hard.
- :class:`CalibratedEnsemble` is parametric in the spirit of ParZC (Dong et al., "ParZC:
  Parametric Zero-Cost Proxies for Efficient NAS", 2024): a linear combination of per-proxy
  features whose weights are learned against ground truth on a calibration set with a
  differentiable rank loss, then applied to new candidates one at a time or in bulk.

A proxy value is a float, or ``None`` / NaN / ±inf when the proxy failed ("missing"). Values may
also be objects with a ``value`` attribute (``winnow.proxies.ProxyScore``), so the output of
``score_model`` can be passed as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy import special, stats

FORMAT_VERSION = 1


def _as_float(value: Any) -> float:
    """A proxy value as a float, NaN when missing or non-finite."""
    value = getattr(value, "value", value)
    if value is None:
        return math.nan
    value = float(value)
    return value if math.isfinite(value) else math.nan


def _column(values: Sequence[Any]) -> np.ndarray:
    return np.array([_as_float(v) for v in values], dtype=np.float64)


def _columns(features: Mapping[str, Sequence[Any]], proxies: Sequence[str]) -> list[np.ndarray]:
    """The named columns as float arrays of one length (NaN = missing)."""
    absent = [p for p in proxies if p not in features]
    if absent:
        raise ValueError(f"no values for proxies {absent}; given: {sorted(features)}")
    columns = [_column(features[p]) for p in proxies]
    lengths = {len(c) for c in columns}
    if len(lengths) > 1:
        raise ValueError(f"proxies have different numbers of values: {sorted(lengths)}")
    return columns


# --- AZ-NAS rank aggregation ----------------------------------------------------------------


def rank_ensemble(scores: Mapping[str, Sequence[float | None]]) -> np.ndarray:
    """AZ-NAS rank aggregation: ``sum_k log(rank_k / N)`` over proxies ``k``.

    ``rank_k`` ranks the population ascending by proxy ``k`` (1 = lowest score, N = highest),
    ties get their average rank (``scipy.stats.rankdata``, as AZ-NAS's code does), and missing
    values rank below every real value (tied among themselves). Higher is better; the best
    possible score is 0.
    """
    if not scores:
        raise ValueError("rank_ensemble needs at least one proxy")
    columns = _columns(scores, list(scores))
    n = len(columns[0])
    total = np.zeros(n)
    for column in columns:
        ranks = stats.rankdata(np.where(np.isnan(column), -np.inf, column))
        total += np.log(ranks / n)
    return total


# Near-copies among the registered proxies: any two of a group rank NAS-Bench-201 cells almost
# exactly alike (Spearman >= 0.95 between them across the cells of ``winnow bench proxies``,
# ``--report-near-copies``), so a rank ensemble of both would count one signal twice. ``params``
# and ``flops`` are both set by the cell's conv edges (1.000); ``snip``, ``grad_norm`` and
# ``fisher`` are saliencies of one backward pass (grad_norm-snip 0.998, fisher-snip 0.964,
# fisher-grad_norm 0.963: every pair, so the rule is transitive). The next pair, synflow-zico, is
# at 0.92 (386 cells; docs/proxies.md has the table). Each group is in order of preference.
# Adding fisher was decided partly while looking at evaluation-cell figures of the first cells of
# the seed-0 sample (``winnow.bench.proxy_stats.EXPLORED_PREFIX`` bounds them).
NEAR_COPIES = (("flops", "params"), ("snip", "grad_norm", "fisher"))


def deduplicated(proxies: Sequence[str]) -> list[str]:
    """``proxies`` keeping, of each group of ``NEAR_COPIES``, only its first member present (so
    ``grad_norm`` and ``fisher`` without ``snip`` keep ``grad_norm`` alone): the rank ensemble's
    default set, in the order given."""
    present = set(proxies)
    dropped = set()
    for group in NEAR_COPIES:
        members = [p for p in group if p in present]
        dropped.update(members[1:])
    return [p for p in proxies if p not in dropped]


# AZ-NAS's own ensemble: its four proxies, complexity being the FLOPs (the code reads them from
# the benchmark's table, ``api_flops``), aggregated by :func:`rank_ensemble` exactly as the code's
# ``rank_agg`` (NB201/tss_general.ipynb): ``sum_k log(rankdata(s_k) / N)``. The one place that
# applies it is ``winnow.bench.proxy_stats.aznas_summary``.
AZNAS_PROXIES = ("az_expressivity", "az_progressivity", "az_trainability", "flops")


# --- per-proxy features ---------------------------------------------------------------------


MAX_KNOTS = 256  # knots kept per proxy: bounds the stored size, not the calibration set's


@dataclass(frozen=True)
class FeatureTransform:
    """One proxy's feature: the normal score of its calibration ECDF, ``Phi^-1(F(x))`` (or, in
    the ``log`` basis, ``log F(x)``: see ``BASES``).

    ``F`` interpolates linearly between the distinct calibration values (``knots``), each at
    its mid-ECDF level ``(#below + #equal / 2) / n`` (``levels``), and is clamped to the end
    levels outside the calibration range. The feature depends on a proxy's values only through
    their order, so scales (synflow near 1e30, GRASP around 0 with either sign) need no tuning,
    and any monotone distortion of a proxy is undone; it stays within about +-3.3 for 1,000
    calibration cells, so one extreme new candidate cannot dominate a linear score. The price:
    two new candidates beyond the calibration range of a proxy tie on that proxy (the other
    proxies still separate them). A missing value gets ``floor`` (``log`` of the lowest level in
    the ``log`` basis), the lowest feature seen in calibration (the "worst" convention of
    :func:`rank_ensemble`). Nothing depends on the rest of the population, so it applies to one
    new candidate as well as to many.

    Written with ``np.interp`` rather than scikit-learn's ``QuantileTransformer`` because it
    must serialise to JSON and be rebuilt from it.
    """

    knots: tuple[float, ...]
    levels: tuple[float, ...]
    floor: float

    @classmethod
    def fit(cls, values: np.ndarray, max_knots: int = MAX_KNOTS) -> FeatureTransform:
        seen = values[~np.isnan(values)]
        if len(seen) == 0:  # never observed: a constant feature that no weight can use
            return cls((0.0,), (0.5,), 0.0)
        knots, counts = np.unique(seen, return_counts=True)
        levels = (np.cumsum(counts) - counts / 2) / len(seen)
        if len(knots) > max_knots:  # keep both ends and evenly spaced knots between
            keep = np.unique(np.linspace(0, len(knots) - 1, max_knots).round().astype(int))
            knots, levels = knots[keep], levels[keep]
        floor = float(stats.norm.ppf(levels[0]))
        return cls(tuple(map(float, knots)), tuple(map(float, levels)), floor)

    def apply(self, values: np.ndarray, basis: str = "normal") -> np.ndarray:
        """The feature of ``values`` in ``basis`` (``BASES``): ``normal``, the normal score
        ``Phi^-1(F(x))``, or ``log``, ``log F(x)``; a missing value gets the basis's floor."""
        level = np.interp(values, self.knots, self.levels)
        if basis == "log":
            return np.where(np.isnan(values), math.log(self.levels[0]), np.log(level))
        # ndtri is norm.ppf without its argument checks (equal values, 80x faster on one row:
        # the cascade's screen applies this to every proposal)
        return np.where(np.isnan(values), self.floor, special.ndtri(level))


# The bases a proxy's ECDF level ``F`` enters the linear score through. ``normal`` (Phi^-1(F)) is
# symmetric; ``log`` (log F) is AZ-NAS's ``log(rank / N)``: flat at the top, steep at the bottom,
# so a proxy that places a cell among its lowest pulls the score down hard. Both together give
# each proxy a monotone two-term shape, learned like the weights.
BASES = ("normal", "log")


# --- differentiable rank losses -------------------------------------------------------------


MAX_PAIRS = 200_000  # pairs grow as n^2: beyond this, a seeded random subset of them is used


def pair_differences(z: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """``z[i] - z[j]`` for every untied pair with ``target[i] > target[j]`` (better row first),
    or ``MAX_PAIRS`` of them drawn with ``rng``.

    A linear score's pair margin ``s_i - s_j`` is this times the weights, so the pairs are
    formed once per fit rather than gathered (and scattered back in backward) at every step."""
    i, j = np.nonzero(target[:, None] > target[None, :])
    if len(i) > MAX_PAIRS:
        keep = np.sort(rng.choice(len(i), MAX_PAIRS, replace=False))
        i, j = i[keep], j[keep]
    return torch.from_numpy(z[i] - z[j])


def pairwise_logistic_loss(margin: torch.Tensor, tau: float) -> torch.Tensor:
    """RankNet's pairwise logistic loss (Burges et al., ICML 2005): the mean over untied pairs of
    ``log(1 + exp(-(s_i - s_j) / tau))``, ``margin = s_i - s_j`` with ``i`` the better of the
    pair. Convex in a linear model's weights, so training is stable and its optimum unique."""
    return torch.nn.functional.softplus(-margin / tau).mean()


def soft_kendall_loss(margin: torch.Tensor, tau: float) -> torch.Tensor:
    """Minus a soft Kendall tau (ParZC's DiffKendall): the mean over untied pairs of
    ``-tanh((s_i - s_j) / tau) * sign(y_i - y_j)``; every pair is listed better-first, so the
    sign is +1. As ``tau -> 0`` this is minus Kendall's tau over untied pairs."""
    # tanh(x) = 2 sigmoid(2x) - 1, exactly: float64 torch.tanh is about 1,000 times slower than
    # sigmoid on the CPU build this project uses (torch 2.13), which made fits take seconds.
    return -(2 * torch.sigmoid(2 * margin / tau) - 1).mean()


LOSSES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "logistic": pairwise_logistic_loss,
    "kendall": soft_kendall_loss,
}


# --- the calibrated ensemble ----------------------------------------------------------------


@dataclass(frozen=True)
class FitSettings:
    """How :class:`CalibratedEnsemble` learns its weights.

    Full-batch Adam on a rank loss plus ``weight_decay * |w|^2``, from zero weights. Early
    stopping: ``validation_fraction`` of the calibration rows (chosen with the seed) are held out
    and the weights with the lowest held-out loss are kept; with fewer than ``min_validation``
    held-out rows there is no hold-out and the weights after ``max_steps`` are kept.
    """

    loss: str = "logistic"
    tau: float = 1.0
    weight_decay: float = 1e-3
    lr: float = 0.05
    max_steps: int = 400
    patience: int = 50
    validation_fraction: float = 0.2
    min_validation: int = 8
    # One feature per proxy and basis (``BASES``). Last, and left out of ``to_dict`` at its
    # default, so that builds from before it existed read new dicts of the default fit.
    bases: tuple[str, ...] = ("normal",)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; allowed: {', '.join(LOSSES)}")
        object.__setattr__(self, "bases", tuple(self.bases))  # a list, from JSON
        if not self.bases or len(set(self.bases)) < len(self.bases):
            raise ValueError(f"bases must be distinct and at least one: {list(self.bases)}")
        unknown = [b for b in self.bases if b not in BASES]
        if unknown:
            raise ValueError(f"unknown bases {unknown}; allowed: {', '.join(BASES)}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError("validation_fraction must be in [0, 1)")


class CalibratedEnsemble:
    """A linear ensemble of proxy features learned with a rank loss on a calibration set.

    ``score(candidate) = sum_k sum_b w_kb * feature_b(proxy_k(candidate))`` with each proxy's
    :class:`FeatureTransform` fitted on the calibration values and ``b`` over the settings'
    ``bases`` (one weight per proxy with the default); only the order of scores matters.
    """

    def __init__(self, proxies: Sequence[str], settings: FitSettings | None = None, **kwargs):
        if not proxies or len(set(proxies)) != len(proxies):
            raise ValueError(f"proxies must be distinct names, at least one: {list(proxies)}")
        self.proxies = list(proxies)
        self.settings = settings or FitSettings(**kwargs)
        self.transforms: list[FeatureTransform] | None = None
        self.coef: np.ndarray | None = None
        self.fit_info: dict[str, Any] = {}

    # --- learning ---------------------------------------------------------------------------

    def fit(
        self,
        features: Mapping[str, Sequence[Any]],
        target: Sequence[float],
        seed: int = 0,
        zero: Collection[str] = (),
    ) -> CalibratedEnsemble:
        """Learn the transforms and weights from calibration rows (``features[p][i]`` is proxy
        ``p`` of row ``i``, ``target[i]`` its ground truth, higher is better). The proxies in
        ``zero`` get weight 0 (their transforms are still fitted, so ``predict`` takes the same
        columns); the others' weights are those of a fit without them."""
        unknown = set(zero) - set(self.proxies)
        if unknown:
            raise ValueError(f"zero names proxies not in the ensemble: {sorted(unknown)}")
        columns = _columns(features, self.proxies)
        y = np.asarray(target, dtype=np.float64)
        if len(y) != len(columns[0]) or not np.isfinite(y).all() or len(np.unique(y)) < 2:
            raise ValueError(
                f"target needs one finite value per row, not all equal; "
                f"got {len(y)} targets for {len(columns[0])} rows"
            )
        self.transforms = [FeatureTransform.fit(c) for c in columns]
        z = self._design(columns)
        rng = np.random.default_rng(seed)
        train, held_out = _holdout_split(len(y), self.settings, rng)
        columns_of = [p for p in self.proxies for _ in self.settings.bases]
        weighed = [k for k, p in enumerate(columns_of) if p not in zero]
        self.coef, self.fit_info = np.zeros(len(columns_of)), {}
        if weighed:
            design = z if len(weighed) == len(columns_of) else z[:, weighed]
            coef, self.fit_info = _train_weights(design, y, train, held_out, self.settings, rng)
            self.coef[weighed] = coef
        if zero:
            self.fit_info["zero_weight"] = [p for p in self.proxies if p in zero]
        return self

    def _design(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        """The feature matrix, rows x (proxies x bases), each proxy's bases side by side."""
        assert self.transforms is not None
        pairs = zip(self.transforms, columns, strict=True)
        return np.stack([t.apply(c, b) for t, c in pairs for b in self.settings.bases], 1)

    def feature_names(self) -> list[str]:
        """One per weight: the proxy's name for the ``normal`` basis, ``proxy:basis`` else."""
        return [
            p if b == "normal" else f"{p}:{b}" for p in self.proxies for b in self.settings.bases
        ]

    # --- applying ---------------------------------------------------------------------------

    def predict(self, features: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """Scores of many candidates (higher is better); same layout as :meth:`fit`."""
        if self.coef is None:
            raise RuntimeError("CalibratedEnsemble.predict before fit (or from_dict)")
        z = self._design(_columns(features, self.proxies))
        # A sum of columns rather than ``z @ coef``: BLAS rounds a matrix product differently
        # for different row counts, and predict_one must equal predict on the same row exactly.
        total = np.zeros(len(z))
        for k, weight in enumerate(self.coef):
            total = total + weight * z[:, k]
        return total

    def predict_one(self, scores: Mapping[str, Any]) -> float:
        """Score of one candidate from its proxy values (floats, None, or ProxyScores)."""
        return float(self.predict({p: [scores[p]] for p in self.proxies if p in scores})[0])

    @property
    def weights(self) -> dict[str, float]:
        """Weight per feature (:meth:`feature_names`: per proxy with the default basis, whose
        features are normal scores of unit variance, so sizes compare)."""
        if self.coef is None:
            raise RuntimeError("CalibratedEnsemble has no weights before fit")
        return dict(zip(self.feature_names(), map(float, self.coef), strict=True))

    # --- storage ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to predict, as plain JSON types."""
        if self.coef is None or self.transforms is None:
            raise RuntimeError("CalibratedEnsemble.to_dict before fit")
        return {
            "kind": "calibrated_ensemble",
            "version": FORMAT_VERSION,
            "proxies": list(self.proxies),
            "weights": [float(w) for w in self.coef],
            "transforms": [
                {"knots": list(t.knots), "levels": list(t.levels), "floor": t.floor}
                for t in self.transforms
            ],
            "settings": _settings_dict(self.settings),
            "fit_info": dict(self.fit_info),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibratedEnsemble:
        if data.get("kind") != "calibrated_ensemble" or data.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"not a version-{FORMAT_VERSION} calibrated ensemble: "
                f"kind={data.get('kind')!r}, version={data.get('version')!r}"
            )
        ensemble = cls(data["proxies"], FitSettings(**data["settings"]))
        ensemble.transforms = [
            FeatureTransform(tuple(t["knots"]), tuple(t["levels"]), t["floor"])
            for t in data["transforms"]
        ]
        ensemble.coef = np.asarray(data["weights"], dtype=np.float64)
        bases = len(ensemble.settings.bases)
        if (
            not len(ensemble.coef)
            == bases * len(ensemble.transforms)
            == bases * len(ensemble.proxies)
        ):
            raise ValueError("weights, transforms and proxies (times bases) differ in length")
        ensemble.fit_info = dict(data.get("fit_info", {}))
        return ensemble


def _settings_dict(settings: FitSettings) -> dict[str, Any]:
    """``settings`` as JSON, without ``bases`` when it is the default (one older builds assume)."""
    out = asdict(settings)
    if settings.bases == FitSettings().bases:
        del out["bases"]
    else:
        out["bases"] = list(settings.bases)
    return out


def _holdout_split(
    n: int, settings: FitSettings, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows for early stopping) of the calibration set."""
    order = rng.permutation(n)
    n_held = int(round(settings.validation_fraction * n))
    if n_held < settings.min_validation or n - n_held < 2:
        return np.sort(order), np.array([], dtype=np.int64)
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def _train_weights(
    z: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    held_out: np.ndarray,
    settings: FitSettings,
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Weights minimising the rank loss on ``train`` rows, early-stopped on ``held_out`` rows.

    Float64 and full batches from zero weights: the only randomness is ``rng`` (the held-out
    rows, and the pairs when there are too many), so a seed fixes the result."""
    loss_fn = LOSSES[settings.loss]
    train_pairs = pair_differences(z[train], y[train], rng)
    held_pairs = pair_differences(z[held_out], y[held_out], rng)
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=settings.lr)
    best_w, best_loss, best_step = w.detach().clone(), math.inf, 0
    for step in range(1, settings.max_steps + 1):
        optimizer.zero_grad()
        loss = loss_fn(train_pairs @ w, settings.tau)
        (loss + settings.weight_decay * w.square().sum()).backward()
        optimizer.step()
        if len(held_pairs) == 0:  # no hold-out (or no untied pair in it): keep the last weights
            best_w, best_step = w.detach().clone(), step
            continue
        with torch.no_grad():
            held_loss = float(loss_fn(held_pairs @ w, settings.tau))
        if held_loss < best_loss - 1e-9:
            best_w, best_loss, best_step = w.detach().clone(), held_loss, step
        elif step - best_step >= settings.patience:
            break
    info = {"steps": best_step, "n_train": len(train), "n_held_out": len(held_out)}
    if len(held_pairs):
        info["held_out_loss"] = best_loss
    return best_w.numpy().copy(), info
