"""The ``custom`` family: the user's builder, written by the test into a module on sys.path,
gets winnow's norm and activation factories, its layers are quantized, both hashes work on
it, and its errors are clear (at the check before a search, and as a failed trial)."""

from __future__ import annotations

import textwrap
import uuid

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from winnow.search_space import parse_space
from winnow.search_space.archs.custom import BuilderError, feeding_layers
from winnow.search_space.candidate import Candidate
from winnow.search_space.canonical import structural_hash
from winnow.search_space.functional_hash import Probe, functional_hash
from winnow.search_space.norms import BatchChannelNorm, LayerNorm2d, WeightStandardization
from winnow.search_space.quantization import ActivationFakeQuant, WeightFakeQuant
from winnow.search_space.specfile import SpecError
from winnow.search_space.training import evaluate
from winnow.search_space.trial import Status, TrialSpec
from winnow.service.search_spec import parse_search_spec

# A small ConvNet for the digits (1 x 8 x 8), a flat head with a norm (spatial=False), and
# builders that go wrong in each way a builder can.
MODELS = """
from torch import nn


class Net(nn.Module):
    def __init__(self, input_shape, num_classes, norm_layer, act_layer, depth, width):
        super().__init__()
        layers, channels = [], input_shape[0]
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), norm_layer(width)]
            layers.append(act_layer())
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.hidden = nn.Linear(channels, width)
        self.hidden_norm = norm_layer(width, spatial=False)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.pool(self.features(x)).flatten(1)
        return self.head(self.hidden_norm(self.hidden(x)))


def build(input_shape, num_classes, norm_layer, act_layer, depth=1, width=8):
    return Net(input_shape, num_classes, norm_layer, act_layer, depth, width)


def not_a_module(input_shape, num_classes, norm_layer, act_layer, **params):
    return "a string"


def raises(input_shape, num_classes, norm_layer, act_layer, width=8, depth=1):
    raise ValueError(f"width {width} must be even")
"""
DIGITS = ((1, 8, 8), 10)


@pytest.fixture
def models(tmp_path, monkeypatch) -> str:
    """The module's name (unique: modules are cached per process)."""
    name = f"winnow_models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODELS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def custom_space(models: str, builder: str = "build", **changes) -> dict:
    params = {"depth": [1, 2], "width": {"low": 4, "high": 16, "log": True}}
    arch = {"family": "custom", "builder": f"{models}:{builder}", "params": params}
    return {"architecture": arch, **changes}


def candidate(models: str, **axes) -> Candidate:
    arch = {"family": "custom", "builder": f"{models}:build", "activation": "relu"}
    arch["params"] = axes.pop("params", {"depth": 2, "width": 8})
    return Candidate(architecture=arch, **axes)


def test_samplers_decide_the_builders_params(models):
    space = parse_space(custom_space(models, normalization=["batchnorm", "layernorm"]))
    candidates = space.sample(12, seed=0)
    assert {c.architecture["params"]["depth"] for c in candidates} == {1, 2}
    assert all(4 <= c.architecture["params"]["width"] <= 16 for c in candidates)
    params, distributions = space.to_optuna(candidates[0])
    assert set(params) == {
        "architecture.params.depth",
        "architecture.params.width",
        "normalization",
    }
    assert distributions["architecture.params.width"].log
    assert space.from_optuna(params) == candidates[0]


def test_the_norm_and_activation_axes_reach_the_users_model(models):
    model = candidate(models, normalization="layernorm").build_model(10, DIGITS[0])
    assert isinstance(model.features[1], LayerNorm2d)  # spatial: channels at each pixel
    assert type(model.hidden_norm) is nn.LayerNorm  # spatial=False: (batch, features)
    arch = candidate(models).architecture | {"activation": "gelu"}
    gelu = Candidate(architecture=arch).build_model(10, DIGITS[0])
    assert isinstance(gelu.features[2], nn.GELU) and isinstance(model.features[2], nn.ReLU)
    assert model(torch.zeros(2, *DIGITS[0])).shape == (2, 10)


def test_layers_feeding_a_weight_standardized_norm_are_standardized(models):
    model = candidate(models, normalization="bcn_ws").build_model(10, DIGITS[0])
    assert isinstance(model.features[1], BatchChannelNorm)
    standardized = [
        name
        for name, m in model.named_modules()
        if parametrize.is_parametrized(m, "weight")
        and any(isinstance(p, WeightStandardization) for p in m.parametrizations.weight)
    ]
    # the convs and the hidden linear feed a norm; the head feeds none
    assert standardized == ["features.0", "features.3", "hidden"]


