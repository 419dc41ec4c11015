"""The test accuracy measured after every epoch (``task.eval_every_epoch``) changes no trained
result (every generator and each module's mode kept, even for a module drawing in eval mode),
its last value is the final accuracy, measured once; a continued run's curve is whole."""

from __future__ import annotations

import inspect
import io
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from winnow.search_space import Candidate, Status, TrialSpec, accuracy, training
from winnow.search_space.datasets import load_dataset
from winnow.search_space.quantization import QuantPolicy
from winnow.search_space.trainer import Fitted, TrainData, fitted_of
from winnow.search_space.training import evaluate
from winnow.search_space.user_code import UserCodeError
from winnow.service.search_spec import Task

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


def run(epochs: int, measured: bool, checkpoint=None, schedule: int | None = None, device="cpu"):
    spec = TrialSpec(
        CANDIDATE,
        "digits",
        epochs=epochs,
        seed=5,
        device=device,
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


def test_a_users_trainer_may_report_them_as_an_array_or_a_tensor():
    for values in (torch.tensor([0.5, 0.75]), np.array([0.5, 0.75]), (0.5, 0.75)):
        assert fitted_of("m:fit", Fitted([1.0, 0.5], 2, values), 2).accuracy == [0.5, 0.75]
    for bad in (torch.tensor([[0.5, 0.75]]), np.array([[0.5], [0.75]]), torch.tensor(0.5)):
        with pytest.raises(UserCodeError, match="sequence of fractions"):
            fitted_of("m:fit", Fitted([1.0, 0.5], 2, bad), 2)


def test_a_users_wrong_count_and_a_value_out_of_range_are_told_apart():
    with pytest.raises(UserCodeError, match="1 accuracies for a curve of 2 epochs"):
        fitted_of("m:fit", Fitted([1.0, 0.5], 2, [0.5]), 2)
    with pytest.raises(UserCodeError, match=r"accuracy 75\.0: each must be a fraction") as error:
        fitted_of("m:fit", Fitted([1.0, 0.5], 2, [0.5, 75.0]), 2)
    assert "for a curve of" not in str(error.value)


class Drawing(nn.Module):
    """A module that draws from torch's, numpy's and Python's generators in eval mode too
    (a stochastic layer of the user's own): a measurement that let its draws through would
    shift the training's next ones."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(1).item() + np.random.rand() + random.random()
        return x + 1e-9 * noise


def draws() -> tuple[float, float, float]:
    return torch.rand(1).item(), float(np.random.rand()), random.random()


def test_a_module_drawing_in_eval_mode_leaves_every_generator_as_it_was():
    model = nn.Sequential(nn.Flatten(), Drawing(), nn.Linear(64, 10))
    digits = load_dataset("digits")
    training.seed_everything(1)
    expected = draws()
    training.seed_everything(1)
    accuracy.epoch_accuracy(model, digits, torch.device("cpu"))
    assert draws() == expected


def test_each_modules_own_mode_is_restored_a_frozen_batchnorm_stays_frozen():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.Linear(16, 10))
    model.train()
    model[2].eval()  # frozen by the trainer: its running statistics must not move
    accuracy.epoch_accuracy(model, load_dataset("digits"), torch.device("cpu"))
    assert [m.training for m in model.modules()] == [True, True, True, False, True]


def test_winnows_loop_measures_the_last_epoch_once(monkeypatch):
    passes = []
    measure = accuracy.test_accuracy

    def counted(*args):
        passes.append(1)
        return measure(*args)

    monkeypatch.setattr(accuracy, "test_accuracy", counted)  # the per-epoch passes
    monkeypatch.setattr(training, "test_accuracy", counted)  # the final one
    result = run(2, True)
    assert len(passes) == 2 and len(result.accuracy_curve) == 2  # epoch 1, then the final
    assert result.accuracy_curve[-1] == result.metrics["accuracy"]


def test_every_default_measures_them_as_the_task_does():
    default = Task(dataset="digits").eval_every_epoch
    assert TrialSpec(CANDIDATE, "digits").epoch_accuracy is default is True
    fields = {f.name: f.default for f in TrainData.__dataclass_fields__.values()}
    assert fields["epoch_accuracy"] is default
    assert inspect.signature(training.train).parameters["epoch_accuracy"].default is default


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA's allocator peak is exact")
def test_measuring_every_epoch_leaves_the_peak_memory_alone_on_cuda():
    measured, plain = run(2, True, device="cuda"), run(2, False, device="cuda")
    assert measured.metrics["peak_memory_bytes"] == plain.metrics["peak_memory_bytes"]
    assert measured.metrics["accuracy"] == plain.metrics["accuracy"]
