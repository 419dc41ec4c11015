"""A ``custom`` architecture searched end to end: locally through the engine's cascade (hash,
proxies, costs, training), and on a server, which imports the builder only from a module
``--allow-module`` admits (PERMISSION_DENIED naming it otherwise) and refuses a broken builder
at submit; the export formats carry the user's network or refuse it clearly."""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest

from winnow.service.client import Client, WinnowError
from winnow.service.engine.engine import Engine
from winnow.service.search_spec import parse_search_spec
from winnow.service.store import Store, sqlite_url
from winnow.workers.executor import InProcessExecutor

# An MLP of the user's own class (digits: 64 features after flattening); importing the module
# leaves a mark, so a test can tell that a refused module was never imported.
MODELS = """
import pathlib

from torch import nn

pathlib.Path(__file__).with_suffix(".imported").touch()


class Tabular(nn.Module):
    def __init__(self, features, num_classes, norm_layer, act_layer, depth, width):
        super().__init__()
        layers = [nn.Flatten()]
        for _ in range(depth):
            layers += [nn.Linear(features, width), norm_layer(width, spatial=False), act_layer()]
            features = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(features, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


def build(input_shape, num_classes, norm_layer, act_layer, depth=1, width=16):
    features = 1
    for size in input_shape:
        features *= size
    return Tabular(features, num_classes, norm_layer, act_layer, depth, width)


def sequential(input_shape, num_classes, norm_layer, act_layer, depth=1, width=8):
    layers, channels = [], input_shape[0]
    for _ in range(depth):
        layers += [nn.Conv2d(channels, width, 3, padding=1), norm_layer(width), act_layer()]
        channels = width
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers, *head)


def broken(input_shape, num_classes, norm_layer, act_layer, **params):
    raise RuntimeError("this builder is broken")
"""


@pytest.fixture
def models(tmp_path, monkeypatch) -> str:
    """A package ``<name>`` with module ``<name>.models`` on sys.path (unique per test)."""
    name = f"winnow_user_{uuid.uuid4().hex[:8]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "models.py").write_text(textwrap.dedent(MODELS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def imported(tmp_path, package: str) -> bool:
    return (tmp_path / package / "models.imported").exists() or f"{package}.models" in sys.modules


def custom_spec(tiny_spec, package: str, builder: str = "build", **changes) -> dict:
    arch = {
        "family": "custom",
        "builder": f"{package}.models:{builder}",
        "params": {"depth": [1, 2], "width": {"low": 16, "high": 64, "log": True}},
    }
    space = {
        "architecture": arch,
        "normalization": ["batchnorm", "layernorm"],
        "optimizer": {"name": "adamw", "lr": 0.01},
    }
    return tiny_spec(space=space, budget={"max_trials": 2}, **changes)


def test_a_custom_family_searched_locally_through_the_cascade(tmp_path, tiny_spec, models):
    strategy = {
        "name": "cascade",
        "sampler": "random",
        "rungs": [1],
        "screen": {"proxies": ["synflow", "params"], "min_population": 10},
    }
    spec = parse_search_spec(custom_spec(tiny_spec, models, strategy=strategy))
    store = Store(sqlite_url(tmp_path / "custom.db"))
    report = Engine.create(spec, store, InProcessExecutor()).run()
    assert report.status == "finished" and report.trained == 2
    rows = store.trials(report.search_id)
    trained = [r for r in rows if r.stage == "train"]
    assert all(r.status == "ok" for r in trained), [r.error for r in trained]
    assert max(r.metrics["accuracy"] for r in trained) > 0.3  # ten classes: chance is 0.1
    assert all(r.metrics["params"] > 0 and r.metrics["flops"] > 0 for r in trained)
    proxied = [r for r in rows if r.stage == "proxy"]
    assert proxied and all("proxy.synflow" in r.metrics for r in proxied)
    # the functional hash was computed (not the structural fallback, marked "s")
    assert all(r.functional_hash and not r.functional_hash.startswith("s") for r in trained)


