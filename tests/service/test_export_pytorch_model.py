"""model.py of the ``pytorch`` export: winnow's network as torch-only source, checked in a
subprocess where ``import winnow`` fails (``pytorch_check``)."""

from __future__ import annotations

import ast
import copy
import itertools
import subprocess
import sys

import pytest
import torch
from torch import nn

from winnow.bench.export import QUANTIZATION  # every policy: off, per-channel/tensor, sym/affine
from winnow.search_space import norms
from winnow.search_space.builtin_spaces import BUILTIN_SPACES
from winnow.search_space.datasets import load_dataset
from winnow.search_space.norms import NORMS
from winnow.search_space.quantization import QuantPolicy
from winnow.search_space.spec import parse_space
from winnow.service.export import pytorch_model
from winnow.service.export.pytorch_check import candidate_recipe, check_model_sources
from winnow.service.export.pytorch_model import ExportError, model_source

MACRO = {
    "family": "macro",
    "base_channels": [8, 16],
    "strides": [1, 2],
    "stem_channels": 8,
    "head_channels": 16,
    "depth": [1, 2],
    "kernel_size": [3, 5, 7],
    "expand_ratio": [3, 4, 6],
    "width_mult": [0.75, 1.0],
    "resolution": [8, 12],
    "activation": ["relu", "gelu", "silu", "hardswish"],
}


def joint_space(family: str, norm: str):
    """The built-in joint spaces (and a macro one) with every quantization policy, narrowed
    to one norm and to networks small enough for a fast test."""
    if family == "macro":
        data = {"name": "macro-joint", "architecture": MACRO}
        data["optimizer"] = BUILTIN_SPACES["digits-joint"]["optimizer"]
    else:
        data = copy.deepcopy(
            BUILTIN_SPACES[{"mlp": "digits-joint", "nb201": "nb201-joint"}[family]]
        )
    if family == "nb201":
        data["architecture"] = {"family": "nb201", "channels": 4, "cells_per_stage": 2}
    if family == "mlp":
        data["architecture"] |= {"width": [16, 32], "dropout": [0.0, 0.2]}
    return parse_space(data | {"normalization": [norm], "quantization": QUANTIZATION})


DATASETS = {"mlp": "digits", "macro": "digits", "nb201": "synthetic:3x8x8"}


def sampled_recipes(per_pair: int = 2) -> list[dict]:
    recipes = []
    for seed, (family, norm) in enumerate(itertools.product(DATASETS, NORMS.names())):
        for candidate in joint_space(family, norm).sample(per_pair, seed=seed):
            recipes.append(candidate_recipe(candidate, DATASETS[family], seed=seed))
    return recipes


def test_every_family_norm_and_quantization_policy_exports_and_matches_exactly():
    recipes = sampled_recipes()
    policies = {
        (q["granularity"], q["symmetric"])
        for q in (r["candidate"]["quantization"] for r in recipes)
        if any(b != 32 for b in q["weight_bits"].values())
    }
    assert policies == set(itertools.product(["per_channel", "per_tensor"], [True, False]))
    assert any(r["candidate"]["quantization"]["activation_bits"] == 32 for r in recipes)
    assert {
        (r["candidate"]["architecture"]["family"], r["candidate"]["normalization"]) for r in recipes
    } == set(itertools.product(DATASETS, NORMS.names()))

    checks = check_model_sources(recipes)

    failed = [(r["candidate"], c) for r, c in zip(recipes, checks, strict=True) if not c.ok]
    assert not failed, f"{len(checks) - len(failed)}/{len(checks)} exported exactly: {failed[:3]}"
    assert all(c.max_abs_diff == 0.0 and c.init_equal and c.preprocess_diff == 0.0 for c in checks)


def test_a_wrong_export_is_caught_by_the_check(monkeypatch):
    """The check can fail: a BatchNorm exported with another eps computes other outputs."""
    candidate = joint_space("mlp", "batchnorm").sample(1, seed=0)[0]
    float_candidate = candidate.model_copy(update={"quantization": QuantPolicy()})
    recipe = candidate_recipe(float_candidate, "digits")
    assert check_model_sources([recipe])[0].ok
    real = pytorch_model._TORCH_ARGS[nn.BatchNorm1d]
    monkeypatch.setitem(pytorch_model._TORCH_ARGS, nn.BatchNorm1d, lambda m: real(m) | {"eps": 0.1})
    checks = check_model_sources([recipe])
    assert checks[0].max_abs_diff > 0 and not checks[0].ok


def imported_modules(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_model_py_imports_only_torch_and_is_deterministic():
    allowed = {"__future__", "math", "torch", "torch.nn", "torch.nn.functional", "torch.nn.utils"}
    for recipe in sampled_recipes(per_pair=1)[::3]:
        source = model_source(recipe)
        assert imported_modules(source) <= allowed
        assert model_source(copy.deepcopy(recipe)) == source


def test_repeated_cells_are_built_by_one_function_each():
    candidate = joint_space("nb201", "batchnorm").sample(1, seed=3)[0]
    arch = candidate.architecture | {
        "cells_per_stage": 5,
        "cell": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
        "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    }
    recipe = candidate_recipe(
        candidate.model_copy(update={"architecture": arch}), "synthetic:3x8x8"
    )
    source = model_source(recipe)
    body = source.split("def build_model")[1]
    assert body.count("make_cell_") == 15  # 5 cells x 3 stages, each stage's cells alike
    assert source.count("def make_cell_") == 3


def test_preprocess_takes_raw_digits_as_scikit_learn_gives_them(tmp_path):
    recipe = sampled_recipes(per_pair=1)[0]
    (tmp_path / "model.py").write_text(model_source(recipe))
    script = (
        "import sys\n"
        "sys.modules['winnow'] = None\n"
        "import torch\n"
        "from sklearn.datasets import load_digits\n"
        "from model import preprocess\n"
        "torch.save(preprocess(load_digits().images[:, None]), 'out.pt')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    from sklearn.datasets import load_digits

    raw = torch.as_tensor(load_digits().images[:, None])
    expected = load_dataset("digits").normalize(raw.float())
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


def test_code_that_reads_winnow_is_refused_naming_the_class():
    with pytest.raises(ExportError, match="make_norm reads 'NORMS'"):
        pytorch_model._Source().need(norms.make_norm, "make_norm")


class Unknown(nn.Module):
    def forward(self, x):
        return x


def test_a_module_model_py_cannot_rebuild_is_named():
    walker = pytorch_model._Walker(pytorch_model._Source())
    with pytest.raises(ExportError, match=r"1: model.py cannot rebuild Unknown"):
        walker.module(nn.Sequential(nn.ReLU(), Unknown()), "")
    named = nn.Sequential(nn.ReLU())
    named.add_module("extra", nn.ReLU())
    with pytest.raises(ExportError, match=r"a Sequential with named children \['0', 'extra'\]"):
        walker.module(named, "")


def test_constructor_arguments_that_do_not_rebuild_the_state_are_refused(monkeypatch):
    monkeypatch.setitem(
        pytorch_model._TORCH_ARGS, nn.Linear, lambda m: {"in_features": 3, "out_features": 2}
    )
    walker = pytorch_model._Walker(pytorch_model._Source())
    with pytest.raises(ExportError, match="does not rebuild"):
        walker.module(nn.Linear(3, 5), "head")
