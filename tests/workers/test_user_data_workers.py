"""A ``python:`` dataset loads in a local pool's worker processes: they are spawned with the
parent's ``sys.path``, so a module importable where the pool starts is importable in them."""

from __future__ import annotations

import uuid

import pytest

from winnow.search_space.candidate import Candidate
from winnow.search_space.trial import Status, TrialSpec
from winnow.workers.local import LocalExecutor
from winnow.workers.run import run_trial

MODULE = """
import numpy as np


def load():
    rng = np.random.default_rng(0)
    return {"train_x": rng.random((60, 7), dtype=np.float32), "train_y": np.arange(60) % 4,
            "test_x": rng.random((20, 7), dtype=np.float32), "test_y": np.arange(20) % 4}
"""


@pytest.mark.slow  # a worker process starts (imports torch): 15 s on a loaded 2-core machine
def test_a_spawned_worker_imports_the_users_dataset_module(tmp_path, monkeypatch):
    name = f"winnow_user_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    mlp = Candidate(
        architecture={
            "family": "mlp",
            "depth": 1,
            "width": 8,
            "activation": "relu",
            "dropout": 0.0,
        },
        optimizer={"name": "adamw", "lr": 1e-3, "batch_size": 32},
    )
    spec = TrialSpec(mlp, f"python:{name}:load", stage="costs")
    with LocalExecutor(workers=1, max_retries=0) as executor:
        result = executor.submit(spec).result(120)
    assert result.status == Status.OK, result.error
    here = run_trial(spec)  # in this process, which has the module on its path too
    assert result.metrics["params"] == here.metrics["params"]
