"""A local worker whose parent is SIGKILLed mid-trial exits within about a second
(``worker_main.watch_parent``), rather than training on until its next message to the dead
parent fails; it says so on stderr."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

# The parent: a LocalExecutor running a long trial that reports no epochs (as a user's
# task.trainer may), so only the watch, not a failed send, can end the orphan.
PARENT = textwrap.dedent(
    """
    import time
    from winnow.search_space.candidate import Candidate
    from winnow.search_space.trial import TrialSpec
    from winnow.workers.local import LocalExecutor

    MLP = Candidate(
        architecture={"family": "mlp", "depth": 1, "width": 32, "activation": "relu",
                      "dropout": 0.0},
        optimizer={"name": "adamw", "lr": 3e-3, "batch_size": 64},
    )
    executor = LocalExecutor(workers=1, max_retries=0)
    future = executor.submit(TrialSpec(MLP, "digits", epochs=500))
    while not any(w.task is not None and w.ready for w in executor.workers):
        time.sleep(0.05)
    time.sleep(0.5)  # into the trial's training
    assert not future.done(), future.result()
    print(executor.workers[0].process.pid, flush=True)
    time.sleep(600)
    """
)


def alive(pid: int) -> bool:
    """Running and not a zombie (an orphan's new parent may not reap it at once)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_a_worker_exits_soon_after_its_parent_is_killed(tmp_path):
    stderr = tmp_path / "stderr"
    with stderr.open("w") as err:
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, stderr=err, text=True
        )
        try:
            worker = int(parent.stdout.readline())
            assert alive(worker)
            os.kill(parent.pid, signal.SIGKILL)
            parent.wait(10)
            deadline = time.monotonic() + 5  # the trial alone would run for minutes
            while alive(worker) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not alive(worker), "the orphaned worker is still training"
        finally:
            parent.kill()
            if alive(worker := locals().get("worker", -1)):
                os.kill(worker, signal.SIGKILL)
    assert f"winnow worker {worker}: its parent {parent.pid} is gone" in stderr.read_text()
