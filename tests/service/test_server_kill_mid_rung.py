"""``winnow serve`` killed with kill -9 in the middle of a 9-epoch rung (issue 19's done-when):
its orphaned worker stops by itself (it watches its parent: worker_main), and the server
restarted on the same store resumes the search and trains that candidate only the epochs after
its last checkpoint, then deletes the file. (``winnow search run`` killed mid-rung:
test_resume_kill.py.)"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from winnow.service.client import Client
from winnow.service.store import Store

from .served import Served, _children, wait_until

pytestmark = pytest.mark.slow
SEARCH_SECONDS = 120
TOP = 2  # the index of the 9-epoch rung

SPEC = {
    "name": "kill-server-mid-rung",
    "space": {  # an MLP wide enough that an epoch takes about half a second on one core
        "architecture": {"family": "mlp", "depth": 2, "width": 1024, "activation": "relu"},
        "optimizer": {"name": "adamw", "lr": [1e-3, 2e-3, 3e-3, 4e-3], "batch_size": 64},
    },
    "task": {"dataset": "digits"},
    "budget": {"max_trials": 4},  # 4 at 1 epoch, 2 on to 3, 1 on to 9
    "strategy": {"name": "random", "rungs": [1, 3, 9], "reduction_factor": 2},
    "keep_weights": 0,
    "seed": 0,
}


def top_rung_epoch(store: Store, search_id: str, epoch: int) -> tuple[int, int] | None:
    """The candidate training the top rung and its last reported epoch, once that epoch is
    at least ``epoch`` (epochs count from the start of the 9-epoch schedule)."""
    events = store.events(search_id)
    assert not any(e.kind == "search_finished" for e in events), "finished before the kill"
    top = [e.payload for e in events if e.kind == "epoch_finished" and e.payload["rung"] == TOP]
    if top and top[-1]["epoch"] >= epoch:
        return top[-1]["trial_id"], top[-1]["epoch"]
    return None


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's parent here may never reap it)."""
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def kill_server_only(served: Served) -> list[int]:
    """SIGKILL the server alone (not ``Served.kill``, which kills its workers too); returns
    its child processes, now orphans."""
    children = _children(served.process.pid)
    assert served.worker_pids(), "no worker to orphan"
    served.process.kill()
    served.process.wait(30)
    return children


def test_a_server_killed_mid_rung_resumes_the_candidate_from_its_checkpoint(tmp_path):
    served = Served(tmp_path, "--workers", "1").start().wait_ready()
    try:
        with Client(served.address, retries=10) as client:
            search_id = client.submit(SPEC).id
        # two epochs of the 9-epoch rung done (it goes on from epoch 3 of 9)
        number, reported = wait_until(
            lambda: top_rung_epoch(served.store, search_id, 5), SEARCH_SECONDS, "epoch 5", 0.05
        )
        orphans = kill_server_only(served)
        # The orphaned worker sees its parent gone and exits within about half a second
        # (worker_main.watch_parent), its last saved epoch in the checkpoint (saves are atomic);
        # the resource tracker follows once no worker holds its pipe.
        wait_until(lambda: not any(map(running, orphans)), 60, f"orphans {orphans} exit")
        checkpoint = tmp_path / "winnow.db.artifacts" / search_id / f"{number}.ckpt"
        done_before = torch.load(checkpoint, weights_only=True)["epochs_done"]
        assert reported <= done_before < 9

        served.start().wait_ready()
        with Client(served.address, retries=10) as client:
            info = client.search(search_id).wait(timeout=SEARCH_SECONDS)
        assert info["status"] == "finished", served.log_tail()
        (top,) = [r for r in served.store.trials(search_id) if r.rung == TOP]
        assert top.status == "ok" and top.number == number
        assert top.metrics["epochs_run"] == 9 - done_before  # not 9, nor the rung's 6
        assert len(top.loss_curve) == 9  # the saved epochs' losses, then the resumed ones
        events = served.store.events(search_id)
        resumed_at = next(i for i, e in enumerate(events) if e.kind == "search_resumed")
        after = [e.payload["epoch"] for e in events[resumed_at:] if e.kind == "epoch_finished"]
        assert after == list(range(done_before + 1, 10))
        assert not checkpoint.exists()  # the finished search deleted it
    finally:
        served.close()
