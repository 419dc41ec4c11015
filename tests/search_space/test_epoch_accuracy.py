"""The test accuracy measured after every epoch (``task.eval_every_epoch``) changes nothing a
trial trains, and its last value is the final accuracy; a continued run's curve is whole."""

from __future__ import annotations

import io
import math

import pytest
import torch

from winnow.search_space import Candidate, Status, TrialSpec
from winnow.search_space.quantization import QuantPolicy
from winnow.search_space.trainer import Fitted, fitted_of
from winnow.search_space.training import evaluate
from winnow.search_space.user_code import UserCodeError

# what an evaluation pass could disturb: BatchNorm's running statistics, dropout (a draw of
# the global generator every step), the activation observers of an 8-bit policy, Adam's state
# and a warmup; digits: no augmentation, the data order is the shuffling generator's
CANDIDATE = Candidate(
    architecture={"family": "mlp", "depth": 2, "width": 16, "activation": "relu", "dropout": 0.2},
    normalization="batchnorm",
    optimizer={
        "name": "adamw",
        "lr": 3e-3,
        "weight_decay": 1e-4,
        "warmup_epochs": 0.5,
        "batch_size": 64,
    },
    quantization=QuantPolicy(weight_bits={"*": 8}, activation_bits=8),
)


def run(epochs: int, measured: bool, checkpoint=None, schedule: int | None = None):
    spec = TrialSpec(
        CANDIDATE,
        "digits",
        epochs=epochs,
        seed=5,
        keep_weights=True,
        epoch_accuracy=measured,
        schedule_epochs=schedule,
        checkpoint=None if checkpoint is None else str(checkpoint),
    )
    result = evaluate(spec)
    assert result.status == Status.OK, result.error
    return result


def weights(result) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(result.weights), weights_only=True)


def test_measuring_every_epoch_changes_no_trained_result():
    measured, plain = run(2, True), run(2, False)
    assert len(measured.accuracy_curve) == 2 and plain.accuracy_curve == []
    assert measured.metrics["accuracy"] == plain.metrics["accuracy"]
    assert measured.loss_curve == plain.loss_curve
    a, b = weights(measured), weights(plain)  # BatchNorm's running stats and observers too
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_last_epochs_accuracy_is_the_final_accuracy():
    result = run(2, True)
    assert all(0.0 <= value <= 1.0 for value in result.accuracy_curve)
    assert result.accuracy_curve[-1] == result.metrics["accuracy"]
    assert result.to_json_dict()["accuracy_curve"] == result.accuracy_curve


def test_a_continued_run_carries_the_earlier_epochs_accuracy(tmp_path):
    straight = run(2, True)
    path = tmp_path / "0.ckpt"
    first = run(1, True, path, schedule=2)
    continued = run(2, True, path, schedule=2)
    assert continued.metrics["epochs_run"] == 1
    assert first.accuracy_curve == straight.accuracy_curve[:1]
    assert continued.accuracy_curve == straight.accuracy_curve


def test_a_checkpoint_saved_without_them_gives_no_partial_curve(tmp_path):
    path = tmp_path / "0.ckpt"
    run(1, False, path, schedule=2)
    continued = run(2, True, path, schedule=2)
    assert continued.metrics["epochs_run"] == 1 and continued.accuracy_curve == []


def test_a_users_trainer_may_report_them_or_not():
    assert fitted_of("m:fit", Fitted([1.0, 0.5], 2), 2).accuracy == []
    assert fitted_of("m:fit", Fitted([1.0, 0.5], 2, [0.5, 0.75]), 2).accuracy == [0.5, 0.75]
    for bad in ([0.5], [0.5, 75.0], [0.5, math.nan], "high"):
        with pytest.raises(UserCodeError, match="accurac"):
            fitted_of("m:fit", Fitted([1.0, 0.5], 2, bad), 2)
