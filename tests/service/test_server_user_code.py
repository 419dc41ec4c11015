"""User data on a server: a ``python:`` dataset runs only from a module the operator allows
(``winnow serve --allow-module``); any other is refused PERMISSION_DENIED at submission,
before it is imported, and a stored search naming one ends FAILED when it starts; an
``imagefolder:`` folder lies under the data roots like an ``npz:`` file."""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest

from winnow.service.api.server import ServerConfig
from winnow.service.client import Client, WinnowError
from winnow.service.store import Store, sqlite_url

# Digits-sized arrays (64 features, 10 classes) that an MLP learns in one epoch; importing the
# module leaves a mark, so a test can tell that a refused module was never imported.
USER_MODULE = """
import pathlib

import numpy as np

pathlib.Path(__file__).with_suffix(".imported").touch()


def load():
    rng = np.random.default_rng(0)
    prototypes = rng.normal(size=(10, 64)).astype(np.float32)
    labels = rng.integers(0, 10, 400)
    x = prototypes[labels] + 0.5 * rng.normal(size=(400, 64)).astype(np.float32)
    return {"train_x": x[:300], "train_y": labels[:300], "test_x": x[300:], "test_y": labels[300:]}
"""


@pytest.fixture
def user_package(tmp_path, monkeypatch) -> str:
    """A package ``<name>`` with module ``<name>.data`` on sys.path (a unique name: modules
    and loaded datasets are cached per process)."""
    name = f"winnow_user_{uuid.uuid4().hex[:8]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "data.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def imported(tmp_path, package: str) -> bool:
    return (tmp_path / package / "data.imported").exists() or f"{package}.data" in sys.modules


def python_spec(tiny_spec, package: str) -> dict:
    return tiny_spec(task={"dataset": f"python:{package}.data:load"}, budget={"max_trials": 2})


def test_a_module_the_server_does_not_allow_is_permission_denied(
    make_server, tmp_path, tiny_spec, user_package
):
    for allowed in ((), ("other_pkg", f"{user_package}x")):
        server = make_server(allowed_modules=allowed, db_url=sqlite_url(tmp_path / f"{allowed}.db"))
        with Client(server.address, retries=0) as client:
            with pytest.raises(WinnowError) as raised:
                client.submit(python_spec(tiny_spec, user_package))
            assert raised.value.code == "PERMISSION_DENIED"
            assert f"module '{user_package}.data' is not allowed" in raised.value.message
            assert "field 'task.dataset'" in raised.value.message
            assert f"--allow-module {user_package}" in raised.value.message
            assert client.searches() == []
    assert not imported(tmp_path, user_package)


def test_an_allowed_module_runs_its_search(make_server, tmp_path, tiny_spec, user_package):
    server = make_server(allowed_modules=(user_package,))
    with Client(server.address, retries=0) as client:
        info = client.submit(python_spec(tiny_spec, user_package)).wait(timeout=120)
    assert info["status"] == "finished", info.get("error")
    assert info["progress"]["trained"] == 2
    assert imported(tmp_path, user_package)
    trials = Store(server.config.db_url).trials(info["id"])
    assert max(t.metrics.get("accuracy", 0) for t in trials) > 0.3  # ten classes: chance 0.1


def test_a_stored_search_of_a_module_this_server_does_not_allow_fails_unrun(
    make_server, tmp_path, tiny_spec, user_package
):
    # One slot, taken by a long search: the python: search is accepted and waits in the queue.
    first = make_server(allowed_modules=(user_package,), max_concurrent_searches=1)
    with Client(first.address, retries=0) as client:
        blocker = client.submit(tiny_spec(budget={"max_trials": 10_000}))
        queued = client.submit(python_spec(tiny_spec, user_package))
    first.stop(grace=0.5)
    second = make_server(max_concurrent_searches=2)
    with Client(second.address, retries=0) as client:
        info = client.search(queued.id).wait(timeout=60)
        client.search(blocker.id).cancel()
    assert info["status"] == "failed"
    assert f"module '{user_package}.data' is not allowed on this server" in info["error"]
    assert Store(second.config.db_url).trials(queued.id) == []
    assert not imported(tmp_path, user_package)


