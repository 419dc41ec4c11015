"""The cascade's proxy screen on hand-made proxy values."""

from __future__ import annotations

import numpy as np
import pytest

from winnow.proxies.ensemble import CalibratedEnsemble
from winnow.service.engine.screening import ProxyScreen
from winnow.service.search_spec import Objective, Screen

ACCURACY = Objective(name="accuracy", direction="maximize")
PARAMS = Objective(name="params", direction="minimize")


def screen(objectives, **settings) -> ProxyScreen:
    defaults = {"proxies": ["synflow", "params"], "keep_fraction": 0.25, "min_population": 4}
    return ProxyScreen(Screen(**(defaults | settings)), objectives)


def test_the_first_candidates_pass_then_only_the_top_fraction_by_score():
    s = screen([ACCURACY])
    warmup = [s.add(n, {"synflow": float(n), "params": 100.0}) for n in range(4)]
    assert all(d.keep and d.ensemble == "warmup" for d in warmup)
    best = s.add(4, {"synflow": 99.0, "params": 100.0})
    worst = s.add(5, {"synflow": -1.0, "params": 100.0})
    assert best.keep and best.position == 0 and best.ensemble == "rank"
    assert not worst.keep and worst.position == 5 and worst.population == 6


def test_with_two_objectives_a_dominated_candidate_goes_and_the_cheapest_end_stays():
    s = screen([ACCURACY, PARAMS])
    s.add(0, {"synflow": 3.0, "params": 500.0})
    for n in range(1, 8):  # score and size grow together
        s.add(n, {"synflow": float(n + 1), "params": 1000.0 * (n + 1)})
    dominated = s.add(8, {"synflow": 4.5, "params": 7500.0})
    # dominated by member 0, yet the fewest parameters (a tie): the front's end is kept
    cheapest = s.add(9, {"synflow": 0.0, "params": 500.0})
    assert not dominated.keep and dominated.position > 0
    assert cheapest.keep and cheapest.position == 0


def test_the_ensemble_is_calibrated_on_trained_results_once_there_are_enough():
    s = screen([ACCURACY], calibrate_after=4, refit_every=2)
    for n in range(6):
        s.add(n, {"synflow": float(n), "params": 10.0 * (6 - n)})
    for n in range(4):  # accuracy follows synflow
        s.observe(n, {"accuracy": 0.5 + n / 10})
    decision = s.add(6, {"synflow": 10.0, "params": 5.0})
    assert decision.ensemble == "calibrated" and decision.position == 0


def trained_screen(proxies, labels: int, **settings) -> tuple[ProxyScreen, np.ndarray]:
    """A screen over ``proxies`` that has seen ``labels`` trained results: accuracy grows with
    params (slightly noisy), synflow follows accuracy closely, naswot runs against it."""
    rng = np.random.default_rng(0)
    accuracy = np.sort(rng.uniform(0.5, 0.9, size=12))
    params = accuracy * 1e5 + rng.normal(0, 3e3, size=12)
    s = screen([ACCURACY], proxies=proxies, calibrate_after=labels, min_population=2, **settings)
    for n, acc in enumerate(accuracy):
        values = {"synflow": acc, "naswot": -acc + rng.normal(0, 0.02), "params": params[n]}
        s.add(n, {p: values[p] for p in proxies})
    for n in range(labels):
        s.observe(n, {"accuracy": accuracy[n], "params": params[n]})
    return s, params


def test_a_proxy_that_ranks_below_params_gets_no_weight_in_the_calibrated_ensemble():
    s, _ = trained_screen(["synflow", "naswot", "params"], labels=8)
    weights = s.ensemble.weights
    assert weights["naswot"] == 0.0 and s.ensemble.fit_info["zero_weight"] == ["naswot"]
    assert weights["synflow"] > 0 and weights["params"] != 0.0


