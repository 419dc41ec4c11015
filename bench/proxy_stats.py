"""The proxy benchmark's statistics: rank correlations with the ground truth, the seeded
calibration/evaluation split, and each proxy's and each ensemble's summary."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from winnow.proxies.ensemble import AZNAS_PROXIES, CalibratedEnsemble, rank_ensemble

if TYPE_CHECKING:
    from winnow.bench.proxies import CellScores


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def rank_correlations(predicted: Sequence[float | None], truth: Sequence[float]) -> dict:
    """Spearman's rho and Kendall's tau (scipy.stats; tau-b, which handles ties) of predictions
    against ground truth. Missing predictions rank below every real one, the convention of
    :func:`rank_ensemble`, so a proxy is not flattered by failing on bad cells. None where a
    correlation is undefined (fewer than 2 cells, or constant values)."""
    pred = np.array([-np.inf if v is None else v for v in predicted], dtype=np.float64)
    pred = np.where(np.isnan(pred), -np.inf, pred)
    truth = np.asarray(truth, dtype=np.float64)
    if len(pred) < 2:
        return {"spearman": None, "kendall": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: scipy warns and returns NaN
        rho = stats.spearmanr(pred, truth).statistic
        tau = stats.kendalltau(pred, truth).statistic
    return {"spearman": _none_if_nan(rho), "kendall": _none_if_nan(tau)}


def split_indices(n: int, calibration_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, evaluation) indices: a seeded partition of ``range(n)``, disjoint. The
    generator is seeded with ``(seed, 1)``, a stream apart from the one that drew the sample."""
    order = np.random.default_rng((seed, 1)).permutation(n)
    n_calibration = min(max(int(round(calibration_fraction * n)), 0), n)
    return np.sort(order[:n_calibration]), np.sort(order[n_calibration:])


def per_proxy_summary(cells: Sequence[CellScores], truth: Sequence[float], name: str) -> dict:
    values = [c.values.get(name) for c in cells]
    errors = [c.errors[name] for c in cells if name in c.errors]
    summary = rank_correlations(values, truth)
    summary["seconds_per_arch"] = round(float(np.mean([c.seconds[name] for c in cells])), 5)
    summary["failures"] = sum(v is None for v in values)
    if errors:
        summary["first_error"] = errors[0][:300]
    return summary


def feature_rows(
    features: Mapping[str, Sequence[float | None]], index: np.ndarray
) -> dict[str, list[float | None]]:
    """The rows ``index`` of every feature column."""
    return {name: [column[i] for i in index] for name, column in features.items()}


def fit_calibrated(
    features: Mapping[str, Sequence[float | None]],
    truth: np.ndarray,
    calibration: np.ndarray,
    seed: int,
) -> CalibratedEnsemble | None:
    """A :class:`CalibratedEnsemble` of every feature fitted on the calibration rows only;
    None with fewer than two calibration rows or a single accuracy among them."""
    if len(calibration) < 2 or len(np.unique(truth[calibration])) < 2:
        return None
    rows = feature_rows(features, calibration)
    return CalibratedEnsemble(list(features)).fit(rows, truth[calibration], seed)


def top_precision(
    predicted: Sequence[float | None], truth: Sequence[float], fraction: float = 0.05
) -> float | None:
    """Precision at the top ``fraction``: of the ``k = ceil(fraction * n)`` cells ranked best
    by ``predicted`` (missing values last, ties broken by position), the fraction that are
    among the ``k`` truly best. None for no cells."""
    n = len(truth)
    if n == 0:
        return None
    k = max(1, math.ceil(fraction * n))
    pred = np.array([-np.inf if v is None else v for v in predicted], dtype=np.float64)
    pred = np.where(np.isnan(pred), -np.inf, pred)
    chosen = np.argsort(-pred, kind="stable")[:k]
    best = np.argsort(-np.asarray(truth, dtype=np.float64), kind="stable")[:k]
    return round(len(set(chosen.tolist()) & set(best.tolist())) / k, 4)


def calibrated_summary(
    features: Mapping[str, Sequence[float | None]],
    truth: np.ndarray,
    calibration: np.ndarray,
    evaluation: np.ndarray,
    seed: int,
) -> dict[str, Any]:
    """Fit a :class:`CalibratedEnsemble` on the calibration rows only, and report it on the
    evaluation rows (``spearman``, ``kendall``) and on the calibration rows."""
    ensemble = fit_calibrated(features, truth, calibration, seed)
    if ensemble is None or len(evaluation) < 2:
        return {
            "spearman": None,
            "kendall": None,
            "spearman_calibration_split": None,
            "error": "too few cells (or one accuracy) to calibrate on and evaluate",
        }
    summary = rank_correlations(
        ensemble.predict(feature_rows(features, evaluation)), truth[evaluation]
    )
    on_calibration = rank_correlations(
        ensemble.predict(feature_rows(features, calibration)), truth[calibration]
    )
    summary["spearman_calibration_split"] = on_calibration["spearman"]
    summary["weights"] = {k: round(v, 4) for k, v in ensemble.weights.items()}
    summary["fit"] = ensemble.fit_info
    return summary


def rank_summary(
    features: Mapping[str, Sequence[float | None]], truth: np.ndarray, evaluation: np.ndarray
) -> dict[str, Any]:
    """The AZ-NAS rank ensemble over every sampled cell, and (for comparison with the
    calibrated ensemble) ranked within the evaluation split alone."""
    summary = rank_correlations(rank_ensemble(features), truth)
    if len(evaluation) >= 2:
        on_eval = rank_ensemble({k: [v[i] for i in evaluation] for k, v in features.items()})
        summary["spearman_evaluation_split"] = rank_correlations(on_eval, truth[evaluation])[
            "spearman"
        ]
    return summary


def aznas_summary(
    features: Mapping[str, Sequence[float | None]], truth: np.ndarray, evaluation: np.ndarray
) -> dict[str, Any] | None:
    """AZ-NAS's own ensemble (its four proxies, ``AZNAS_PROXIES``, rank-aggregated) reported as
    :func:`rank_summary` reports winnow's; None when the run did not score all four."""
    if any(name not in features for name in AZNAS_PROXIES):
        return None
    summary = rank_summary({name: features[name] for name in AZNAS_PROXIES}, truth, evaluation)
    summary["proxies"] = list(AZNAS_PROXIES)
    return summary
