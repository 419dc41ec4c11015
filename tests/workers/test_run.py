"""run_trial dispatches on the stage through ``TRIAL_STAGES``: the proxy stage returns the
zero-cost scores, the hash stage the functional hash, a registered stage is run, an
unregistered one refused; the stages that do not train free what they built."""

from __future__ import annotations

import gc
import weakref

import pytest

from winnow.proxies import proxy_names
from winnow.search_space import Candidate, Status, TrialResult, TrialSpec
from winnow.search_space import functional_hash as functional_hash_module
from winnow.search_space.functional_hash import functional_hash
from winnow.workers import run_trial
from winnow.workers.run import TRIAL_STAGES, hash_candidate, measure_costs, score_proxies

MLP = {"family": "mlp", "depth": 1, "width": 16, "activation": "relu", "dropout": 0.0}


def test_proxy_stage_returns_every_proxy_score():
    result = run_trial(TrialSpec(Candidate(architecture=MLP), "digits", stage="proxy"))
    assert result.status == Status.OK, result.error
    for name in proxy_names():
        assert f"proxy_seconds.{name}" in result.metrics
    assert result.metrics["proxy.params"] == 16 * 64 + 16 + 2 * 16 + 16 * 10 + 10
    assert result.metrics["proxy.synflow"] > 0


def test_train_stage_still_trains_and_unknown_stages_are_refused():
    result = run_trial(TrialSpec(Candidate(architecture=MLP), "digits", steps=3))
    assert result.status == Status.OK and "accuracy" in result.metrics
    stages = r"\(train, supernet_train, supernet, proxy, costs, hash\)"
    with pytest.raises(NotImplementedError, match=rf"'distill' .* {stages}"):
        run_trial(TrialSpec(Candidate(architecture=MLP), "digits", stage="distill"))


def test_the_stage_registry_holds_the_workers_stages_and_a_registered_one_runs():
    assert TRIAL_STAGES.names() == ["train", "supernet_train", "supernet", "proxy", "costs", "hash"]
    assert TRIAL_STAGES.get("proxy") is score_proxies
    assert TRIAL_STAGES.get("costs") is measure_costs
    assert TRIAL_STAGES.get("hash") is hash_candidate
    spec = TrialSpec(Candidate(architecture=MLP), "digits", stage="distill")
    with TRIAL_STAGES.registered(
        "distill", lambda s, on_epoch: TrialResult(Status.OK, {"epochs": 7})
    ):
        assert run_trial(spec).metrics == {"epochs": 7}
    with pytest.raises(NotImplementedError):
        run_trial(spec)


def test_the_supernet_stages_fail_cleanly_without_their_options():
    for stage in ("supernet_train", "supernet"):
        result = run_trial(TrialSpec(Candidate(architecture=MLP), "digits", stage=stage))
        assert result.status == Status.FAILED and "needs its options" in result.error


def test_a_candidate_that_does_not_fit_fails_cleanly():
    candidate = Candidate(
        architecture={
            "family": "nb201",
            "cell": "|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|",
        }
    )
    result = run_trial(TrialSpec(candidate, "synthetic:12", stage="proxy"))
    assert result.status == Status.FAILED and "image inputs" in result.error


def test_hash_stage_returns_the_functional_hash_as_its_value():
    candidate = Candidate(architecture=MLP)
    result = run_trial(TrialSpec(candidate, "digits", stage="hash"))
    assert result.status == Status.OK and result.metrics == {}
    assert result.value == functional_hash(candidate)
    again = TrialResult.from_dict(result.to_dict())
    assert again == result  # the value travels through the store's JSON
    old = {k: v for k, v in result.to_dict().items() if k != "value"}
    assert TrialResult.from_dict(old).value is None  # a result stored before the field


def test_a_hash_that_raises_is_a_failed_trial():
    broken = Candidate(architecture=MLP, optimizer={"name": "sgd", "lr": -1.0})
    result = run_trial(TrialSpec(broken, "digits", stage="hash"))
    assert result.status == Status.FAILED and result.value is None
    assert "learning rate" in result.error


WIDE = {**MLP, "depth": 2, "width": 1024}  # ~1.1M parameters, collected with the cap at 1M


@pytest.mark.parametrize(
    "stage, proxies", [("hash", None), ("proxy", ("params",)), ("costs", None)]
)
def test_a_stage_that_does_not_train_frees_its_network_even_in_a_reference_cycle(
    monkeypatch, stage, proxies
):
    built: list[weakref.ref] = []
    build = Candidate.build_model

    def build_in_a_cycle(self, *args, **kwargs):
        model = build(self, *args, **kwargs)
        model.myself = [model]  # what keeps a network alive until Python's collector runs
        built.append(weakref.ref(model))
        return model

    monkeypatch.setattr(Candidate, "build_model", build_in_a_cycle)
    monkeypatch.setattr(functional_hash_module, "COLLECT_ABOVE_PARAMETERS", 1_000_000)
    spec = TrialSpec(Candidate(architecture=WIDE), "digits", stage=stage, proxies=proxies)
    gc.collect()
    gc.disable()  # only the stage itself may collect
    try:
        result = run_trial(spec)
        alive = [ref() is not None for ref in built]
    finally:
        gc.enable()
    assert result.status == Status.OK, result.error
    assert built and not any(alive)
