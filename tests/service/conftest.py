"""The default server of the service tests (``make_server`` and ``tiny_spec`` live in the
root conftest: the dashboard's tests use them too)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from winnow.service.api.server import WinnowServer
from winnow.service.client import Client


@pytest.fixture
def server(make_server) -> WinnowServer:
    return make_server()


@pytest.fixture
def client(server) -> Iterator[Client]:
    with Client(server.address, timeout=20, retries=2) as client:
        yield client
