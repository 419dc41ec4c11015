"""Proxy ensembles: the AZ-NAS rank aggregation and the calibrated (learned) ensemble."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy import stats

from winnow.proxies.ensemble import (
    NEAR_COPIES,
    CalibratedEnsemble,
    FeatureTransform,
    FitSettings,
    deduplicated,
    pair_differences,
    pairwise_logistic_loss,
    rank_ensemble,
    soft_kendall_loss,
)


@dataclass(frozen=True)
class Score:
    """Stands in for winnow.proxies.ProxyScore (only ``value`` is read)."""

    value: float | None
    seconds: float = 0.0
    error: str | None = None


# --- rank ensemble --------------------------------------------------------------------------


def test_rank_ensemble_matches_hand_computed_ranks_with_ties_and_missing():
    scores = {
        "a": [1.0, 3.0, 3.0, None],  # ranks 2, 3.5, 3.5 (tied), 1 (missing is lowest)
        "b": [0.5, float("nan"), 2.0, 1.0],  # ranks 2, 1 (NaN is missing), 4, 3
    }
    expected = [
        math.log(2 / 4) + math.log(2 / 4),
        math.log(3.5 / 4) + math.log(1 / 4),
        math.log(3.5 / 4) + math.log(4 / 4),
        math.log(1 / 4) + math.log(3 / 4),
    ]
    np.testing.assert_allclose(rank_ensemble(scores), expected)


def test_rank_ensemble_ties_missing_values_among_themselves_and_treats_inf_as_missing():
    got = rank_ensemble({"a": [None, float("inf"), 5.0]})  # two missing share ranks 1 and 2
    np.testing.assert_allclose(got, [math.log(1.5 / 3), math.log(1.5 / 3), 0.0])


def test_rank_ensemble_rejects_ragged_or_empty_input():
    with pytest.raises(ValueError, match="different numbers"):
        rank_ensemble({"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(ValueError, match="at least one"):
        rank_ensemble({})


# --- rank losses ----------------------------------------------------------------------------


def test_rank_losses_match_their_pairwise_definitions():
    """Reference: loops over pairs i < j with y_i != y_j of a linear score s = z @ w."""
    rng = np.random.default_rng(11)
    z, w = rng.normal(size=(9, 3)), np.array([0.5, -1.0, 2.0])
    y = np.array([3.0, 1.0, 2.0, 2.0, 5.0, 1.0, 0.0, 4.0, 2.0])  # with ties
    s, tau = z @ w, 0.7
    pairs = [(i, j) for i in range(9) for j in range(i + 1, 9) if y[i] != y[j]]
    soft_tau = np.mean([np.tanh((s[i] - s[j]) / tau) * np.sign(y[i] - y[j]) for i, j in pairs])
    logistic = np.mean(
        [np.log1p(np.exp(-(s[i] - s[j]) * np.sign(y[i] - y[j]) / tau)) for i, j in pairs]
    )
    margins = pair_differences(z, y, np.random.default_rng(0)) @ torch.from_numpy(w)
    assert float(soft_kendall_loss(margins, tau)) == pytest.approx(-soft_tau, rel=1e-12)
    assert float(pairwise_logistic_loss(margins, tau)) == pytest.approx(logistic, rel=1e-12)


# --- calibrated ensemble --------------------------------------------------------------------


def synthetic(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Two proxies on wildly different scales whose target is a known monotone combination:
    a = 1e6 * exp(u) (heavy-tailed, like synflow), b = 1e-3 * v (around 0 with either sign,
    like GRASP), target = 2u - v + noise."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=n), rng.normal(size=n)
    features = {"a": 1e6 * np.exp(u), "b": 1e-3 * v}
    return features, 2 * u - v + 0.3 * rng.normal(size=n)


def rows(features: dict[str, np.ndarray], index) -> dict[str, list]:
    return {k: list(v[index]) for k, v in features.items()}


@pytest.mark.parametrize("loss", ["logistic", "kendall"])
def test_calibrated_ensemble_recovers_a_monotone_combination_on_held_out_rows(loss):
    features, target = synthetic(400, seed=1)
    calibration, held_out = np.arange(150), np.arange(150, 400)
    ensemble = CalibratedEnsemble(["a", "b"], loss=loss)
    ensemble.fit(rows(features, calibration), target[calibration], seed=0)
    predicted = ensemble.predict(rows(features, held_out))
    rho = stats.spearmanr(predicted, target[held_out]).statistic
    singles = [
        abs(stats.spearmanr(features[k][held_out], target[held_out]).statistic) for k in "ab"
    ]
    assert rho > 0.93 and rho > max(singles) + 0.05, (rho, singles)
    assert ensemble.weights["a"] > 0 > ensemble.weights["b"]


def test_calibrated_ensemble_is_deterministic_for_a_seed():
    features, target = synthetic(120, seed=2)
    fit = lambda seed: CalibratedEnsemble(["a", "b"]).fit(features, target, seed=seed).to_dict()  # noqa: E731
    assert fit(0) == fit(0)
    assert fit(0)["weights"] != fit(1)["weights"]  # the seed picks the early-stopping rows


def test_proxies_given_no_weight_stay_at_zero_and_leave_the_others_as_fitted_without_them():
    features, target = synthetic(120, seed=3)
    features["c"] = np.random.default_rng(4).normal(size=120)  # noise
    ensemble = CalibratedEnsemble(["a", "b", "c"]).fit(features, target, seed=0, zero=["b"])
    alone = CalibratedEnsemble(["a", "c"]).fit(features, target, seed=0)
    assert ensemble.weights["b"] == 0.0 and ensemble.fit_info["zero_weight"] == ["b"]
    assert ensemble.weights["a"] == alone.weights["a"] != 0.0
    assert ensemble.weights["c"] == alone.weights["c"]
    both = rows(features, np.arange(5))
    assert list(ensemble.predict(both)) == pytest.approx(list(alone.predict(both)), abs=1e-12)
    with pytest.raises(ValueError, match="not in the ensemble"):
        CalibratedEnsemble(["a"]).fit(features, target, zero=["b"])


def one_proxy_features(calibration: np.ndarray, new: list) -> np.ndarray:
    """The features of ``new`` values under an ensemble of one proxy fitted on ``calibration``
    (its prediction divided by its weight)."""
    target = np.nan_to_num(calibration, nan=-1.0) + np.arange(len(calibration)) * 1e-3
    ensemble = CalibratedEnsemble(["p"]).fit({"p": list(calibration)}, target, seed=0)
    return ensemble.predict({"p": new}) / ensemble.weights["p"]


def test_features_are_normal_scores_of_calibration_mid_ranks():
    """Reference: a calibration value's feature is Phi^-1((average rank - 1/2) / n), computed
    with scipy's rankdata; values between two calibration values interpolate their levels."""
    rng = np.random.default_rng(3)
    calibration = np.round(rng.lognormal(5, 3, 40), 1)
    calibration[[3, 7, 11]] = calibration[5]  # ties share their average rank
    levels = (stats.rankdata(calibration) - 0.5) / len(calibration)
    np.testing.assert_allclose(
        one_proxy_features(calibration, list(calibration)), stats.norm.ppf(levels), atol=1e-12
    )
    lo, hi = np.argsort(calibration)[[10, 11]]  # adjacent distinct values
    midway = (calibration[lo] + calibration[hi]) / 2
    beyond = [calibration.max() * 10, calibration.min() / 10]
    got = one_proxy_features(calibration, [midway, *beyond, None])
    expected_mid = stats.norm.ppf((levels[lo] + levels[hi]) / 2)
    extremes = stats.norm.ppf([levels.max(), levels.min(), levels.min()])  # clamped; missing=worst
    np.testing.assert_allclose(got, [expected_mid, *extremes], atol=1e-12)


