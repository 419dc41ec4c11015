"""Issue 19's done-when: a search whose dataset, architecture and trainer all come from one
module the test writes runs through the gRPC server under ``--allow-module``; its front, its
export (the formats that take a user's network) and the dashboard work on it; without
``--allow-module`` the submit is PERMISSION_DENIED naming the module. The trainer resumes
promoted rungs from their checkpoints (its call log says from which epoch)."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid

import pytest

from winnow.service.client import Client, WinnowError
from winnow.service.engine import readout
from winnow.service.search_spec import SearchSpec
from winnow.service.store import Store

# Dataset, network and training loop of the user's own; every trainer call is logged beside
# the module (``epochs resumed_at``), and importing the module leaves a mark.
USER_CODE = """
import pathlib
import statistics

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from winnow.search_space.checkpoints import capture, restore
from winnow.search_space.trainer import Fitted

HERE = pathlib.Path(__file__)
HERE.with_suffix(".imported").touch()


def load():
    rng = np.random.default_rng(0)
    prototypes = rng.normal(size=(4, 12)).astype(np.float32)
    labels = rng.integers(0, 4, 480)
    x = prototypes[labels] + 0.6 * rng.normal(size=(480, 12)).astype(np.float32)
    return {"train_x": x[:360], "train_y": labels[:360], "test_x": x[360:], "test_y": labels[360:]}


class Net(nn.Module):
    def __init__(self, features, num_classes, norm_layer, act_layer, width):
        super().__init__()
        self.hidden = nn.Linear(features, width)
        self.norm = norm_layer(width, spatial=False)
        self.act = act_layer()
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.act(self.norm(self.hidden(x))))


def build(input_shape, num_classes, norm_layer, act_layer, width=16):
    return Net(input_shape[0], num_classes, norm_layer, act_layer, width)


def fit(model, optimizer, scheduler, data, epochs, on_epoch=None, checkpoint=None, max_steps=None):
    saved = checkpoint.load() if checkpoint is not None else None
    done, curve = (0, [])
    if saved is not None:
        done, curve = restore(saved, model, optimizer, scheduler, data.generator)
    with HERE.with_suffix(".calls").open("a") as log:
        log.write(f"{epochs} {done}\\n")
    for epoch in range(done, epochs):
        model.train()
        losses = []
        for x, y in data.batches():
            loss = F.cross_entropy(model(x), y, label_smoothing=0.05)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        curve.append(statistics.fmean(losses))
        if checkpoint is not None:
            checkpoint.save(capture(model, optimizer, scheduler, data.generator, epoch + 1, curve))
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs, curve[-1], 0.0)
    return Fitted(curve, epochs - done)