def test_a_builder_module_the_server_does_not_allow_is_permission_denied(
    make_server, tmp_path, tiny_spec, models
):
    server = make_server(allowed_modules=("other_pkg",))
    with Client(server.address, retries=0) as client:
        with pytest.raises(WinnowError) as raised:
            client.submit(custom_spec(tiny_spec, models))
        assert client.searches() == []
    assert raised.value.code == "PERMISSION_DENIED"
    assert f"module '{models}.models' is not allowed" in raised.value.message
    assert "field 'space.architecture.builder'" in raised.value.message
    assert not imported(tmp_path, models)


def test_an_allowed_builder_runs_on_the_server_and_a_broken_one_is_refused_at_submit(
    make_server, tmp_path, tiny_spec, models
):
    server = make_server(allowed_modules=(models,))
    with Client(server.address, retries=0) as client:
        # the task's shape stated: the builder is built at submit (on the meta device)
        stated = {"dataset": "digits", "input_shape": [1, 8, 8], "num_classes": 10}
        with pytest.raises(WinnowError) as raised:
            client.submit(custom_spec(tiny_spec, models, builder="broken", task=stated))
        assert raised.value.code == "INVALID_ARGUMENT"
        assert "space.architecture.builder" in raised.value.message
        assert "this builder is broken" in raised.value.message
        # not stated: imported at submit, built when the search starts, which fails saying why
        unbuilt = client.submit(custom_spec(tiny_spec, models, builder="broken")).wait(timeout=60)
        assert unbuilt["status"] == "failed" and "this builder is broken" in unbuilt["error"]
        search = client.submit(custom_spec(tiny_spec, models, keep_weights=1))
        info = search.wait(timeout=120)
        assert info["status"] == "finished", info.get("error")
        assert info["progress"]["trained"] == 2
        candidate = search.export()["candidate"]
        assert candidate["architecture"]["builder"] == f"{models}.models:build"
        search.export(path=tmp_path / "weights", format="weights")
        assert (tmp_path / "weights" / "weights.pt").stat().st_size > 0
        with pytest.raises(WinnowError) as refused:
            search.export(format="pytorch")
    assert refused.value.code == "FAILED_PRECONDITION"
    assert "custom" in refused.value.message and "weights" in refused.value.message


@pytest.mark.slow  # importing the ONNX exporter takes most of its 8 s
def test_a_custom_network_exports_to_onnx_and_agrees_with_torch(models):
    pytest.importorskip("onnx", reason="the export extra: pip install 'winnow[export]'")
    from winnow.search_space.candidate import Candidate
    from winnow.service.export.onnx_export import onnx_max_abs_diff
    from winnow.service.search_spec import Task

    arch = {"family": "custom", "builder": f"{models}.models:build", "params": {"depth": 2}}
    for policy in ({}, {"weight_bits": {"*": 8}, "activation_bits": 8}):
        candidate = Candidate(architecture=arch, normalization="layernorm", quantization=policy)
        diff, step = onnx_max_abs_diff(candidate, Task(dataset="digits"))
        assert diff <= max(1e-5, 2 * step), (policy, diff, step)


def test_a_network_of_torch_modules_exports_a_model_py_equal_to_winnows(models):
    from winnow.search_space.candidate import Candidate
    from winnow.service.export.pytorch_check import candidate_recipe, check_model_sources

    arch = {"family": "custom", "builder": f"{models}.models:sequential", "params": {"depth": 2}}
    policy = {"weight_bits": {"*": 4}, "activation_bits": 8}
    recipes = [
        candidate_recipe(
            Candidate(architecture=arch, normalization=n, quantization=policy), "digits"
        )
        for n in ("bcn_ws", "none")  # weight standardization, Kaiming init: re-applied in model.py
    ]
    standardized, kaiming = check_model_sources(recipes)
    assert standardized.ok, standardized
    # the trained state loads and computes the same; a fresh build_model() draws ``none``'s
    # Kaiming init in another order than winnow (which inits after the builder returned)
    assert kaiming.error is None and kaiming.max_abs_diff == 0.0, kaiming
