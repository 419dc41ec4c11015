"""A training continued from its checkpoint equals one that never stopped (continued rungs)."""

from __future__ import annotations

import io

import torch

from winnow.search_space import Candidate, Status, TrialSpec
from winnow.search_space.checkpoints import Checkpoint
from winnow.search_space.training import evaluate

# augmentation-free digits, a tiny MLP with dropout (a draw of the global generator every
# step), Adam (state to carry) and a warmup (the schedule's position matters)
CANDIDATE = Candidate(
    architecture={"family": "mlp", "depth": 1, "width": 16, "activation": "relu", "dropout": 0.1},
    normalization="layernorm",
    optimizer={
        "name": "adamw",
        "lr": 3e-3,
        "weight_decay": 1e-4,
        "warmup_epochs": 0.5,
        "batch_size": 64,
    },
)


def weights(result) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(result.weights), weights_only=True)


def run(epochs: int, checkpoint=None, schedule: int = 3, keep: bool = True):
    spec = TrialSpec(
        CANDIDATE,
        "digits",
        epochs=epochs,
        seed=3,
        keep_weights=keep,
        schedule_epochs=schedule,
        checkpoint=None if checkpoint is None else str(checkpoint),
    )
    seen: list[int] = []
    result = evaluate(spec, on_epoch=lambda e, n, loss, s: seen.append(e))
    assert result.status == Status.OK, result.error
    return result, seen


def test_one_epoch_then_two_resumed_equals_three_straight(tmp_path):
    straight, _ = run(3)
    path = tmp_path / "0.ckpt"
    first, seen_first = run(1, path, keep=False)
    assert first.metrics["epochs_run"] == 1 and seen_first == [1] and path.is_file()
    continued, seen = run(3, path)
    assert continued.metrics["epochs_run"] == 2 and seen == [2, 3]
    # bit for bit: the state (weights, Adam's moments, the schedule's step, every generator)
    # is restored exactly and the same operations run in the same order on the CPU
    assert continued.loss_curve == straight.loss_curve and len(continued.loss_curve) == 3
    assert continued.metrics["accuracy"] == straight.metrics["accuracy"]
    a, b = weights(straight), weights(continued)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_first_rung_trains_under_the_top_rungs_schedule(tmp_path):
    """Rung 1 of [1, 3] is the top rung's first epoch, not a one-epoch schedule of its own."""
    under_top, _ = run(1, tmp_path / "a.ckpt", schedule=3)
    own, _ = run(1, schedule=1)
    assert under_top.loss_curve == run(1, schedule=3)[0].loss_curve
    assert not torch.equal(*(next(iter(weights(r).values())) for r in (under_top, own)))


def test_a_checkpoint_of_another_training_is_ignored(tmp_path):
    path = tmp_path / "0.ckpt"
    run(1, path, schedule=9, keep=False)  # another schedule's state
    resumed, seen = run(2, path, schedule=3)
    assert resumed.metrics["epochs_run"] == 2 and seen == [1, 2]
    path.write_bytes(b"damaged")
    assert run(1, path)[0].metrics["epochs_run"] == 1


def test_a_checkpoint_is_written_atomically_and_deleted(tmp_path):
    checkpoint = Checkpoint(tmp_path / "x.ckpt", "tag")
    checkpoint.save({"epochs_done": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["x.ckpt"]  # no temporary file is left
    assert checkpoint.load()["epochs_done"] == 1
    assert Checkpoint(checkpoint.path, "other").load() is None
    checkpoint.delete()
    checkpoint.delete()  # one already gone is no error
    assert checkpoint.load() is None


def test_a_checkpoint_that_cannot_be_written_does_not_fail_the_training(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    result, seen = run(2, blocked / "0.ckpt", keep=False)  # its folder cannot be made
    assert result.metrics["epochs_run"] == 2 and seen == [1, 2]
    assert not Checkpoint(blocked / "0.ckpt", "tag").save({"epochs_done": 1})


class Planted:
    """A pickle that, when unpickled, writes a marker file: what a planted checkpoint runs."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_holding_a_pickled_object_is_not_executed(tmp_path):
    path, marker = tmp_path / "0.ckpt", tmp_path / "executed"
    run(1, path, keep=False)
    state = torch.load(path, weights_only=True)
    torch.save({**state, "planted": Planted(marker)}, path)  # the right tag, and code to run
    resumed, seen = run(2, path, keep=False)
    assert not marker.exists()
    assert resumed.metrics["epochs_run"] == 2 and seen == [1, 2]


def test_a_checkpoint_of_another_network_under_the_same_tag_trains_from_epoch_0(tmp_path):
    path = tmp_path / "0.ckpt"
    run(1, path, keep=False)
    state = torch.load(path, weights_only=True)
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).state_dict()
    torch.save({**state, "model": other}, path)  # a builder that changed since the save
    straight, _ = run(2)
    resumed, seen = run(2, path)
    assert resumed.metrics["epochs_run"] == 2 and seen == [1, 2]
    # the failed load left nothing behind: the run is the one that never had a checkpoint
    assert resumed.loss_curve == straight.loss_curve
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