"""


@pytest.fixture
def user_package(tmp_path, monkeypatch) -> str:
    """A package ``<name>`` with module ``<name>.code`` on sys.path (and so on the local
    pool's workers' path); a unique name, as modules and datasets are cached per process."""
    name = f"winnow_user_{uuid.uuid4().hex[:8]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "code.py").write_text(textwrap.dedent(USER_CODE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def user_spec(tiny_spec, package: str) -> dict:
    module = f"{package}.code"
    space = {
        "architecture": {
            "family": "custom",
            "builder": f"{module}:build",
            "params": {"width": [8, 16, 32]},
        },
        "normalization": ["batchnorm", "layernorm"],
        "optimizer": {"name": "adamw", "lr": 0.01},
    }
    strategy = {
        "name": "cascade",
        "sampler": "random",
        "rungs": [1, 2],
        "reduction_factor": 2,
        "screen": {"proxies": ["params"], "min_population": 50},
    }
    task = {"dataset": f"python:{module}:load", "trainer": f"{module}:fit"}
    return tiny_spec(space=space, task=task, strategy=strategy, budget={"max_trials": 4})


def test_a_search_of_user_code_is_refused_without_allow_module(
    make_server, tmp_path, tiny_spec, user_package
):
    server = make_server(allowed_modules=("other_pkg",))
    with Client(server.address, retries=0) as client:
        with pytest.raises(WinnowError) as raised:
            client.submit(user_spec(tiny_spec, user_package))
        assert client.searches() == []
    assert raised.value.code == "PERMISSION_DENIED"
    assert f"module '{user_package}.code' is not allowed" in raised.value.message
    assert not (tmp_path / user_package / "code.imported").exists()
    assert f"{user_package}.code" not in sys.modules


def test_a_search_of_user_code_runs_exports_and_shows_on_the_dashboard(
    make_server, tmp_path, tiny_spec, user_package, app
):
    server = make_server(allowed_modules=(user_package,))
    with Client(server.address, retries=0) as client:
        search = client.submit(user_spec(tiny_spec, user_package))
        info = search.wait(timeout=120)
        assert info["status"] == "finished", info.get("error")
        front = search.front()
        recipe = search.export(path=tmp_path / "recipe.json")
        search.export(path=tmp_path / "weights", format="weights")
        with pytest.raises(WinnowError) as refused:  # model.py cannot rebuild the user's class
            search.export(format="pytorch")
    assert refused.value.code == "FAILED_PRECONDITION" and "weights" in refused.value.message
    store = Store(server.config.db_url)
    spec = SearchSpec.model_validate_json(store.search(search.id).spec_json)
    rows = store.trials(search.id)
    trained = [r for r in rows if r.stage == "train"]
    assert trained and all(r.status == "ok" for r in trained), [r.error for r in trained]
    # the user's trainer trained every run, and the promotion resumed from its rung's epoch 1
    calls = (tmp_path / user_package / "code.calls").read_text().split("\n")[:-1]
    assert len(calls) == len(trained) and "2 1" in calls
    promoted = [r for r in trained if r.epochs == 2]
    assert promoted and all(r.metrics["epochs_run"] == 1 for r in promoted)
    # the front is the readout's over the stored rows, at the top rung, evaluated by winnow
    expected = readout.pareto(spec, rows)["points"]
    assert {p["trial_id"] for p in front["points"]} == {p["trial_id"] for p in expected}
    assert front["epochs"] == front["top_epochs"] == 2
    assert max(p["accuracy"] for p in front["points"]) > 0.5  # four classes: chance 0.25
    # export: the recipe carries the task's trainer; the weights the trained state
    assert recipe["training"]["task"]["trainer"] == f"{user_package}.code:fit"
    assert json.loads((tmp_path / "recipe.json").read_text())["candidate"] == recipe["candidate"]
    assert (tmp_path / "weights" / "weights.pt").stat().st_size > 0
    # the dashboard: the search page's counters and front are the store's
    at = app(server.config.db_url, search=search.id)
    shown = {m.label: m.value for m in at.metric}
    assert float(shown["training runs"]) == readout.progress(spec, rows)["trained"]
    from winnow.ui import source

    drawn = source.search_data(server.config.db_url, search.id, ("test",))["trained"]
    assert set(drawn.loc[drawn["on_front"], "number"]) == {p["trial_id"] for p in expected}
    at = app(server.config.db_url, search=search.id, trial=promoted[0].number)
    assert at.title[0].value == f"Trial {promoted[0].number}"


@pytest.mark.slow  # a second search, and the ONNX exporter's import (seconds on its own)
def test_a_search_of_user_code_exports_to_onnx(make_server, tmp_path, tiny_spec, user_package):
    pytest.importorskip("onnx", reason="the export extra: pip install 'winnow[export]'")
    server = make_server(allowed_modules=(user_package,))
    with Client(server.address, retries=0) as client:
        search = client.submit(user_spec(tiny_spec, user_package))
        assert search.wait(timeout=120)["status"] == "finished"
        search.export(path=tmp_path / "onnx", format="onnx")
    exported = list((tmp_path / "onnx").rglob("*.onnx"))
    assert exported and exported[0].stat().st_size > 0
