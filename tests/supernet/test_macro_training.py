"""Sandwich-rule training of the macro supernet: it learns, it is seeded, it resumes exactly,
and inherited accuracy is measured on a carved validation split."""

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from winnow.search_space.archs.macro import MacroSpace
from winnow.search_space.candidate import Candidate
from winnow.supernet import macro_training
from winnow.supernet.macro import MacroSupernet
from winnow.supernet.macro_training import (
    SandwichSettings,
    SandwichTrainer,
    _mix,
    batches,
    inherited_accuracy,
    save_checkpoint,
    soft_cross_entropy,
    train_supernet,
    validation_split,
)

SHAPE = (3, 8, 8)
SPACE = MacroSpace(
    base_channels=[8, 16],
    strides=[1, 2],
    stem_channels=8,
    head_channels=16,
    depth=[1, 2],
    kernel_size=[3, 5],
    expand_ratio=[3, 4],
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _task(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes told apart by the sign of the first channel's mean, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, *SHAPE, generator=g)
    x[:, 0] += (y.float() * 2 - 1)[:, None, None]
    return x, y


def _supernet(seed: int = 0) -> MacroSupernet:
    torch.manual_seed(seed)
    return MacroSupernet(SPACE, 2, SHAPE)


def _largest_loss(supernet: MacroSupernet, x, y) -> float:
    supernet.eval()
    with torch.no_grad():
        return F.cross_entropy(supernet(x, supernet.largest()), y).item()


def test_sandwich_training_lowers_the_loss():
    x, y = _task(128)
    supernet = _supernet()
    before = _largest_loss(supernet, x, y)
    settings = SandwichSettings(batch_size=32, lr=0.1, random_subnets=1)
    report = SandwichTrainer(supernet, settings, max_steps=24).fit(x, y)
    assert report.steps == 24 and report.stopped == "steps" and len(report.epoch_losses) == 6
    assert _largest_loss(supernet, x, y) < 0.7 * before
    assert report.epoch_losses[-1] < report.epoch_losses[0]


@pytest.mark.parametrize("distillation", [True, False])
def test_a_step_accumulates_the_largest_the_smallest_and_random_subnets(distillation):
    """The step's gradient is the largest's label loss plus, for the smallest and each random
    subnet, the soft cross-entropy against the largest's detached outputs (the labels' without
    distillation)."""
    x, y = _task(16)
    settings = SandwichSettings(random_subnets=2, distillation=distillation, seed=5, lr=0.0)
    supernet = _supernet()
    SandwichTrainer(supernet, settings, max_steps=1).train_step(x, y)  # lr 0: weights kept
    expected = _supernet()
    rng = random.Random(5)
    logits = expected(x, expected.largest())
    teacher = logits.detach().softmax(-1)
    loss = F.cross_entropy(logits, y)
    for arch in [expected.smallest(), expected.sample(rng), expected.sample(rng)]:
        out = expected(x, arch)
        target_loss = soft_cross_entropy(out, teacher) if distillation else F.cross_entropy(out, y)
        loss = loss + target_loss
    loss.backward()
    for (name, p), q in zip(supernet.named_parameters(), expected.parameters(), strict=True):
        if q.grad is None:
            assert p.grad is None, name
        else:
            torch.testing.assert_close(p.grad, q.grad, msg=name)


def _run(steps_first: int | None, total: int, x, y, seed=3) -> MacroSupernet:
    settings = SandwichSettings(batch_size=8, random_subnets=2, augment=True, seed=seed)
    supernet = _supernet()
    trainer = SandwichTrainer(supernet, settings, max_steps=total)
    if steps_first is not None:
        trainer.fit(x, y, steps=steps_first)
        state = trainer.state_dict()
        supernet = _supernet(seed=99)  # other initial weights: everything must come back
        trainer = SandwichTrainer(supernet, settings, max_steps=total)
        trainer.load_state_dict(state)
    trainer.fit(x, y)
    return supernet


def test_a_resumed_run_equals_the_uninterrupted_one():
    x, y = _task(24)  # three steps an epoch: the resume falls mid-epoch
    whole, resumed = _run(None, 7, x, y), _run(4, 7, x, y)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    other_seed = _run(None, 7, x, y, seed=4)
    assert not torch.equal(other_seed.stem.conv.weight, whole.stem.conv.weight)


def test_train_supernet_checkpoints_every_epoch_and_resumes(tmp_path):
    x, y = _task(32)
    path = tmp_path / "supernet.pt"
    settings = SandwichSettings(batch_size=8, random_subnets=0)
    epochs = []
    train_supernet(_supernet(), x, y, settings, 6, on_epoch=lambda *a: epochs.append(a[:2]))
    assert epochs == [(1, 2)]  # 4 steps an epoch: the second epoch stops at step 6
    report = train_supernet(_supernet(), x, y, settings, 6, checkpoint=path, max_seconds=0)
    assert report.steps == 0 and report.stopped == "time" and path.is_file()
    report = train_supernet(_supernet(), x, y, settings, 6, checkpoint=path)
    assert report.steps == 6
    assert train_supernet(_supernet(), x, y, settings, 6, checkpoint=path).steps == 6
    with pytest.raises(ValueError, match="schedule"):
        train_supernet(_supernet(), x, y, settings, 9, checkpoint=path)


def test_validation_split_is_disjoint_and_seeded():
    train, val = validation_split(100, 0.2, seed=1)
    assert len(val) == 20 and len(train) == 80
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert torch.equal(validation_split(100, 0.2, seed=1)[1], val)
    assert not torch.equal(validation_split(100, 0.2, seed=2)[1], val)


def test_inherited_accuracy_is_measured_after_recalibrating_batchnorm():
    x, y = _task(128)
    supernet = _supernet()
    SandwichTrainer(supernet, SandwichSettings(batch_size=32), max_steps=8).fit(x, y)
    candidate = Candidate(architecture=supernet.sample(random.Random(0)))
    train = list(batches(x, y, 32))
    assert [len(b) for _, b in train] == [32] * 4
    accuracy = inherited_accuracy(supernet, candidate, train, train, bn_batches=2)
    assert 0.5 < accuracy <= 1.0  # it learnt the task
    # inputs scaled far off: stale statistics break the subnet, re-estimated ones follow them
    scaled = [(xb * 50, yb) for xb, yb in train]
    stale = inherited_accuracy(supernet, candidate, scaled, scaled, bn_batches=0)
    recalibrated = inherited_accuracy(supernet, candidate, scaled, scaled, bn_batches=4)
    assert recalibrated > stale


def test_a_checkpoint_of_other_settings_or_another_training_set_is_refused(tmp_path):
    x, y = _task(32)
    path = tmp_path / "supernet.pt"
    settings = SandwichSettings(batch_size=8, random_subnets=0)
    train_supernet(_supernet(), x, y, settings, 6, checkpoint=path, max_seconds=0)
    other = SandwichSettings(batch_size=8, random_subnets=0, lr=0.1)
    with pytest.raises(ValueError, match="other settings \\(lr\\)"):
        train_supernet(_supernet(), x, y, other, 6, checkpoint=path)
    with pytest.raises(ValueError, match="32 samples, not 40"):
        train_supernet(_supernet(), *_task(40), settings, 6, checkpoint=path)
    assert train_supernet(_supernet(), x, y, settings, 6, checkpoint=path).steps == 6


def test_step_seeds_come_from_a_seed_sequence_not_a_tuple_hash():
    """``hash`` of a tuple is not promised across Python versions; SeedSequence is specified."""
    expected = np.random.SeedSequence([1, 7]).generate_state(1, np.uint64)[0] & (2**63 - 1)
    assert _mix(1, 7) == int(expected) != hash((1, 7)) & (2**63 - 1)
    seeds = {_mix(s, *rest) for s in range(3) for rest in [(0,), (1,), (-1, 0), (-1, 1)]}
    assert len(seeds) == 12 and all(0 <= v < 2**63 for v in seeds)


def test_a_checkpoint_is_on_disk_before_it_replaces_the_last(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(macro_training.os, "fsync", lambda fd: calls.append("fsync"))
    replace = macro_training.os.replace
    monkeypatch.setattr(
        macro_training.os, "replace", lambda a, b: (calls.append("replace"), replace(a, b))
    )
    trainer = SandwichTrainer(_supernet(), SandwichSettings(batch_size=8), 4)
    save_checkpoint(trainer, tmp_path / "supernet.pt")
    assert calls == ["fsync", "replace"]
    assert torch.load(tmp_path / "supernet.pt", weights_only=True)["max_steps"] == 4


def test_a_validation_split_that_leaves_no_training_sample_is_refused():
    with pytest.raises(ValueError, match="none to train on"):
        validation_split(1, 0.5, seed=0)
    with pytest.raises(ValueError, match="none to train on"):
        validation_split(2, 0.9, seed=0)
    assert [len(part) for part in validation_split(2, 0.5, seed=0)] == [1, 1]


def test_the_sandwich_trainer_uses_winnows_sgd_eager_on_cpu_fused_where_kernels_run():
    """On CPU the torch.optim.SGD it built before the kernels (same groups and hyperparameters:
    the same steps); with the kernels forced, FusedSGD."""
    from winnow.kernels import backend

    supernet = _supernet()
    settings = SandwichSettings(lr=0.1, momentum=0.9, weight_decay=5e-4)
    before = torch.optim.SGD(
        macro_training._parameter_groups(supernet, 5e-4), lr=0.1, momentum=0.9, nesterov=True
    )
    macro_training.build_scheduler(before, settings.warmup_steps, 4, "cosine")  # as the trainer
    ours = SandwichTrainer(supernet, settings, max_steps=4).optimizer
    assert type(ours) is torch.optim.SGD
    assert ours.state_dict() == before.state_dict()
    if backend.triton_available():
        with backend.use_kernels("triton"):
            fused = SandwichTrainer(supernet, settings, max_steps=4).optimizer
        assert type(fused).__name__ == "FusedSGD"
        assert fused.state_dict()["param_groups"] == before.state_dict()["param_groups"]
