"""Importance over constructed trials: the parameter that drives an objective ranks first, per
fidelity and per evaluator, from an in-memory study rebuilt as the restore rebuilds one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from winnow.records import Status, TrialRecord
from winnow.service.demo import DEMO_SPEC
from winnow.service.engine import importance
from winnow.service.search_spec import parse_search_spec

SPEC = parse_search_spec(DEMO_SPEC | {"name": "importance"})


def rows(n: int, epochs: int, accuracy, model_bytes, seed: int = 0) -> list[TrialRecord]:
    """Trained rows of ``n`` sampled candidates whose objectives are functions of the candidate
    (``accuracy(candidate)``, ``model_bytes(candidate)``) plus a little noise."""
    rng = np.random.default_rng(seed)
    out = []
    for number, candidate in enumerate(SPEC.search_space.sample(n, seed=seed)):
        data = json.loads(candidate.canonical_json())
        metrics = {
            "accuracy": accuracy(data) + float(rng.normal(0, 1e-3)),
            "model_bytes": model_bytes(data) + float(rng.normal(0, 1.0)),
        }
        out.append(
            TrialRecord(
                None, "s", number, "train", Status.OK, candidate.canonical_json(),
                candidate.key, epochs=epochs, rung=0, metrics=metrics,
            )
        )  # fmt: skip
    return out


def width(data: dict) -> float:
    return data["architecture"]["width"] / 256


def depth(data: dict) -> float:
    return 1000.0 * data["architecture"]["depth"]


def normalization(data: dict) -> float:
    return 0.9 if data["normalization"] == "batchnorm" else 0.5


@pytest.mark.parametrize("evaluator", sorted(importance.EVALUATORS))
def test_the_parameter_that_drives_an_objective_ranks_first(evaluator):
    found = importance.importances(SPEC, rows(80, 2, width, depth), evaluator=evaluator)
    by_objective = {i.objective: i for i in found}
    assert set(by_objective) == {o.name for o in SPEC.objectives}
    accuracy = by_objective["accuracy"]
    assert next(iter(accuracy.params)) == "architecture.width"
    assert next(iter(by_objective["model_bytes"].params)) == "architecture.depth"
    assert accuracy.trials == 80 and accuracy.epochs == 2 and accuracy.evaluator == evaluator
    assert sum(accuracy.params.values()) == pytest.approx(1.0)
    # each optimizer's learning rate is set in its trials only: listed, not ranked
    assert "optimizer.sgd.lr" in accuracy.left_out and "optimizer.sgd.lr" not in accuracy.params
    assert next(iter(accuracy.axes)) == "architecture"
    assert sum(accuracy.axes.values()) == pytest.approx(1.0)


def test_each_fidelity_has_its_own_importance():
    early = rows(80, 2, width, depth, seed=1)
    late = [r for r in rows(80, 6, normalization, depth, seed=2)]
    found = importance.importances(SPEC, early + late)
    accuracy = {i.epochs: i for i in found if i.objective == "accuracy"}
    assert sorted(accuracy) == [2, 6]
    assert next(iter(accuracy[2].params)) == "architecture.width"
    assert next(iter(accuracy[6].params)) == "normalization"
    assert next(iter(accuracy[6].axes)) == "normalization"


def test_untrained_rows_too_few_results_and_a_constant_objective_give_nothing():
    trained = rows(30, 2, width, depth)
    failed = [TrialRecord(**{**r.__dict__, "status": Status.FAILED}) for r in trained]
    assert importance.importances(SPEC, failed) == []
    assert importance.importances(SPEC, trained[:5]) == []  # below MIN_TRIALS
    flat = rows(30, 2, lambda d: 0.5, depth)
    flat = [TrialRecord(**{**r.__dict__, "metrics": {**r.metrics, "accuracy": 0.5}}) for r in flat]
    found = {i.objective: i.params for i in importance.importances(SPEC, flat)}
    assert found["accuracy"] == {} and found["model_bytes"]
    with pytest.raises(ValueError, match="allowed: ped-anova, fanova"):
        importance.importances(SPEC, trained, evaluator="shap")


def test_the_study_is_rebuilt_with_the_restores_params():
    from winnow.service.engine.state import optuna_params

    row = rows(1, 2, width, depth)[0]
    [trial] = importance.study_trials(SPEC.search_space, [(row.candidate, 0.7)])
    _, params, distributions = optuna_params(SPEC.search_space, row.candidate)
    assert trial.params == params and trial.distributions == distributions
    assert trial.value == 0.7
    assert importance.study_trials(SPEC.search_space, [(row.candidate, None)]) == []


def test_latest_caps_the_study_at_the_newest_results():
    early = rows(60, 2, width, depth, seed=3)
    late = rows(30, 2, normalization, depth, seed=4)  # completed after: only these are used
    accuracy = SPEC.objectives[0]
    pairs = [(r.candidate, r.metrics["accuracy"]) for r in early + late]
    found = importance.fidelity_importance(SPEC.search_space, 2, accuracy, pairs, latest=30)
    assert (found.trials, found.results) == (30, 90)
    assert next(iter(found.params)) == "normalization"
    whole = importance.fidelity_importance(SPEC.search_space, 2, accuracy, pairs)
    assert (whole.trials, whole.results) == (90, 90)
