"""The Ray Tune bridge: winnow's space as a param_space and its trainable under ASHA, and the
cascade's searcher (hashing and proxy screening) inside a Tune experiment."""

from __future__ import annotations

import pytest
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from winnow.search_space.candidate import Candidate
from winnow.search_space.canonical import structural_hash
from winnow.search_space.spec import parse_space
from winnow.service.engine.tune_searcher import WinnowSearcher
from winnow.service.search_spec import Screen
from winnow.workers.tune import to_param_space, train_candidate

# Small MLPs on the digits: a few seconds per trial. 24 recipes in all, so the sampler soon
# proposes one whose function it has already seen.
SPACE = parse_space(
    {
        "name": "tune-test",
        "architecture": {"family": "mlp", "depth": [1, 2], "width": [16, 64]},
        "optimizer": {"name": "adamw", "lr": [1e-3, 3e-3, 1e-2], "weight_decay": [0.0, 1e-4]},
    }
)


def tuner(tmp_path, search_alg=None, num_samples=6, max_epochs=4):
    return tune.Tuner(
        tune.with_parameters(train_candidate, dataset="digits", max_epochs=max_epochs),
        param_space={} if search_alg else to_param_space(SPACE, seed=0),
        tune_config=tune.TuneConfig(
            metric="accuracy",
            mode="max",
            num_samples=num_samples,
            search_alg=search_alg,
            scheduler=ASHAScheduler(max_t=max_epochs, grace_period=1, reduction_factor=2),
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    )


def test_param_space_draws_valid_candidates_of_the_space():
    draw = to_param_space(SPACE, seed=3)["candidate"].func
    candidates = [Candidate.model_validate(draw(None)) for _ in range(20)]
    assert all(SPACE.validate_candidate(c) is c for c in candidates)
    assert len({c.key for c in candidates}) > 3  # draws differ


@pytest.mark.slow
def test_asha_runs_the_trainable_reporting_every_epoch(local_ray, tmp_path):
    results = tuner(tmp_path).fit()
    assert len(results) == 6 and not results.errors
    epochs = [r.metrics["training_iteration"] for r in results]
    assert all(1 <= e <= 4 for e in epochs) and max(epochs) == 4
    for result in results:
        history = result.metrics_dataframe
        assert list(history["epoch"]) == list(range(1, len(history) + 1))
        assert result.metrics["params"] > 0
    assert results.get_best_result().metrics["accuracy"] > 0.8


@pytest.mark.slow
def test_the_winnow_searcher_skips_duplicates_and_screens_with_proxies(local_ray, tmp_path):
    screen = Screen(proxies=["synflow", "params"], keep_fraction=0.5, min_population=2)
    searcher = WinnowSearcher(SPACE, "digits", screen=screen, seed=0, max_epochs=2)
    results = tuner(tmp_path, search_alg=searcher, num_samples=8, max_epochs=2).fit()
    assert len(results) == 8 and not results.errors
    counts = searcher.counts
    assert counts["suggested"] == 8 and counts["screened_out"] > 0
    assert counts["proposals"] == 8 + counts["screened_out"] + counts["duplicates"]
    finished = [r.config["candidate"] for r in results]
    hashes = {searcher.memo[structural_hash(Candidate.model_validate(c))] for c in finished}
    assert len(hashes) == 8  # no function was trained twice
    told = [t for t in searcher.study.trials if t.state.is_finished()]
    assert len(told) == counts["proposals"]  # the sampler heard about every proposal
    stopped = [r for r in results if r.metrics["epoch"] < 2]  # by ASHA, after one epoch
    pruned = [t for t in told if t.state.name == "PRUNED" and t.intermediate_values]
    assert len(pruned) == len(stopped)  # told as pruned, with their one-epoch value
    assert len(searcher.finished) == len(hashes) - len(stopped)


def test_the_searcher_refuses_another_mode_and_ends_an_exhausted_space():
    one = parse_space({"name": "one", "architecture": {"family": "mlp", "depth": 1, "width": 16}})
    searcher = WinnowSearcher(one, "digits", max_attempts=5, max_epochs=1)
    assert not searcher.set_search_properties("accuracy", "min", {})
    assert searcher.set_search_properties("accuracy", "max", {})
    assert searcher.suggest("a") is not None  # the space's only recipe
    searcher.on_trial_complete("a", {"accuracy": 0.9, "epoch": 1})
    assert searcher.suggest("b") == WinnowSearcher.FINISHED  # every proposal is a duplicate
    assert searcher.counts["duplicates"] == 5


def test_warm_starts_are_the_searchers_first_suggestions_in_order():
    distinct = {c.key: c for c in SPACE.sample(8, seed=3)}
    first, second, *_ = distinct.values()
    exported = {"candidate": second.model_dump(mode="json")}["candidate"]  # a recipe's
    searcher = WinnowSearcher(SPACE, "digits", seed=0, warm_start=[first, exported])
    suggested = [Candidate(**searcher.suggest(tid)["candidate"]) for tid in ("a", "b")]
    assert suggested == [first, second]


def test_the_searcher_shows_the_screen_the_trained_params_its_rule_compares_with():
    """``train_candidate`` reports ``params`` with the accuracy; without it the screen's
    below-params rule had no baseline and was silently off on the Tune path."""
    one = parse_space({"name": "one", "architecture": {"family": "mlp", "depth": 1, "width": 16}})
    searcher = WinnowSearcher(one, "digits", max_epochs=1)
    assert searcher.suggest("a") is not None
    number = searcher.live["a"].number
    searcher.on_trial_complete("a", {"accuracy": 0.9, "epoch": 1, "params": 1234.0})
    assert searcher.screen.labels[number] == 0.9 and searcher.screen.params[number] == 1234.0
