"""The samplers by name, and the study the engine asks and tells: which trials its samplers
see."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from winnow.search_space.registry import UnknownNameError
from winnow.service.engine.sampling import SAMPLERS, SamplerViewStorage, make_sampler, make_study

CHOICES = CategoricalDistribution(["a", "b", "c"])


def tell_many(study: optuna.Study, outcomes: list[str]) -> list[int]:
    """Ask once per outcome and tell it: "c" complete, "p" screened out, "r" pruned at a rung."""
    numbers = []
    for outcome in outcomes:
        trial = study.ask({"x": CHOICES})
        if outcome == "c":
            study.tell(trial, 0.5)
        elif outcome == "r":
            trial.report(0.3, step=1)
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, state=TrialState.PRUNED)
        numbers.append(trial.number)
    return numbers


def visible(study: optuna.Study) -> list[int]:
    return [t.number for t in study.get_trials(deepcopy=False)]


def test_samplers_see_only_the_newest_screened_out_trials_and_every_other_trial():
    study = make_study("tpe", ["maximize"], seed=0, storage=SamplerViewStorage(window=2))
    numbers = tell_many(study, ["p", "c", "p", "r", "p", "p", "c", "p"])
    # screened out: 0, 2, 4, 5, 7 -> the newest two (5, 7) stay; completed and rung-pruned stay
    assert visible(study) == [1, 3, 5, 6, 7]
    assert len(numbers) == 8
    # the sampler keeps working on what it sees, and the next ask gets the next number
    assert study.ask().number == 8


def test_without_a_window_every_trial_is_seen():
    study = make_study("random", ["maximize"], seed=0, storage=SamplerViewStorage(None))
    tell_many(study, ["p"] * 5 + ["c"])
    assert visible(study) == list(range(6))


def test_added_trials_count_as_told_ones_and_the_newest_is_always_seen():
    study = make_study("tpe", ["maximize"], seed=0, storage=SamplerViewStorage(window=1))
    for value in ("a", "b", "c"):  # as Engine.resume rebuilds a study
        study.add_trial(
            create_trial(params={"x": value}, distributions={"x": CHOICES}, state=TrialState.PRUNED)
        )
        assert study.trials[-1].params == {"x": value}
    assert visible(study) == [2]


def test_a_window_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        SamplerViewStorage(0)


def test_the_sampler_registry_builds_each_strategy_with_its_seed():
    assert SAMPLERS.names() == ["random", "tpe", "nsga2", "gp"]
    kinds = {
        "random": optuna.samplers.RandomSampler,
        "tpe": optuna.samplers.TPESampler,
        "nsga2": optuna.samplers.NSGAIISampler,
        "gp": optuna.samplers.GPSampler,
    }
    for name, kind in kinds.items():
        assert type(make_sampler(name, seed=0)) is kind
        assert type(make_sampler(name, seed=0, parallel=True)) is kind


def test_an_unknown_sampler_lists_the_registered_ones():
    with pytest.raises(UnknownNameError, match="unknown sampler 'cmaes'; allowed: random, tpe"):
        make_study("cmaes", ["maximize"], seed=0)


def test_a_registered_sampler_is_what_make_study_uses():
    seen, sampler = [], optuna.samplers.RandomSampler(seed=1)

    def mine(seed: int, parallel: bool) -> optuna.samplers.BaseSampler:
        seen.append((seed, parallel))
        return sampler

    with SAMPLERS.registered("mine", mine):
        study = make_study("mine", ["maximize"], seed=7, parallel=True)
    assert study.sampler is sampler and seen == [(7, True)]
    assert "mine" not in SAMPLERS  # the registration ended with the block
