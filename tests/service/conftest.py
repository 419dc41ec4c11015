"""A real winnow server on a loopback port, and tiny search specs for it."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from winnow.service.client import Client
from winnow.service.server import ServerConfig, WinnowServer
from winnow.service.store import sqlite_url

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
def server(make_server) -> WinnowServer:
    return make_server()


@pytest.fixture
def client(server) -> Iterator[Client]:
    with Client(server.address, timeout=20, retries=2) as client:
        yield client
