"""Candidates: canonical keys, sampling, validation against a space, the Optuna round trip."""

from __future__ import annotations

import json

import optuna
import pytest
from pydantic import ValidationError

from winnow.search_space import Candidate, parse_space
from winnow.search_space.params import CandidateNotInSpaceError

JOINT = {
    "architecture": {"family": "nb201", "ops": ["none", "skip_connect", "nor_conv_3x3"]},
    "normalization": ["batchnorm", "groupnorm", "none"],
    "optimizer": {
        "name": ["sgd", "adamw", "lion"],
        "lr": {"low": 1e-4, "high": 0.3, "log": True},
        "nesterov": [True, False],
        "per_optimizer": {"lion": {"lr": {"low": 1e-5, "high": 1e-3, "log": True}}},
        "warmup_epochs": [0, 1],
        "batch_size": {"low": 32, "high": 256, "step": 32},
    },
    "quantization": {
        "weight_bits": [2, 4, 8, 32],
        "scope": "group",
        "activation_bits": [8, 32],
        "granularity": ["per_channel", "per_tensor"],
        "symmetric": [True, False],
    },
}


@pytest.fixture(scope="module")
def space():
    return parse_space(JOINT)


def test_key_is_stable_and_ignores_key_order(space):
    candidate = space.sample(1, seed=0)[0]
    data = json.loads(candidate.canonical_json())
    reordered = {k: data[k] for k in reversed(list(data))}
    rebuilt = Candidate.model_validate(reordered)
    assert rebuilt.key == candidate.key
    assert Candidate.from_json(candidate.canonical_json()) == candidate
    assert len(candidate.key) == 16


def test_key_changes_with_any_axis(space):
    candidate = space.sample(1, seed=0)[0]
    data = candidate.model_dump()
    variants = [
        data | {"normalization": "layernorm" if data["normalization"] != "layernorm" else "none"},
        data | {"optimizer": data["optimizer"] | {"lr": data["optimizer"]["lr"] * 2}},
        data | {"quantization": data["quantization"] | {"activation_bits": 4}},
    ]
    keys = {Candidate.model_validate(v).key for v in variants}
    assert candidate.key not in keys and len(keys) == 3


def test_candidate_is_frozen(space):
    candidate = space.sample(1, seed=0)[0]
    with pytest.raises(ValidationError):
        candidate.normalization = "layernorm"


def test_sampling_is_deterministic_per_seed(space):
    first = [c.key for c in space.sample(20, seed=7)]
    assert first == [c.key for c in space.sample(20, seed=7)]
    assert first != [c.key for c in space.sample(20, seed=8)]
    assert len(set(first)) == 20


def test_samples_respect_ranges_and_conditional_hyperparameters(space):
    for c in space.sample(50, seed=1):
        opt = c.optimizer
        low, high = (1e-5, 1e-3) if opt["name"] == "lion" else (1e-4, 0.3)
        assert low <= opt["lr"] <= high
        assert ("nesterov" in opt) == (opt["name"] == "sgd")
        assert opt["batch_size"] % 32 == 0
        assert set(c.quantization.weight_bits) == {"stem", "stage0", "stage1", "stage2", "head"}


def test_optuna_round_trip(space):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        candidate = space.suggest_optuna(trial)
        params, distributions = space.to_optuna(candidate)
        assert params == trial.params
        assert distributions == trial.distributions
        assert space.from_optuna(params) == candidate
        study.tell(trial, 0.5)
    # A stored candidate can be given back to a fresh study (how the engine rebuilds samplers).
    fresh = optuna.create_study()
    params, distributions = space.to_optuna(space.sample(1, seed=3)[0])
    fresh.add_trial(
        optuna.trial.create_trial(params=params, distributions=distributions, value=1.0)
    )
    assert fresh.best_trial.params == params


def test_candidate_outside_the_space_is_rejected_with_the_field(space):
    data = space.sample(1, seed=0)[0].model_dump()
    outside = data | {"normalization": "rmsnorm"}
    with pytest.raises(CandidateNotInSpaceError, match="normalization"):
        space.validate_candidate(Candidate.model_validate(outside))
    name = data["optimizer"]["name"]
    too_fast = data | {"optimizer": data["optimizer"] | {"lr": 10.0}}
    with pytest.raises(CandidateNotInSpaceError, match="lr"):
        space.validate_candidate(Candidate.model_validate(too_fast))
    assert name in {"sgd", "adamw", "lion"}


def test_candidate_rejects_unknown_names():
    arch = {"family": "mlp", "depth": 1, "width": 8, "activation": "relu", "dropout": 0.0}
    with pytest.raises(ValidationError, match="allowed"):
        Candidate(architecture=arch, normalization="fancy")
    with pytest.raises(ValidationError, match="momentum"):
        Candidate(architecture=arch, optimizer={"name": "adamw", "momentum": 0.9})
    with pytest.raises(ValidationError, match="family"):
        Candidate(architecture={"family": "resnet"})


def test_layer_scope_decides_bits_for_every_nb201_layer_slot():
    space = parse_space(
        {
            "architecture": {"family": "nb201"},
            "quantization": {"weight_bits": [4, 8], "scope": "layer"},
        }
    )
    candidate = space.sample(1, seed=0)[0]
    # stem + 3 stages x 5 cells x 6 edges + 2 reduction blocks + head
    assert len(candidate.quantization.weight_bits) == 1 + 90 + 2 + 1
    params, _ = space.to_optuna(candidate)
    assert sum(k.startswith("quantization.weight_bits.") for k in params) == 94
