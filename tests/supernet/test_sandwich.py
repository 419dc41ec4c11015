"""Sandwich training: a run resumed from its checkpoint ends where the uninterrupted run ends,
and the loop keeps to its step budget and reports progress."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from winnow.search_space.datasets import load_dataset
from winnow.search_space.spec import SearchSpace
from winnow.supernet.mlp import MLPSupernet
from winnow.supernet.quantization import sample_policy, weight_distribution_loss
from winnow.supernet.sandwich import SandwichConfig, train

SPACE = SearchSpace.model_validate(
    {
        "architecture": {"family": "mlp", "depth": [1, 2], "width": [8, 16], "dropout": 0.1},
        "quantization": {
            "weight_bits": [2, 4, 32],
            "activation_bits": [4, 32],
            "granularity": ["per_channel", "per_tensor"],
            "symmetric": [True, False],
        },
    }
)
CONFIG = SandwichConfig(steps=6, batch_size=32, seed=3)


def _supernet() -> MLPSupernet:
    torch.manual_seed(0)
    return MLPSupernet(SPACE.architecture, "batchnorm", 10, (1, 8, 8))


def _policies(rng):
    return sample_policy(SPACE, rng)


def _data():
    digits = load_dataset("digits")
    return dataclasses.replace(digits, train_x=digits.train_x[:200], train_y=digits.train_y[:200])


def test_a_resumed_run_equals_the_uninterrupted_one(tmp_path):
    data = _data()
    whole = _supernet()
    train(whole, data, CONFIG, _policies)

    checkpoint = tmp_path / "supernet.pt"
    first = _supernet()
    assert train(first, data, CONFIG, _policies, max_steps=3, checkpoint=checkpoint).steps == 3
    resumed = _supernet()  # a fresh process: only the checkpoint carries over
    assert train(resumed, data, CONFIG, _policies, checkpoint=checkpoint).steps == 6

    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(whole.hidden[0].weight, _supernet().hidden[0].weight)  # it trained


def test_progress_is_reported_and_the_step_budget_kept():
    heard = []
    report = train(
        _supernet(),
        _data(),
        dataclasses.replace(CONFIG, steps=4),
        _policies,
        on_progress=lambda *args: heard.append(args),
        progress_every=2,
    )
    assert report.steps == 4 and [h[:2] for h in heard] == [(2, 4), (4, 4)]
    assert all(h[2] > 0 for h in heard)


def test_the_weight_distribution_loss_is_least_for_uniform_rows():
    torch.manual_seed(0)
    uniform, gaussian = torch.rand(16, 4096), torch.randn(16, 4096)
    assert weight_distribution_loss(uniform) < 0.01 < weight_distribution_loss(gaussian)


def test_a_resumed_run_counts_the_seconds_trained_before_against_its_time_budget(tmp_path):
    checkpoint = tmp_path / "supernet.pt"
    train(_supernet(), _data(), CONFIG, _policies, max_steps=2, checkpoint=checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    assert state["seconds"] > 0
    state["seconds"] = 120.0  # two minutes trained before the kill
    torch.save(state, checkpoint)
    report = train(_supernet(), _data(), CONFIG, _policies, minutes=1, checkpoint=checkpoint)
    assert report.steps == 2  # the budget was spent before the kill: no step more


def test_progress_reports_the_mean_loss_of_the_steps_since_the_last_report():
    def heard(every):
        out = []
        train(
            _supernet(),
            _data(),
            dataclasses.replace(CONFIG, steps=4),
            _policies,
            on_progress=lambda *args: out.append(args[2]),
            progress_every=every,
        )
        return out

    each = heard(1)
    assert len(set(each)) == 4
    assert heard(2) == pytest.approx([sum(each[:2]) / 2, sum(each[2:]) / 2])


def test_policies_are_drawn_from_the_quantization_axis_alone():
    import random

    data = SPACE.model_dump(mode="json")
    data["optimizer"] = {"name": "adamw", "lr": {"low": 1e-4, "high": 1e-1, "log": True}}
    other = SearchSpace.model_validate(data)
    draws = [
        [sample_policy(space, random.Random(seed)) for seed in range(5)] for space in (SPACE, other)
    ]
    assert draws[0] == draws[1] and len({p.model_dump_json() for p in draws[0]}) > 1
