"""The proxy benchmark's statistics on synthetic scores: the K-fold cross-fit of the calibrated
ensemble, and the evaluation / all-cells figures of each summary."""

from __future__ import annotations

import numpy as np
import pytest

from winnow.bench import proxy_stats
from winnow.bench.proxy_stats import (
    calibrated_summary,
    cross_fit_predictions,
    fold_indices,
    rank_correlations,
    rank_summary,
    split_indices,
)
from winnow.proxies.ensemble import rank_ensemble


def synthetic(n: int = 60, seed: int = 0) -> tuple[dict[str, list[float | None]], np.ndarray]:
    """Three noisy proxies of a ground truth (one of them sometimes missing)."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(10, 94, n)
    features: dict[str, list[float | None]] = {
        "a": list(truth + rng.normal(0, 10, n)),
        "b": list(np.exp(truth / 20 + rng.normal(0, 1, n))),
        "c": [None if i % 7 == 0 else float(v) for i, v in enumerate(rng.normal(0, 1, n))],
    }
    return features, truth


def test_folds_partition_the_cells_seeded_and_near_equal():
    folds = fold_indices(23, 5, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(23))
    assert sorted(len(f) for f in folds) == [4, 4, 5, 5, 5]
    same, other = fold_indices(23, 5, seed=3), fold_indices(23, 5, seed=4)
    assert all(np.array_equal(f, g) for f, g in zip(folds, same, strict=True))
    assert not all(np.array_equal(f, g) for f, g in zip(folds, other, strict=True))
    with pytest.raises(ValueError, match="at least 2 folds"):
        fold_indices(23, 1, seed=0)


def test_the_cross_fit_never_fits_on_the_fold_it_predicts(monkeypatch):
    features, truth = synthetic()
    fitted_on: list[np.ndarray] = []
    fit = proxy_stats.fit_calibrated

    def spy(features, truth, calibration, seed, **kwargs):
        fitted_on.append(np.asarray(calibration))
        return fit(features, truth, calibration, seed, **kwargs)

    monkeypatch.setattr(proxy_stats, "fit_calibrated", spy)
    folds = fold_indices(len(truth), 4, seed=0)
    predicted = cross_fit_predictions(features, truth, folds, seed=0)
    assert len(fitted_on) == 4
    for fold, rows in zip(folds, fitted_on, strict=True):
        assert not set(fold) & set(rows)
        assert sorted([*fold, *rows]) == list(range(len(truth)))
    assert np.isfinite(predicted).all()
    # each fold's scores are those of a model fitted without it
    for fold, rows in zip(folds, fitted_on, strict=True):
        alone = fit(features, truth, rows, 0).predict(proxy_stats.feature_rows(features, fold))
        np.testing.assert_array_equal(predicted[fold], alone)


def test_calibrated_all_cells_figure_pools_the_out_of_fold_scores():
    features, truth = synthetic()
    calibration, evaluation = split_indices(len(truth), 0.4, seed=0)
    summary = calibrated_summary(features, truth, calibration, evaluation, seed=0, folds=3)
    pooled = cross_fit_predictions(features, truth, fold_indices(len(truth), 3, 0), seed=0)
    assert summary["spearman_all"] == rank_correlations(pooled, truth)["spearman"]
    assert summary["spearman_all"] > 0.5 and len(summary["spearman_per_fold"]) == 3
    headline = proxy_stats.fit_calibrated(features, truth, calibration, 0)
    on_eval = headline.predict(proxy_stats.feature_rows(features, evaluation))
    expected = rank_correlations(on_eval, truth[evaluation])
    assert summary["spearman_evaluation"] == summary["spearman"] == expected["spearman"]


def test_a_cross_fit_with_too_few_cells_reports_none():
    features, truth = synthetic(n=4)
    calibration, evaluation = split_indices(4, 0.5, seed=0)
    summary = calibrated_summary(features, truth, calibration, evaluation, seed=0, folds=5)
    assert summary["spearman_all"] is None and summary["spearman_evaluation"] is not None


def test_rank_summary_ranks_the_evaluation_cells_among_themselves():
    features, truth = synthetic()
    _, evaluation = split_indices(len(truth), 0.4, seed=1)
    summary = rank_summary(features, truth, evaluation)
    within = rank_ensemble(proxy_stats.feature_rows(features, evaluation))
    expected = rank_correlations(within, truth[evaluation])["spearman"]
    assert summary["spearman_evaluation"] == expected
    on_all = rank_correlations(rank_ensemble(features), truth)["spearman"]
    assert summary["spearman_all"] == summary["spearman"] == on_all
    assert summary["proxies"] == ["a", "b", "c"]
