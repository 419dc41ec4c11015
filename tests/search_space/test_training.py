"""Training and evaluation: a digits recipe learns, costs are reported, bad runs fail cleanly."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from winnow.records import RUN_METRICS, TRAIN_METRICS
from winnow.search_space import Candidate, Status, TrialSpec, parse_space
from winnow.search_space.costs import count_parameters
from winnow.search_space.training import evaluate

RECIPE = Path(__file__).resolve().parents[2] / "examples" / "digits-recipe.json"
MLP = {"family": "mlp", "depth": 1, "width": 32, "activation": "relu", "dropout": 0.0}


def test_digits_recipe_reaches_90_percent():
    candidate = Candidate.from_json(RECIPE.read_text())
    epochs_seen = []
    result = evaluate(
        TrialSpec(candidate, "digits", epochs=8),
        on_epoch=lambda e, n, loss, seconds: epochs_seen.append((e, n, seconds > 0)),
    )
    assert result.status == Status.OK, result.error
    assert result.metrics["accuracy"] >= 0.90
    assert epochs_seen == [(e, 8, True) for e in range(1, 9)]
    curve = result.loss_curve
    assert len(curve) == 8 and curve[-1] < 0.5 * curve[0]
    m = result.metrics
    assert m["params"] == count_parameters(candidate.build_model(10, (1, 8, 8)))
    # 8-bit weights: about a quarter of the float bytes; 8x8-bit BitOPs: 1/16 of 32x32 per MAC.
    assert m["model_bytes"] < 0.35 * 4 * m["params"]
    assert m["bitops"] == pytest.approx(m["flops"] / 2 * 64, rel=0.05)
    assert m["latency_ms"] > 0 and m["peak_memory_bytes"] > 0
    # what a search's objectives and constraints may name, and the run's own epochs
    assert set(m) == {*TRAIN_METRICS, *RUN_METRICS} and m["epochs_run"] == 8


def test_exploding_loss_fails_with_a_reason_not_an_exception():
    candidate = Candidate(
        architecture=MLP,
        normalization="none",
        optimizer={
            "name": "sgd",
            "lr": 1e12,
            "momentum": 0.0,
            "nesterov": False,
            "weight_decay": 0.0,
        },
    )
    result = evaluate(TrialSpec(candidate, "digits", epochs=3))
    assert result.status == Status.FAILED
    assert "non-finite loss" in result.error
    assert result.metrics["params"] > 0  # what was known before training is kept
    assert "accuracy" not in result.metrics


def test_out_of_memory_fails_with_a_reason(monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("winnow.search_space.training.train", oom)
    result = evaluate(TrialSpec(Candidate(architecture=MLP), "digits", epochs=1))
    assert result.status == Status.FAILED and result.error.startswith("out of memory")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only machine")
def test_cuda_without_a_gpu_fails_clearly():
    result = evaluate(TrialSpec(Candidate(architecture=MLP), "digits", device="cuda"))
    assert result.status == Status.FAILED and "CUDA is not available" in result.error


def test_a_candidate_that_cannot_be_built_for_the_data_fails():
    candidate = Candidate(
        architecture={
            "family": "nb201",
            "cell": "|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|",
        }
    )
    result = evaluate(TrialSpec(candidate, "synthetic:12", epochs=1))
    assert result.status == Status.FAILED and "image inputs" in result.error


def test_steps_fidelity_warmup_and_determinism():
    space = parse_space(
        {
            "architecture": {"family": "nb201", "channels": 4, "cells_per_stage": 1},
            "optimizer": {"name": "adamw", "warmup_epochs": 1, "batch_size": 64},
        }
    )
    candidate = space.sample(1, seed=0)[0]
    spec = TrialSpec(candidate, "synthetic:3x16x16", steps=3, seed=1)
    first, second = evaluate(spec), evaluate(spec)
    assert first.status == Status.OK, first.error
    assert len(first.loss_curve) == 1  # 3 steps fit in the first epoch of 8
    assert first.loss_curve == second.loss_curve
    assert first.metrics["accuracy"] == second.metrics["accuracy"]


def test_nb201_on_real_cifar10_images(shared_data):
    space = parse_space(
        {
            "architecture": {
                "family": "nb201",
                "cell": "|nor_conv_3x3~0|+|none~0|"
                "nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|",
            },
            "optimizer": {"name": "sgd", "batch_size": 32},
        }
    )
    dataset = f"npz:{shared_data / 'cifar10_subset.npz'}"
    result = evaluate(TrialSpec(space.sample(1)[0], dataset, steps=2))
    assert result.status == Status.OK, result.error
    assert result.metrics["params"] == 73_306 + 243_040 + 28_000
    assert 0 <= result.metrics["accuracy"] <= 1
    assert result.metrics["flops"] > 1e7


def test_a_trial_asked_to_keep_weights_returns_a_state_dict_that_reproduces_its_accuracy(
    monkeypatch,
):
    from winnow.search_space import training
    from winnow.search_space.datasets import load_dataset

    candidate = Candidate.from_json(RECIPE.read_text())  # quantized: its quantizers' state too
    assert evaluate(TrialSpec(candidate, "digits", epochs=1)).weights is None
    result = evaluate(TrialSpec(candidate, "digits", epochs=1, keep_weights=True))
    assert result.status == Status.OK and result.error is None and result.weights
    assert "weights" not in result.to_dict()  # the cache stores results as JSON
    digits = load_dataset("digits")
    model = candidate.build_model(digits.num_classes, digits.input_shape)
    model.load_state_dict(torch.load(io.BytesIO(result.weights), weights_only=True), strict=True)
    accuracy = training.test_accuracy(model, digits, torch.device("cpu"))
    assert accuracy == result.metrics["accuracy"]

    monkeypatch.setattr(training, "MAX_WEIGHTS_BYTES", 1024)  # too large to travel: said so
    too_large = evaluate(TrialSpec(candidate, "digits", epochs=1, keep_weights=True))
    assert too_large.status == Status.OK and too_large.weights is None
    assert too_large.error.startswith("weights not kept: ")


def test_kept_weights_of_the_digits_joint_space_load_strictly_and_score_the_same():
    """Norms, optimizers and quantization policies (bits, symmetric or affine): the kept
    ``state_dict`` is the whole network's state. (NB201 cells take 50 s each here on two shared
    cores: the families are the export benchmark's.)"""
    from winnow.search_space import training
    from winnow.search_space.datasets import load_dataset
    from winnow.search_space.spec import load_space

    digits = load_dataset("digits")
    for candidate in load_space("digits-joint").sample(3, seed=1):
        result = evaluate(TrialSpec(candidate, "digits", steps=3, keep_weights=True))
        assert result.status == Status.OK, result.error
        model = candidate.build_model(digits.num_classes, digits.input_shape)
        state = torch.load(io.BytesIO(result.weights), weights_only=True)
        model.load_state_dict(state, strict=True)
        accuracy = training.test_accuracy(model, digits, torch.device("cpu"))
        assert accuracy == result.metrics["accuracy"], candidate.describe()
