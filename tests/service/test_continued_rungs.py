"""Continued rungs (``strategy.continue_rungs``): a promotion trains on from its candidate's
checkpoint, the rungs' ``epochs_run`` add up to the top rung, and the checkpoints of candidates
that can no longer be promoted are deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from winnow.records import SearchStatus
from winnow.search_space.trial import TrialSpec
from winnow.service.engine import Engine
from winnow.service.search_spec import parse_search_spec
from winnow.service.store import Store, sqlite_url
from winnow.service.store.artifacts import default_root
from winnow.workers.executor import InProcessExecutor
from winnow.workers.run import run_trial

SPACE = {
    "architecture": {"family": "mlp", "depth": 1, "width": [8, 16, 32], "activation": "relu"},
    "optimizer": {"name": "adamw", "lr": 0.003, "batch_size": 128},
}


def spec(continued: bool):
    return parse_search_spec(
        {
            "space": SPACE,
            "task": {"dataset": "digits"},
            "budget": {"max_trials": 3},
            "strategy": {
                "name": "random",
                "rungs": [1, 3],
                "reduction_factor": 3,
                "continue_rungs": continued,
            },
            "keep_weights": 0,
            "seed": 0,
        }
    )


class Watching:
    """Runs trials for real and notes, as each starts, its spec and the checkpoint files."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.seen = folder, []

    def __call__(self, trial: TrialSpec, on_epoch=None):
        files = {p.name for p in self.folder.rglob("*.ckpt")} if self.folder.is_dir() else set()
        self.seen.append((trial, files))
        return run_trial(trial, on_epoch)


@pytest.fixture
def store(tmp_path):
    return Store(sqlite_url(tmp_path / "rungs.db"))


def test_a_promotion_continues_its_checkpoint_and_others_are_deleted(store):
    watching = Watching(default_root(store.url))
    report = Engine.create(spec(True), store, InProcessExecutor(watching)).run()
    rows = [r for r in store.trials(report.search_id) if r.stage == "train"]
    (top,) = [r for r in rows if r.rung == 1]
    (first,) = [r for r in rows if r.rung == 0 and r.number == top.number]
    # one training of 3 epochs under the 3-epoch schedule: 1 epoch, then 2 more
    assert (first.metrics["epochs_run"], top.metrics["epochs_run"]) == (1, 2)
    assert top.loss_curve[:1] == first.loss_curve and len(top.loss_curve) == 3
    # the stored per-epoch accuracy is whole too (the checkpoint carried the first epoch's),
    # and its last is the row's final accuracy, measured the same way
    assert top.accuracy_curve[:1] == first.accuracy_curve and len(top.accuracy_curve) == 3
    assert top.accuracy_curve[-1] == top.metrics["accuracy"]
    assert first.accuracy_curve == [first.metrics["accuracy"]]
    assert report.epochs == 3 + 2  # not 3 + 3
    promotion, files = watching.seen[-1]
    assert promotion.epochs == 3 and promotion.schedule_epochs == 3
    assert Path(promotion.checkpoint).name == f"{top.number}.ckpt"
    # when the promotion starts, the first rung is settled: only the promoted one's file is left
    assert files == {f"{top.number}.ckpt"}
    assert [trial.schedule_epochs for trial, _ in watching.seen] == [3, 3, 3, 3]
    assert not list(default_root(store.url).rglob("*.ckpt"))  # the search's end deleted it


def test_without_continue_rungs_each_rung_trains_from_scratch(store):
    watching = Watching(default_root(store.url))
    report = Engine.create(spec(False), store, InProcessExecutor(watching)).run()
    rows = [r for r in store.trials(report.search_id) if r.stage == "train"]
    assert all(r.metrics["epochs_run"] == r.epochs for r in rows) and report.epochs == 3 + 3
    assert all(t.checkpoint is None and t.schedule_epochs is None for t, _ in watching.seen)


def test_a_paused_search_keeps_every_checkpoint_for_its_resume(store):
    """A pause (``cancel(QUEUED)``) while the last runs drain deletes nothing: the resumed
    search proposes more candidates, which may change which of the first rung go up."""
    folder = default_root(store.url)
    watching, engines = Watching(folder), []

    def pausing(trial, on_epoch=None):
        result = watching(trial, on_epoch)
        if len(watching.seen) == 3:
            engines[0].cancel(SearchStatus.QUEUED)
        return result

    six = spec(True)
    six = six.model_copy(update={"budget": six.budget.model_copy(update={"max_trials": 6})})
    engines.append(Engine.create(six, store, InProcessExecutor(pausing)))
    engines[0].run()
    assert store.search(engines[0].search_id).status == SearchStatus.QUEUED
    assert {p.name for p in folder.rglob("*.ckpt")} == {"0.ckpt", "1.ckpt", "2.ckpt"}


def test_a_search_that_fails_by_an_exception_deletes_its_checkpoints(store):
    folder, engines = default_root(store.url), []

    def breaking(trial, on_epoch=None):
        result = run_trial(trial, on_epoch)
        engines[0]._start_next = lambda: (_ for _ in ()).throw(RuntimeError("engine bug"))
        return result

    engines.append(Engine.create(spec(True), store, InProcessExecutor(breaking)))
    with pytest.raises(RuntimeError, match="engine bug"):
        engines[0].run()
    assert store.search(engines[0].search_id).status == SearchStatus.FAILED
    assert store.trials(engines[0].search_id)  # a first rung trained, and left its file
    assert not list(folder.rglob("*.ckpt"))