@pytest.mark.parametrize(
    ("proxies", "labels"),
    [
        (["synflow", "naswot", "params"], 4),  # 4 results: no tau yet, every proxy weighed
        (["naswot"], 8),  # every proxy below params, which is not one: none is zeroed
    ],
)
def test_no_proxy_is_zeroed_before_enough_results_or_when_none_would_be_left(proxies, labels):
    s, _ = trained_screen(proxies, labels=labels)
    assert "zero_weight" not in s.ensemble.fit_info
    assert all(w != 0.0 for w in s.ensemble.weights.values())


def test_the_rule_is_live_from_the_first_fit_of_the_default_screen():
    """``winnow bench search`` screens with ``Screen()``: its first fit (``calibrate_after``
    results) already has enough for a tau, so a proxy below params loses its weight there and
    the screen's scores differ from an ensemble that weighs it. On nb201 ``flops`` ranks cells
    exactly as ``params`` does (every stage repeats the cell, and a convolution's FLOPs are the
    same in each stage), so it ties and keeps its weight; as here."""
    settings = Screen()
    assert settings.calibrate_after >= 5 and {"params", "flops", "snip"} <= set(settings.proxies)
    rng = np.random.default_rng(1)
    s = ProxyScreen(settings, [ACCURACY])
    accuracy = rng.uniform(0.5, 0.9, size=40)
    params = accuracy * 1e5 + rng.normal(0, 2e3, size=40)
    for n, acc in enumerate(accuracy):
        values = {p: acc + rng.normal(0, 0.05) for p in settings.proxies}
        values |= {"params": params[n], "flops": 3 * params[n] + 7}  # the same ranks
        values |= {"synflow": acc, "snip": acc + rng.normal(0, 0.3)}  # ahead of params; behind
        s.add(n, values)
    labelled = range(settings.calibrate_after)
    for n in labelled:
        s.observe(n, {"accuracy": accuracy[n], "params": params[n]})
    assert s.ensemble is not None
    weights = s.ensemble.weights
    assert weights["snip"] == 0.0 and weights["flops"] != 0.0 and weights["synflow"] != 0.0
    columns = {p: [s.rows[n][p] for n in labelled] for p in settings.proxies}
    weighing = CalibratedEnsemble(settings.proxies).fit(columns, accuracy[labelled], s.seed)
    assert weighing.weights["snip"] != 0.0
    new = {p: [r[p] for r in s.rows[settings.calibrate_after :]] for p in settings.proxies}
    assert not np.array_equal(
        np.argsort(s.ensemble.predict(new)), np.argsort(weighing.predict(new))
    )


# Ten results; params ranks all ten well (tau 0.56) but the first five in reverse.
TARGET = [float(n) for n in range(10)]
PARAMS_VALUES = [4.0, 3.0, 2.0, 1.0, 0.0, 10.0, 11.0, 12.0, 13.0, 14.0]


def test_a_proxy_is_compared_with_params_on_the_rows_where_both_are_known():
    """``a`` failed on the last five: on its five it ranks ahead of params there (0.4 > -1),
    though below params' tau on all ten (before the fix: zeroed)."""
    s = screen([ACCURACY], proxies=["a", "b"])
    columns = {"a": [2.0, 1.0, 0.0, 3.0, 4.0, *[None] * 5], "b": TARGET}
    assert s.below_params(columns, PARAMS_VALUES, TARGET) == []


def test_no_proxy_is_zeroed_when_the_only_other_one_has_no_tau():
    """``b`` is constant (no tau) and ``a`` ranks below params: zeroing ``a`` would leave no
    score, so nothing is zeroed (before the fix: ``a`` was, and the screen went blind)."""
    s = screen([ACCURACY], proxies=["a", "b"])
    columns = {"a": [9.0 - n for n in range(10)], "b": [1.0] * 10}
    assert s.below_params(columns, PARAMS_VALUES, TARGET) == []
    columns["b"] = TARGET  # a measured proxy above params remains: a is zeroed
    assert s.below_params(columns, PARAMS_VALUES, TARGET) == ["a"]
