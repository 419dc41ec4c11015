"""Pareto fronts, ranks, crowding and hypervolume on points worked out by hand."""

from __future__ import annotations

import math

import pytest

from winnow.service.engine.pareto import (
    crowding_distances,
    domination_counts,
    hypervolume,
    non_dominated_ranks,
    pareto_front,
    promotion_order,
)

MAX_MIN = ["maximize", "minimize"]
# (accuracy, params): A and B and D trade off; C is dominated by A only; E duplicates A
POINTS = [[0.9, 100], [0.8, 50], [0.85, 200], [0.7, 40], [0.6, 300]]


def test_ranks_and_front():
    assert non_dominated_ranks(POINTS, MAX_MIN).tolist() == [0, 0, 1, 0, 2]
    assert pareto_front(POINTS, MAX_MIN) == [0, 1, 3]
    assert domination_counts(POINTS, MAX_MIN).tolist() == [0, 0, 1, 0, 4]


def test_equal_points_do_not_dominate_each_other():
    assert non_dominated_ranks([[1.0, 1.0], [1.0, 1.0]], MAX_MIN).tolist() == [0, 0]


def test_crowding_distance_by_hand():
    front = [[0.9, 100], [0.8, 50], [0.7, 40]]
    d = crowding_distances(front, MAX_MIN)
    assert math.isinf(d[0]) and math.isinf(d[2])
    # middle point: accuracy neighbours 0.9 and 0.7 over range 0.2 -> 1; params 100-40 over 60 -> 1
    assert d[1] == pytest.approx(2.0)


def test_promotion_order_rank_then_crowding():
    points = [[0.9, 100], [0.8, 50], [0.7, 40], [0.85, 200], [0.75, 60]]
    order = promotion_order(points, MAX_MIN)
    assert set(order[:3]) == {0, 1, 2}  # the front first
    assert order[2] == 1  # the interior front point has finite crowding: last of its front
    assert order[3:] == [3, 4] or order[3:] == [4, 3]


def test_single_objective_promotion_is_sorting():
    assert promotion_order([[0.2], [0.9], [0.5]], ["maximize"]) == [1, 2, 0]
    assert promotion_order([[0.2], [0.9], [0.5]], ["minimize"]) == [0, 2, 1]


def test_hypervolume_by_hand():
    front = [[0.9, 100], [0.8, 50], [0.7, 40]]
    # boxes to the reference (0, 300): 0.9*200 + 0.8*50 + 0.7*10
    assert hypervolume(front, MAX_MIN, [0.0, 300]) == pytest.approx(227.0)
    assert hypervolume(POINTS, MAX_MIN, [0.0, 300]) == pytest.approx(227.0)
    assert hypervolume([[0.5, 400]], MAX_MIN, [0.0, 300]) == 0.0
    assert hypervolume([], MAX_MIN, [0.0, 300]) == 0.0
