"""Shared fixtures. Real data is read by path from ``$WINNOW_SHARED_DATA`` (default
``../shared/data`` beside the repository); tests that need it skip with a message when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("WINNOW_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    folder = shared_data_dir()
    if not (folder / "cifar10_subset.npz").is_file():
        pytest.skip(f"real data not found in {folder} (set WINNOW_SHARED_DATA)")
    return folder


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray of 2 CPUs for every Ray test of the session (starting one takes seconds).
    Executors made while it runs use it as it is and leave it running."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