def test_features_ignore_a_proxys_scale_and_monotone_distortions():
    features, target = synthetic(100, seed=9)
    fit = CalibratedEnsemble(["a", "b"]).fit(features, target, seed=0)
    distorted = {"a": np.log(features["a"]) * 1e-9, "b": features["b"] ** 3 * 1e20}
    refit = CalibratedEnsemble(["a", "b"]).fit(distorted, target, seed=0)
    assert refit.weights == pytest.approx(fit.weights, abs=1e-9)


def test_predict_one_equals_predict_on_one_row_and_takes_proxy_scores():
    features, target = synthetic(80, seed=4)
    ensemble = CalibratedEnsemble(["a", "b"]).fit(features, target, seed=0)
    batch = {"a": [5e5, None, 2e7], "b": [1e-3, 3e-3, float("nan")]}
    bulk = ensemble.predict(batch)
    for i in range(3):
        one = ensemble.predict_one({"a": batch["a"][i], "b": batch["b"][i], "extra": 1.0})
        assert one == bulk[i]
    as_scores = {"a": Score(5e5), "b": Score(1e-3)}
    assert ensemble.predict_one(as_scores) == bulk[0]


def test_a_missing_value_scores_as_the_worst_calibration_value():
    features, target = synthetic(80, seed=5)
    ensemble = CalibratedEnsemble(["a", "b"]).fit(features, target, seed=0)
    worst_a = float(features["a"].min())
    assert ensemble.predict_one({"a": None, "b": 1e-3}) == pytest.approx(
        ensemble.predict_one({"a": worst_a, "b": 1e-3})
    )


def test_round_trip_through_json():
    features, target = synthetic(80, seed=6)
    ensemble = CalibratedEnsemble(["a", "b"], loss="kendall").fit(features, target, seed=0)
    restored = CalibratedEnsemble.from_dict(json.loads(json.dumps(ensemble.to_dict())))
    np.testing.assert_array_equal(restored.predict(features), ensemble.predict(features))
    assert restored.weights == ensemble.weights and restored.settings == ensemble.settings
    with pytest.raises(ValueError, match="calibrated ensemble"):
        CalibratedEnsemble.from_dict({"kind": "something else"})


