"""Importance over constructed trials: the parameter that drives an objective ranks first, per
fidelity and per evaluator, from an in-memory study rebuilt as the restore rebuilds one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from winnow.records import Status, TrialRecord, importance_warning
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
    # keyed by decision path: one learning rate whichever optimizer, ranked like the others
    assert "optimizer.lr" in accuracy.params and not accuracy.left_out
    assert not any(".sgd." in name for name in accuracy.params)
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


def lr(data: dict) -> float:
    return float(np.log10(data["optimizer"]["lr"]))


def test_the_learning_rate_of_several_optimizers_is_one_ranked_parameter():
    """Each optimizer decides its own learning rate (own range): by path it is one."""
    assert len(SPEC.search_space.optimizer.name) > 1  # the demo space has several optimizers
    found = importance.importances(SPEC, rows(120, 2, lr, depth, seed=5))
    accuracy = next(i for i in found if i.objective == "accuracy")
    assert next(iter(accuracy.params)) == "optimizer.lr"
    [trial] = importance.study_trials(SPEC.search_space, [(rows(1, 2, lr, depth)[0].candidate, 1)])
    lows = [trial.distributions["optimizer.lr"].low]
    trials = importance.study_trials(
        SPEC.search_space, [(r.candidate, 1.0) for r in rows(60, 2, lr, depth, seed=6)]
    )
    joined = {t.distributions["optimizer.lr"] for t in trials}
    assert len(joined) == 1  # one distribution spanning every optimizer's range
    [dist] = joined
    assert (
        dist.log
        and dist.low <= min(lows)
        and all(dist._contains(dist.to_internal_repr(t.params["optimizer.lr"])) for t in trials)
    )


def test_the_study_is_rebuilt_from_what_optuna_proposed():
    import optuna

    study = optuna.create_study()
    trial = study.ask()
    candidate = SPEC.search_space.suggest_optuna(trial)
    [rebuilt] = importance.study_trials(SPEC.search_space, [(candidate.canonical_json(), 0.7)])

    def path(name: str) -> str:  # Optuna's name of an optimizer's own decision has its name
        parts = name.split(".")
        return (
            ".".join([parts[0], parts[2]]) if len(parts) == 3 and parts[0] == "optimizer" else name
        )

    assert rebuilt.params == {path(n): v for n, v in trial.params.items()}
    assert rebuilt.distributions == {path(n): d for n, d in trial.distributions.items()}
    assert rebuilt.value == 0.7
    assert importance.study_trials(SPEC.search_space, [(candidate.canonical_json(), None)]) == []


def test_the_direction_decides_which_region_is_best():
    """Low accuracy comes from a low width, high accuracy only from batchnorm: minimising
    ranks the width first, maximising the normalization."""

    def mixed(data: dict) -> float:
        low = 0.0 if data["architecture"]["width"] == 64 else 0.5
        return low + (0.4 if data["normalization"] == "batchnorm" else 0.0)

    trials = importance.study_trials(
        SPEC.search_space,
        [(r.candidate, r.metrics["accuracy"]) for r in rows(200, 2, mixed, depth)],
    )
    best = {d: next(iter(importance.rank_params(trials, d))) for d in ("maximize", "minimize")}
    assert best == {"maximize": "normalization", "minimize": "architecture.width"}


def test_all_zero_importances_give_nothing(monkeypatch):
    from optuna.importance import BaseImportanceEvaluator

    class Nothing(BaseImportanceEvaluator):
        def evaluate(self, study, params=None, *, target=None):
            return {p: 0.0 for p in params}

    monkeypatch.setitem(importance.EVALUATORS, "ped-anova", lambda seed, n: Nothing())
    trials = importance.study_trials(
        SPEC.search_space, [(r.candidate, r.metrics["accuracy"]) for r in rows(20, 2, width, depth)]
    )
    assert importance.rank_params(trials, "maximize") == {}


def test_small_studies_are_noisy_and_widen_ped_anovas_best_region():
    assert importance.EVALUATORS["ped-anova"](0, 20)._target_quantile == 0.5
    assert importance.EVALUATORS["ped-anova"](0, 1000)._target_quantile == 0.1
    found = importance.importances(SPEC, rows(20, 2, width, depth))
    assert found and all(i.noisy for i in found)
    assert not any(i.noisy for i in importance.importances(SPEC, rows(60, 2, width, depth)))
    # the words every reader shows (the dashboard, winnow importance, the SDK's "warning")
    warning = "fewer than 50 results (20): a hint, not a ranking"
    assert importance_warning(found[0].trials) == warning
    assert importance_warning(60) is None


def test_a_seeded_random_sample_caps_the_study():
    """Not the latest: those are what a TPE or cascade search converged on."""
    early = rows(60, 2, width, depth, seed=3)
    late = rows(60, 2, normalization, depth, seed=4)
    accuracy = SPEC.objectives[0]
    pairs = [(r.candidate, r.metrics["accuracy"]) for r in early + late]
    found = importance.fidelity_importance(SPEC.search_space, 2, accuracy, pairs, sample=40)
    assert (found.trials, found.results, found.sampled) == (40, 120, True)
    again = importance.fidelity_importance(SPEC.search_space, 2, accuracy, pairs, sample=40)
    assert again == found  # seeded
    whole = importance.fidelity_importance(SPEC.search_space, 2, accuracy, pairs)
    assert (whole.trials, whole.results, whole.sampled) == (120, 120, False)
    assert importance.SAMPLE["fanova"] < importance.SAMPLE["ped-anova"]