def test_feeding_layers_follow_the_call_order(models):
    norms = []

    def norm_layer(c, spatial=True):
        norms.append(nn.BatchNorm2d(c) if spatial else nn.BatchNorm1d(c))
        return norms[-1]

    import importlib

    module = importlib.import_module(models)
    model = module.build((1, 8, 8), 10, norm_layer, nn.ReLU, depth=2, width=4)
    found = feeding_layers(model, norms, (1, 8, 8))
    assert found == [model.features[0], model.features[3], model.hidden]
    assert all(m.training for m in model.modules())  # the trace leaves the modes as they were


def test_quantization_wraps_the_users_conv_and_linear_layers(models):
    policy = {"weight_bits": {"*": 4}, "activation_bits": 8}
    model = candidate(models, quantization=policy).build_model(10, DIGITS[0])
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(layers) == 4
    for layer in layers:
        assert any(
            isinstance(p, WeightFakeQuant) and p.bits == 4 for p in layer.parametrizations.weight
        )
        assert isinstance(layer.input_quantizer, ActivationFakeQuant)


def test_equal_params_hash_equal_and_other_params_differ(models):
    probe = Probe.for_task(candidate(models), "digits")
    assert probe.task_shape == DIGITS[0] and probe.num_classes == DIGITS[1]
    a, b = candidate(models), candidate(models)
    wider = candidate(models, params={"depth": 2, "width": 12})
    assert structural_hash(a) == structural_hash(b) != structural_hash(wider)
    assert functional_hash(a, probe=probe) == functional_hash(b, probe=probe)
    assert functional_hash(a, probe=probe) != functional_hash(wider, probe=probe)
    # what structure cannot see, the probe does: AdamW without decay computes Adam's steps
    adam = candidate(models, optimizer={"name": "adam", "lr": 0.01})
    adamw = candidate(models, optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.0})
    assert structural_hash(adam) != structural_hash(adamw)
    assert functional_hash(adam, probe=probe) == functional_hash(adamw, probe=probe)
    with pytest.raises(ValueError, match="task's shape"):
        functional_hash(a)  # the default probe has no task shape to give a user's network


def test_builder_errors_are_spec_errors_at_the_check(models):
    for builder, message in [
        ("not_a_module", "returned str, not a torch.nn.Module"),
        ("raises", "raised ValueError: width"),
        ("missing", f"module '{models}' has no attribute 'missing'"),
    ]:
        space = parse_space(custom_space(models, builder))
        with pytest.raises(SpecError, match=message) as raised:
            space.check_user_code(DIGITS)
        assert raised.value.problems[0][0] == "architecture.builder"
    with pytest.raises(SpecError, match="no module named 'winnow_absent_"):
        parse_space(custom_space("winnow_absent_pkg")).check_user_code(None)


def test_a_builder_that_raises_fails_its_trial_with_the_builders_message(models):
    arch = {"family": "custom", "builder": f"{models}:raises", "params": {"width": 3}}
    result = evaluate(TrialSpec(Candidate(architecture=arch), "digits", epochs=1))
    assert result.status == Status.FAILED
    assert "BuilderError" in result.error and "width 3 must be even" in result.error
    with pytest.raises(BuilderError):
        Candidate(architecture=arch).build_model(10, DIGITS[0])


def test_the_spec_refuses_what_a_custom_family_cannot_do(models):
    with pytest.raises(SpecError, match="quantization.scope.*scope: global"):
        parse_space(custom_space(models, quantization={"weight_bits": [4, 8], "scope": "group"}))
    for params, message in [({"num_classes": 3}, "not a keyword argument"), ({"a-b": 1}, "a-b")]:
        with pytest.raises(SpecError, match=message):
            parse_space(
                custom_space(models)
                | {"architecture": {**custom_space(models)["architecture"], "params": params}}
            )
    with pytest.raises(SpecError, match="not an import path"):
        parse_space({"architecture": {"family": "custom", "builder": "no_colon"}})
    spec = {
        "space": custom_space(models),
        "task": {"dataset": "digits"},
        "strategy": {"name": "cascade", "supernet": {}},
    }
    with pytest.raises(SpecError, match="family 'custom' has no supernet"):
        parse_search_spec(spec)


def test_the_spec_lists_the_builder_among_its_imports(models):
    spec = parse_search_spec(
        {"space": custom_space(models), "task": {"dataset": f"python:{models}:load"}}
    )
    assert spec.imports() == {
        "space.architecture.builder": f"{models}:build",
        "task.dataset": f"{models}:load",
    }


def test_winnows_own_families_import_and_read_nothing_at_the_user_code_check(tmp_path):
    missing = tmp_path / "absent.npz"
    spec = {"space": {"architecture": {"family": "mlp"}}, "task": {"dataset": f"npz:{missing}"}}
    parse_search_spec(spec).check_user_code()  # reading the absent file would raise
