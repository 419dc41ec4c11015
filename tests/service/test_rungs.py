"""Asynchronous successive halving: who is promoted, when, and from which rung."""

from __future__ import annotations

from winnow.service.engine.rungs import SuccessiveHalving


def test_top_third_is_promoted_once_enough_results_arrive():
    ladder = SuccessiveHalving([1, 3, 9], 3, ["maximize"])
    ladder.record(0, 0, [0.5])
    ladder.record(0, 1, [0.7])
    assert ladder.next_promotion() is None  # floor(2 / 3) = 0 may go up
    ladder.record(0, 2, [0.6])
    assert ladder.next_promotion() == (1, 1)
    ladder.mark_promoted(0, 1)
    assert ladder.next_promotion() is None  # never promoted twice


def test_later_results_can_promote_a_waiting_trial():
    ladder = SuccessiveHalving([1, 3], 2, ["maximize"])
    for number, value in enumerate([0.9, 0.1]):
        ladder.record(0, number, [value])
    assert ladder.promotable(0) == [0]
    ladder.mark_promoted(0, 0)
    ladder.record(0, 2, [0.2])
    ladder.record(0, 3, [0.3])
    assert ladder.promotable(0) == [3]  # top 2 of 4 are 0 (done) and 3


def test_highest_rung_goes_first_and_top_rung_never_promotes():
    ladder = SuccessiveHalving([1, 2, 4], 2, ["maximize"])
    for number in range(4):
        ladder.record(0, number, [number / 10])
    for number in (3, 2):
        ladder.mark_promoted(0, number)
        ladder.record(1, number, [number / 10])
    ladder.record(2, 3, [1.0])
    assert ladder.next_promotion() == (3, 2)
    assert ladder.promotable(2) == []


def test_multi_objective_promotion_uses_non_dominated_rank():
    ladder = SuccessiveHalving([1, 3], 2, ["maximize", "minimize"])
    points = {0: [0.9, 100.0], 1: [0.5, 10.0], 2: [0.4, 200.0], 3: [0.3, 300.0]}
    for number, values in points.items():
        ladder.record(0, number, values)
    assert set(ladder.promotable(0)) == {0, 1}  # the front; 2 and 3 are dominated
