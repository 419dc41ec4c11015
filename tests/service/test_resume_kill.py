"""A search killed with SIGKILL mid-run resumes from the store: every finished trial is kept
as it was, none is run again, the interrupted one is re-queued, and the budget is met."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from winnow.service.store import Store, sqlite_url

SPEC = {
    "name": "kill-me",
    "space": {
        "architecture": {"family": "mlp", "depth": [1, 2], "width": [32, 64, 128]},
        "optimizer": {"name": "adamw", "lr": {"low": 1e-3, "high": 1e-2, "log": True}},
    },
    "task": {"dataset": "digits"},
    "budget": {"max_trials": 10},
    "strategy": {"name": "tpe", "rungs": [1]},
    "seed": 0,
}


def winnow(*args: str) -> list[str]:
    return [sys.executable, "-m", "winnow.service.cli", *args]


def wait_for_finished_trials(store: Store, n: int, process: subprocess.Popen) -> str:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, "the search ended before it could be killed"
        searches = store.searches()
        if searches:
            rows = store.trials(searches[0].id)
            if sum(r.status == "ok" for r in rows) >= n:
                return searches[0].id
        time.sleep(0.05)
    raise AssertionError("no finished trials within 240 s")


@pytest.mark.slow
def test_search_resumes_after_kill_9(tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SPEC))
    url = sqlite_url(tmp_path / "kill.db")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["search", "run", str(spec_file), "--store", url, "--quiet", "--device", "cpu"]
    process = subprocess.Popen(winnow(*args), env=env, stdout=subprocess.DEVNULL)
    store = Store(url)
    search_id = wait_for_finished_trials(store, 3, process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = {r.id: r for r in store.trials(search_id) if r.status == "ok"}
    assert 3 <= len(before) < 10

    resume = ["search", "resume", search_id, "--store", url, "--quiet", "--json", "--device", "cpu"]
    done = subprocess.run(winnow(*resume), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    after = store.trials(search_id)
    assert report["trained"] == 10 and report["status"] == "finished"
    assert len(after) == 10 and {r.status for r in after} <= {"ok", "failed"}
    for row_id, row in before.items():  # kept exactly as they were: never re-run
        kept = next(r for r in after if r.id == row_id)
        assert (kept.metrics, kept.finished_at) == (row.metrics, row.finished_at)
    assert store.search(search_id).status == "finished"
    assert [e.kind for e in store.events(search_id)].count("search_resumed") == 1


RUNG_SPEC = {
    "name": "kill-mid-rung",
    "space": {  # an MLP wide enough that an epoch takes about half a second on one core
        "architecture": {"family": "mlp", "depth": 2, "width": 1024, "activation": "relu"},
        "optimizer": {"name": "adamw", "lr": [1e-3, 2e-3, 3e-3], "batch_size": 64},
    },
    "task": {"dataset": "digits"},
    "budget": {"max_trials": 3},
    "strategy": {"name": "random", "rungs": [1, 9], "reduction_factor": 3},
    "keep_weights": 0,
    "seed": 0,
}


def wait_for_top_rung_epoch(store: Store, epoch: int, process: subprocess.Popen):
    """The search id, the trial and the last epoch of the top rung reported once it is past
    ``epoch``."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, "the search ended before it could be killed"
        for search in store.searches():
            done = [e.payload for e in store.events(search.id) if e.kind == "epoch_finished"]
            top = [p for p in done if p["rung"] == 1]
            if top and top[-1]["epoch"] >= epoch:
                return search.id, top[-1]["trial_id"], top[-1]["epoch"]
        time.sleep(0.02)
    raise AssertionError(f"the top rung did not reach epoch {epoch} within 240 s")


@pytest.mark.slow
def test_a_search_killed_mid_rung_resumes_the_rung_from_its_last_checkpoint(tmp_path):
    """kill -9 during the 9-epoch rung: the resumed run trains only the epochs after the last
    checkpoint (saved after every epoch, before the epoch is reported), not 9 from epoch 0."""
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(RUNG_SPEC))
    url = sqlite_url(tmp_path / "kill.db")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["search", "run", str(spec_file), "--db", url, "--quiet", "--device", "cpu"]
    process = subprocess.Popen(winnow(*args), env=env, stdout=subprocess.DEVNULL)
    store = Store(url)
    search_id, number, reported = wait_for_top_rung_epoch(store, 3, process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert reported < 9
    checkpoint = tmp_path / "kill.db.artifacts" / search_id / f"{number}.ckpt"
    assert checkpoint.is_file()  # the engine's start-up sweep must keep it

    resume = ["search", "resume", search_id, "--db", url, "--quiet", "--json", "--device", "cpu"]
    done = subprocess.run(winnow(*resume), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (top,) = [r for r in store.trials(search_id) if r.stage == "train" and r.rung == 1]
    assert top.status == "ok" and top.number == number
    # the checkpoint of the last reported epoch, or of the next if the kill came between
    # its save and its report
    assert 9 - reported - 1 <= top.metrics["epochs_run"] <= 9 - reported
    events = store.events(search_id)
    resumed_at = next(i for i, e in enumerate(events) if e.kind == "search_resumed")
    after = [e.payload["epoch"] for e in events[resumed_at:] if e.kind == "epoch_finished"]
    assert after == list(range(10 - top.metrics["epochs_run"], 10))
    assert len(top.loss_curve) == 9  # the curve of every epoch, the resumed ones first
    assert not checkpoint.exists()  # the finished search deleted it
