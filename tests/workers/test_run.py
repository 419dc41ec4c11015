"""run_trial dispatches on the stage: the proxy stage returns the zero-cost scores."""

from __future__ import annotations

import pytest

from winnow.proxies import proxy_names
from winnow.search_space import Candidate, Status, TrialSpec
from winnow.workers import run_trial

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
    with pytest.raises(NotImplementedError, match="supernet"):
        run_trial(TrialSpec(Candidate(architecture=MLP), "digits", stage="supernet"))


def test_a_candidate_that_does_not_fit_fails_cleanly():
    candidate = Candidate(
        architecture={
            "family": "nb201",
            "cell": "|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|",
        }
    )
    result = run_trial(TrialSpec(candidate, "synthetic:12", stage="proxy"))
    assert result.status == Status.FAILED and "image inputs" in result.error
