"""Shared fixtures. Real data is read by path from ``$WINNOW_SHARED_DATA`` (default
``../shared/data`` beside the repository); tests that need it skip with a message when absent.
Real winnow servers on loopback ports (``make_server``), tiny search specs for them
(``tiny_spec``), and one local Ray for the session (``local_ray``)."""

from __future__ import annotations

import os

# Without a GPU the Triton kernels are checked in triton's interpreter, which must be chosen
# before triton is first imported (torch imports it lazily, so set it before anything else).
# On a CUDA machine the kernels compile; TRITON_INTERPRET=1 in the environment still wins.
if "TRITON_INTERPRET" not in os.environ:
    import torch.cuda

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

import copy
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from winnow.service.api.server import ServerConfig, WinnowServer
from winnow.service.store import sqlite_url

ROOT = Path(__file__).resolve().parents[1]

# About a second per trained trial on two CPU cores: one-epoch MLPs on the digits.
TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "space": {
        "architecture": {"family": "mlp", "depth": [1, 2], "width": [16, 32, 64]},
        "optimizer": {"name": "adamw", "lr": {"low": 1e-3, "high": 1e-2, "log": True}},
    },
    "task": {"dataset": "digits"},
    "objectives": [
        {"name": "accuracy", "direction": "maximize"},
        {"name": "params", "direction": "minimize"},
    ],
    "budget": {"max_trials": 3},
    "strategy": {"name": "random", "rungs": [1]},
    "seed": 0,
}


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread for the test: many tiny ops run faster so on a busy 2-core machine
    (idle intra-op threads spin for contended cores). A file takes it for every test with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_spec():
    """``tiny_spec(**fields)``: the tiny search with some top-level fields replaced."""

    def make(**changes: Any) -> dict[str, Any]:
        return copy.deepcopy(TINY_SPEC) | changes

    return make


@pytest.fixture
def make_server(tmp_path) -> Iterator:
    servers: list[WinnowServer] = []

    def make(**config: Any) -> WinnowServer:
        config.setdefault("db_url", sqlite_url(tmp_path / "winnow.db"))
        config.setdefault("address", "127.0.0.1:0")
        server = WinnowServer(ServerConfig(**config)).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop(grace=0.5)


@pytest.fixture
def self_signed(tmp_path) -> tuple[Path, Path]:
    """A certificate for localhost and its key (PEM files), made by openssl for the test."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


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
