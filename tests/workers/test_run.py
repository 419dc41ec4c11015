"""run_trial dispatches on the stage through ``TRIAL_STAGES``: the proxy stage returns the
zero-cost scores, a registered stage is run, an unregistered one refused."""

from __future__ import annotations

import pytest

from winnow.proxies import proxy_names
from winnow.search_space import Candidate, Status, TrialResult, TrialSpec
from winnow.workers import run_trial
from winnow.workers.run import TRIAL_STAGES, measure_costs, score_proxies

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
    with pytest.raises(NotImplementedError, match=r"'supernet' .* \(train, proxy, costs\)"):
        run_trial(TrialSpec(Candidate(architecture=MLP), "digits", stage="supernet"))


def test_the_stage_registry_holds_the_workers_stages_and_a_registered_one_runs():
    assert TRIAL_STAGES.names() == ["train", "proxy", "costs"]
    assert TRIAL_STAGES.get("proxy") is score_proxies
    assert TRIAL_STAGES.get("costs") is measure_costs
    spec = TrialSpec(Candidate(architecture=MLP), "digits", stage="supernet")
    with TRIAL_STAGES.registered(
        "supernet", lambda s, on_epoch: TrialResult(Status.OK, {"epochs": 7})
    ):
        assert run_trial(spec).metrics == {"epochs": 7}
    with pytest.raises(NotImplementedError):
        run_trial(spec)


def test_a_candidate_that_does_not_fit_fails_cleanly():
    candidate = Candidate(
        architecture={
            "family": "nb201",
            "cell": "|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|",
        }
    )
    result = run_trial(TrialSpec(candidate, "synthetic:12", stage="proxy"))
    assert result.status == Status.FAILED and "image inputs" in result.error
