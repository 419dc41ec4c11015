"""readout's pure views: the one implementation of best values, the front, the hypervolume (at
once and as points arrive) and the progress counters."""

from __future__ import annotations

import numpy as np
import pytest

from winnow.service.engine import readout
from winnow.service.engine.pareto import non_dominated_ranks, pareto_front, search_hypervolume
from winnow.service.search_spec import Objective

OBJECTIVES = [
    Objective(name="accuracy", direction="maximize"),
    Objective(name="params", direction="minimize"),  # no reference: 1.1 x the worst so far
]


def points(n: int, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(0.5, 1.0, n), rng.uniform(1.0, 100.0, n)]).tolist()


def test_the_growing_front_gives_the_hypervolume_of_every_prefix():
    values = points(60)
    history = readout.hypervolume_history(OBJECTIVES, values)
    for i, volume in enumerate(history):
        assert volume == pytest.approx(search_hypervolume(OBJECTIVES, values[: i + 1]))
    assert history[-1] > history[0]


def test_front_and_best_values():
    values = points(40, seed=1)
    directions = [o.direction for o in OBJECTIVES]
    ranks = non_dominated_ranks(values, directions)
    assert pareto_front(values, directions) == [int(i) for i in np.flatnonzero(ranks == 0)]
    best = readout.best_values(OBJECTIVES, values)
    assert best == {"accuracy": max(v[0] for v in values), "params": min(v[1] for v in values)}
    assert readout.best_values(OBJECTIVES, []) == {} and pareto_front([], directions) == []


def test_progress_counters_from_grouped_rows():
    groups = [  # (stage, epochs, rung, status, reused, rows)
        ("proxy", 0, -1, "pruned", False, 5),
        ("proxy", 0, -1, "ok", False, 4),
        ("train", 1, 0, "ok", False, 3),
        ("train", 3, 1, "ok", False, 1),
        ("train", 1, 0, "failed", False, 1),
        ("train", 9, 2, "duplicate", True, 2),
    ]
    counts = readout.tally(groups, proposals=11)
    assert counts == {
        "trained": 5,  # training runs: a promotion is one, a reused result is none
        "candidates": 4,  # what max_trials counts: the first rung's runs
        "epochs": 3 + 3 + 1,
        "proposals": 11,
        "cache_hits": 2,
        "pruned": 5,
        "failed": 1,
    }
    view = readout.progress_view(counts, 10, OBJECTIVES, [[0.9, 10.0]])
    assert view["max_trials"] == 10 and view["best"] == {"accuracy": 0.9, "params": 10.0}
    assert view["hypervolume"] == pytest.approx(0.9 * (11.0 - 10.0))


def test_progress_names_the_fronts_size_and_one_trials_values_as_its_leader():
    # trial 7: the most accurate; trial 9: the smallest; trial 8 is dominated by trial 7
    values, ids = [[0.98, 8010.0], [0.90, 9000.0], [0.80, 6992.0]], [7, 8, 9]
    counts = dict.fromkeys(readout.PROGRESS_COUNTS, 0)
    view = readout.progress_view(counts, 10, OBJECTIVES, values, trial_ids=ids)
    assert view["best"] == {"accuracy": 0.98, "params": 6992.0}  # from two trials
    assert view["front_size"] == 2
    assert view["leader"] == {"trial_id": 7, "values": {"accuracy": 0.98, "params": 8010.0}}
    smallest_first = [Objective(name="params", direction="minimize"), OBJECTIVES[0]]
    flipped = [[p, a] for a, p in values]
    leader = readout.progress_view(counts, 10, smallest_first, flipped, trial_ids=ids)["leader"]
    assert leader == {"trial_id": 9, "values": {"params": 6992.0, "accuracy": 0.80}}
    assert readout.progress_view(counts, 10, OBJECTIVES, [])["leader"] is None


def test_front_points_sets_results_without_objective_values_aside_before_choosing_the_rung():
    """A listing's front (``front_points``, over columns) is ``front_trials``'s: a rung whose
    only results lack an objective (a non-finite value stored as null) is not the front's."""
    from winnow.service.search_spec import parse_search_spec

    spec = parse_search_spec(
        {"space": "digits-joint", "task": {"dataset": "digits"}, "strategy": {"rungs": [1, 3]}},
        check_names=False,
    )
    results = [(0, 0, {"accuracy": 0.5}), (1, 0, {"accuracy": 0.7}), (1, 1, {"accuracy": None})]
    assert readout.front_points(spec, results) == (0, [0, 1], [[0.5], [0.7]])
    assert readout.front_points(spec, []) == (None, [], [])


def test_the_leader_of_equal_first_values_is_the_earliest_trial():
    counts = dict.fromkeys(readout.PROGRESS_COUNTS, 0)
    three = [*OBJECTIVES, Objective(name="flops", direction="minimize")]
    tied = [[0.9, 20.0, 1.0], [0.9, 10.0, 2.0]]  # neither dominates the other
    for ids in ([4, 2], [2, 4]):
        leader = readout.progress_view(counts, 10, three, tied, trial_ids=ids)["leader"]
        assert leader["trial_id"] == 2


def test_stored_epochs_are_the_rows_epochs_run_else_derived_from_the_spec(tmp_path):
    """One count of epochs: each training row's ``metrics.epochs_run`` (a continued rung that
    found no checkpoint trained its whole rung), else its rung less the rung's start; the rows
    and the grouped SQL counts of a listing agree."""
    from winnow.records import Status, TrialRecord
    from winnow.service.search_spec import parse_search_spec
    from winnow.service.store import Store, reads, sqlite_url

    spec = parse_search_spec(
        {
            "space": "digits-joint",
            "task": {"dataset": "digits"},
            "strategy": {"name": "random", "rungs": [1, 3], "continue_rungs": True},
        }
    )
    store = Store(sqlite_url(tmp_path / "epochs.db"))
    search_id = store.create_search("s", "digits", spec.to_json(), "finished")
    ran = [(0, 0, {"epochs_run": 1}), (0, 1, {"epochs_run": 3}), (1, 1, {})]
    for number, rung, metrics in ran:
        store.add_trial(
            TrialRecord(
                id=None,
                search_id=search_id,
                number=number,
                stage="train",
                epochs=spec.strategy.rungs[rung],
                rung=rung,
                status=Status.OK,
                candidate="{}",
                candidate_key=f"k{number}",
                metrics={"accuracy": 0.5, **metrics},
                created_at=0.0,
            )
        )
    expected = 1 + 3 + (3 - 1)  # the last row does not say: rung 1 continues from epoch 1
    starts = readout.rung_starts(spec.strategy)
    grouped = reads.tally_groups(reads.counts(store, search_id))
    assert readout.tally(grouped, 2, starts)["epochs"] == expected
    assert readout.progress(spec, store.trials(search_id))["epochs"] == expected
