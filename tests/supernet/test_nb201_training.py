"""Training the nb201 supernet (seeded, resumable) and scoring candidates by inherited accuracy."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from winnow.search_space.datasets import load_dataset
from winnow.search_space.schedules import lr_multiplier
from winnow.supernet.inherited import (
    calibration_batches,
    carve_validation,
    score_candidate,
    validate,
)
from winnow.supernet.nb201 import NB201Supernet
from winnow.supernet.nb201_training import TrainSettings, _steps_for, lr_factor, train_supernet

SETTINGS = TrainSettings(batch_size=16, warmup_steps=4, seed=3)


@pytest.fixture(scope="module")
def data():
    """80 training images (5 steps an epoch at batch 16) and 100 validation images."""
    carved = carve_validation(load_dataset("synthetic:3x8x8"), fraction=0.2, seed=0)
    return dataclasses.replace(carved, train_x=carved.train_x[:80], train_y=carved.train_y[:80])


def fresh(sampling: str = "uniform") -> NB201Supernet:
    torch.manual_seed(0)
    return NB201Supernet(channels=4, cells_per_stage=1, sampling=sampling)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_validation_is_carved_from_training_data_and_the_test_split_is_gone():
    full = load_dataset("synthetic:3x8x8")
    carved = carve_validation(full, fraction=0.25, seed=1)
    assert len(carved.test_y) == round(0.25 * len(full.train_y))
    assert len(carved.train_y) + len(carved.test_y) == len(full.train_y)
    rows = {tuple(x.flatten().tolist()) for x in full.train_x}
    assert all(tuple(x.flatten().tolist()) in rows for x in carved.test_x)
    held = {tuple(x.flatten().tolist()) for x in carved.test_x}
    assert not any(tuple(x.flatten().tolist()) in held for x in carved.train_x)


def test_training_is_seeded_and_reports_its_epochs(data):
    epochs: list[tuple[int, int]] = []
    a, b = fresh(), fresh()
    report = train_supernet(
        a, data, SETTINGS, steps=6, on_epoch=lambda e, n, *_: epochs.append((e, n))
    )
    train_supernet(b, data, SETTINGS, steps=6)
    assert_same(weights(a), weights(b))
    per_epoch = len(data.train_y) // SETTINGS.batch_size
    assert report.steps == report.total_steps == 6 and report.steps_per_epoch == per_epoch
    assert epochs == [(e, -(-6 // per_epoch)) for e in range(1, 6 // per_epoch + 1)]
    c = fresh()
    train_supernet(c, data, TrainSettings(batch_size=16, warmup_steps=4, seed=4), steps=6)
    assert any(not torch.equal(weights(a)[k], weights(c)[k]) for k in weights(a))


@pytest.mark.parametrize("sampling", ["uniform", "fair"])
def test_a_resumed_run_equals_an_uninterrupted_one(data, tmp_path, sampling):
    steps = 6
    whole = fresh(sampling)
    train_supernet(whole, data, SETTINGS, steps=steps)

    class Killed(Exception):
        pass

    def kill(epoch, *_):  # killed after epoch 1, past the checkpoint at step 3
        raise Killed

    path = tmp_path / "supernet.pt"
    interrupted = fresh(sampling)
    per_epoch = len(data.train_y) // SETTINGS.batch_size
    assert 3 < per_epoch < steps  # the kill comes between two checkpoints
    with pytest.raises(Killed):
        train_supernet(
            interrupted,
            data,
            SETTINGS,
            steps=steps,
            checkpoint=path,
            checkpoint_every=3,
            on_epoch=kill,
        )
    resumed = fresh(sampling)  # a new process: nothing but the checkpoint survives
    report = train_supernet(
        resumed, data, SETTINGS, steps=steps, checkpoint=path, checkpoint_every=3
    )
    assert report.resumed_from == 3 and report.steps == steps
    assert_same(weights(resumed), weights(whole))


def test_a_checkpoint_of_other_settings_is_refused(data, tmp_path):
    path = tmp_path / "supernet.pt"
    train_supernet(fresh(), data, SETTINGS, steps=2, checkpoint=path)
    with pytest.raises(ValueError, match="other settings"):
        train_supernet(fresh(), data, TrainSettings(batch_size=8), steps=2, checkpoint=path)


def test_a_time_budget_stops_and_a_step_cap_comes_first(data):
    report = train_supernet(fresh(), data, SETTINGS, seconds=0.5, timing_steps=2)
    assert 1 <= report.steps <= report.total_steps
    capped = train_supernet(fresh(), data, SETTINGS, seconds=60, steps=3, timing_steps=2)
    assert capped.steps == capped.total_steps == 3
    inside = train_supernet(fresh(), data, SETTINGS, seconds=60, steps=2, timing_steps=3)
    assert inside.steps == inside.total_steps == 2  # the cap comes before the timing ends


def test_the_pace_of_a_time_budget_leaves_the_first_step_out():
    # 5 steps timed in 2 s, the first taking 1.5 s: 0.125 s a step for the 8 s left
    assert _steps_for(10.0, spent=2.0, after_first=1.5, done=5, timed=5, cap=None) == 69
    assert _steps_for(10.0, spent=2.0, after_first=1.5, done=5, timed=5, cap=20) == 20
    assert _steps_for(10.0, spent=2.0, after_first=0.0, done=1, timed=1, cap=None) == 5


def test_a_time_budget_decays_the_rate_with_the_time_spent():
    cosine = lr_multiplier  # (step, warmup, total, "cosine")
    # time only: 90 % of the time spent at step 50, whatever the step count
    assert lr_factor(50, 10, spent=90.0, seconds=100.0, steps=None) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 0.9))
    )
    assert lr_factor(60, 10, spent=100.0, seconds=100.0, steps=None) == pytest.approx(0.0)
    # steps only: the step cosine, as before
    assert lr_factor(50, 10, spent=90.0, seconds=None, steps=100) == cosine(50, 10, 100, "cosine")
    # both: whichever is further spent
    assert lr_factor(50, 10, spent=10.0, seconds=100.0, steps=100) == cosine(50, 10, 100, "cosine")
    assert lr_factor(50, 10, spent=90.0, seconds=100.0, steps=1000) < cosine(50, 10, 1000, "cosine")
    # the warmup is by steps
    assert lr_factor(5, 10, spent=99.0, seconds=100.0, steps=None) == cosine(5, 10, 0, "cosine")


def test_a_resumed_time_budget_counts_the_seconds_already_spent(data, tmp_path):
    path = tmp_path / "supernet.pt"
    first = train_supernet(fresh(), data, SETTINGS, seconds=1.0, timing_steps=2, checkpoint=path)
    second = train_supernet(fresh(), data, SETTINGS, seconds=1.5, timing_steps=2, checkpoint=path)
    assert second.resumed_from == first.steps and second.steps > first.steps
    assert second.seconds >= 1.5 and second.seconds - first.seconds < 1.5  # only what was left
    third = train_supernet(fresh(), data, SETTINGS, seconds=1.5, timing_steps=2, checkpoint=path)
    assert third.steps == second.steps  # the deadline has passed: nothing more


def test_a_time_budget_trains_to_its_deadline(data):
    report = train_supernet(fresh(), data, SETTINGS, seconds=1.0, timing_steps=2)
    assert report.seconds >= 1.0 and report.steps == report.total_steps


def test_training_lowers_the_validation_loss_and_scores_differ_by_cell(data):
    supernet = fresh()
    cells = [supernet.arch(c) for c in (CONV, POOL)]
    before = [validate(supernet.get_active_subnet(a), data).loss for a in cells]
    train_supernet(supernet, data, SETTINGS, steps=40)
    batches = calibration_batches(data, num_batches=2, batch_size=16)
    scores = [score_candidate(supernet, a, data, batches, ablation=True) for a in cells]
    assert all(s.recalibrated.loss < b for s, b in zip(scores, before, strict=True))
    assert scores[0].recalibrated != scores[1].recalibrated
    assert all(s.shared_statistics is not None for s in scores)


def test_recalibration_uses_the_batches_given(data):
    supernet = fresh()
    train_supernet(supernet, data, SETTINGS, steps=5)
    arch = supernet.arch(CONV)
    one = calibration_batches(data, num_batches=1, batch_size=16)
    two = calibration_batches(data, num_batches=2, batch_size=16)
    assert torch.equal(one[0], two[0])
    assert score_candidate(supernet, arch, data, one) != score_candidate(supernet, arch, data, two)
    assert score_candidate(supernet, arch, data, one).shared_statistics is None


CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
POOL = "|avg_pool_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|none~1|avg_pool_3x3~2|"


def test_the_supernet_trains_with_winnows_sgd_eager_on_cpu_fused_where_kernels_run():
    """On CPU the optimizer is the torch.optim.SGD it was before the kernels (same class, same
    groups and hyperparameters: the same steps); with the kernels forced, FusedSGD."""
    from winnow.kernels import backend
    from winnow.supernet.nb201_training import _optimizer

    supernet = NB201Supernet(channels=4, cells_per_stage=1)
    settings = TrainSettings(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    before = torch.optim.SGD(
        supernet.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    ours = _optimizer(supernet, settings)
    assert type(ours) is torch.optim.SGD
    assert ours.state_dict() == before.state_dict()
    if backend.triton_available():
        with backend.use_kernels("triton"):
            fused = _optimizer(supernet, settings)
        assert type(fused).__name__ == "FusedSGD"
        assert fused.state_dict() == before.state_dict()
