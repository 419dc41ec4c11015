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
