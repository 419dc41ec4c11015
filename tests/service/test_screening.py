"""The cascade's proxy screen on hand-made proxy values."""

from __future__ import annotations

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