def test_early_stopping_keeps_weights_small_when_features_carry_no_signal():
    rng = np.random.default_rng(7)
    noise = {"a": rng.normal(size=200), "b": rng.normal(size=200)}
    ensemble = CalibratedEnsemble(["a", "b"], max_steps=2000).fit(
        noise, rng.normal(size=200), seed=0
    )
    assert ensemble.fit_info["n_held_out"] == 40
    assert ensemble.fit_info["steps"] < 2000
    assert max(abs(w) for w in ensemble.weights.values()) < 0.5


def test_fit_and_predict_reject_bad_input():
    features, target = synthetic(20, seed=8)
    ensemble = CalibratedEnsemble(["a", "b"])
    with pytest.raises(RuntimeError, match="before fit"):
        ensemble.predict(features)
    with pytest.raises(ValueError, match="not all equal"):
        ensemble.fit(features, np.ones(20))
    with pytest.raises(ValueError, match="one finite value per row"):
        ensemble.fit(features, target[:10])
    with pytest.raises(ValueError, match=r"no values for proxies \['b'\]"):
        ensemble.fit({"a": features["a"]}, target)
    with pytest.raises(ValueError, match="unknown loss"):
        CalibratedEnsemble(["a"], loss="hinge")


def test_a_seeded_subset_of_pairs_is_used_when_there_are_too_many(monkeypatch):
    from winnow.proxies import ensemble as module

    monkeypatch.setattr(module, "MAX_PAIRS", 300)
    features, target = synthetic(300, seed=10)
    calibration, held_out = np.arange(150), np.arange(150, 300)
    fit = lambda: CalibratedEnsemble(["a", "b"]).fit(  # noqa: E731
        rows(features, calibration), target[calibration], seed=0
    )
    first, second = fit(), fit()
    assert first.weights == second.weights
    predicted = first.predict(rows(features, held_out))
    assert stats.spearmanr(predicted, target[held_out]).statistic > 0.9


def test_deduplicated_drops_a_near_copy_only_when_its_original_is_there():
    names = ["params", "snip", "flops", "grad_norm", "fisher", "meco"]
    assert deduplicated(names) == ["snip", "flops", "meco"]
    alone = ["params", "meco", "zico"]
    assert deduplicated(alone) == alone
    members = [p for group in NEAR_COPIES for p in group]
    assert len(members) == len(set(members))  # each proxy in one group at most


def test_deduplicated_is_transitive_within_a_group():
    # grad_norm and fisher are near-copies of each other too (0.963), not only of snip
    assert deduplicated(["fisher", "grad_norm", "zico"]) == ["grad_norm", "zico"]
    assert deduplicated(["fisher", "snip"]) == ["snip"]
    assert deduplicated(["fisher", "zico"]) == ["fisher", "zico"]


def test_a_default_fit_writes_no_bases_and_an_old_dict_predicts_the_same():
    features, target = synthetic(80, seed=11)
    ensemble = CalibratedEnsemble(["a", "b"]).fit(features, target, seed=0)
    written = ensemble.to_dict()
    assert "bases" not in written["settings"]  # an older build, without the field, reads it
    assert list(FitSettings.__dataclass_fields__)[-1] == "bases"
    old = json.loads(json.dumps(written))  # the format before bases: the same keys, no bases
    restored = CalibratedEnsemble.from_dict(old)
    assert restored.settings.bases == ("normal",)
    np.testing.assert_array_equal(restored.predict(features), ensemble.predict(features))
    two = CalibratedEnsemble(["a", "b"], bases=("log", "normal")).fit(features, target, seed=0)
    assert two.to_dict()["settings"]["bases"] == ["log", "normal"]


def test_the_log_basis_is_the_log_of_the_mid_ecdf_level():
    rng = np.random.default_rng(8)
    calibration = rng.lognormal(2, 1, 30)
    transform = FeatureTransform.fit(calibration)
    levels = (stats.rankdata(calibration) - 0.5) / len(calibration)
    np.testing.assert_allclose(transform.apply(calibration, "log"), np.log(levels), atol=1e-12)
    missing = transform.apply(np.array([np.nan, calibration.min() / 2]), "log")
    np.testing.assert_allclose(missing, np.log([levels.min()] * 2), atol=1e-12)


def test_two_bases_give_each_proxy_two_weights_that_zero_and_round_trip_together():
    features, target = synthetic(80, seed=10)
    both = CalibratedEnsemble(["a", "b"], bases=("normal", "log"))
    both.fit(features, target, seed=0, zero=["b"])
    assert list(both.weights) == ["a", "a:log", "b", "b:log"]
    assert both.weights["b"] == both.weights["b:log"] == 0.0 != both.weights["a:log"]
    restored = CalibratedEnsemble.from_dict(json.loads(json.dumps(both.to_dict())))
    np.testing.assert_array_equal(restored.predict(features), both.predict(features))
    assert restored.settings == both.settings and restored.settings.bases == ("normal", "log")
    for bad in (("normal", "normal"), ("sqrt",), ()):
        with pytest.raises(ValueError, match="bases"):
            FitSettings(bases=bad)