def test_allowed_modules_must_be_module_names():
    with pytest.raises(ValueError, match="not a module name"):
        ServerConfig(db_url="sqlite://", allowed_modules=("my-pkg",))


def test_an_imagefolder_outside_the_data_roots_is_refused(make_server, tmp_path, tiny_spec):
    (tmp_path / "inside").mkdir()
    server = make_server(data_roots=(tmp_path / "inside",))
    with Client(server.address, retries=0) as client, pytest.raises(WinnowError) as raised:
        client.submit(tiny_spec(task={"dataset": f"imagefolder:{tmp_path / 'outside'}"}))
    assert raised.value.code == "INVALID_ARGUMENT" and "--data-root" in raised.value.message


def test_serve_takes_allow_module_repeated(monkeypatch):
    from winnow.service.cli import service
    from winnow.service.cli.main import build_parser

    configs = []

    class Stop(Exception):
        pass

    def capture(config):
        configs.append(config)
        raise Stop

    monkeypatch.setattr("winnow.service.api.server.WinnowServer", capture)
    monkeypatch.setattr(service, "_configure_logging", lambda fmt: None)
    argv = ["serve", "--db", "sqlite://", "--allow-module", "my_pkg", "--allow-module", "b.c"]
    with pytest.raises(Stop):
        service.cmd_serve(build_parser().parse_args(argv))
    assert configs[0].allowed_modules == ("my_pkg", "b.c")


def test_a_trainer_module_the_server_does_not_allow_is_permission_denied(
    make_server, tiny_spec, user_package
):
    server = make_server(allowed_modules=("other_pkg",))
    task = {"dataset": "digits", "trainer": f"{user_package}.train:fit"}
    with Client(server.address, retries=0) as client:
        with pytest.raises(WinnowError) as raised:
            client.submit(tiny_spec(task=task))
        assert client.searches() == []
    assert raised.value.code == "PERMISSION_DENIED"
    assert f"module '{user_package}.train' is not allowed" in raised.value.message
    assert "field 'task.trainer'" in raised.value.message


def test_an_allowed_trainer_that_is_missing_is_refused_at_submit(
    make_server, tiny_spec, user_package
):
    server = make_server(allowed_modules=(user_package,))
    task = {"dataset": "digits", "trainer": f"{user_package}.data:fit"}
    with Client(server.address, retries=0) as client, pytest.raises(WinnowError) as raised:
        client.submit(tiny_spec(task=task))
    assert raised.value.code == "INVALID_ARGUMENT"
    assert "task.trainer" in raised.value.message
    assert "has no attribute 'fit'" in raised.value.message


def test_export_of_a_module_this_server_does_not_allow_is_permission_denied(
    make_server, tmp_path, tiny_spec, user_package
):
    # Trained by a server that allowed the module; exported by one that does not: a format
    # that rebuilds the network or reads the dataset would import it, recipe and weights not.
    first = make_server(allowed_modules=(user_package,))
    with Client(first.address, retries=0) as client:
        info = client.submit(python_spec(tiny_spec, user_package)).wait(timeout=120)
    assert info["status"] == "finished", info.get("error")
    first.stop(grace=0.5)
    second = make_server()
    with Client(second.address, retries=0) as client:
        search = client.search(info["id"])
        for format in ("pytorch", "onnx", "lightning"):
            with pytest.raises(WinnowError) as raised:
                search.export(format=format)
            assert raised.value.code == "PERMISSION_DENIED", format
            assert f"module '{user_package}.data' is not allowed" in raised.value.message
        assert search.export(format="recipe")["search_id"] == info["id"]
