"""The spec language: valid specs load from YAML/JSON; invalid ones name the field and the
allowed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from winnow.search_space import SpecError, load_space, parse_space
from winnow.search_space.params import FloatRange

BASE = {"architecture": {"family": "mlp"}}


def spec_error(data: dict) -> str:
    with pytest.raises(SpecError) as info:
        parse_space(data)
    return str(info.value)


def test_unknown_normalization_names_field_and_allowed_values():
    message = spec_error(BASE | {"normalization": ["batchnorm", "weirdnorm"]})
    assert "normalization" in message and "'weirdnorm'" in message
    for allowed in (
        "batchnorm",
        "layernorm",
        "groupnorm",
        "rmsnorm",
        "bcn_ws",
        "evonorm_b0",
        "evonorm_s0",
        "none",
    ):
        assert allowed in message


def test_weight_bits_outside_the_allowed_set():
    message = spec_error(BASE | {"quantization": {"weight_bits": [4, 5]}})
    assert "quantization.weight_bits" in message and "5" in message
    assert "2, 3, 4, 6, 8, 32" in message


def test_activation_bits_must_be_a_choice_not_a_range():
    message = spec_error(BASE | {"quantization": {"activation_bits": {"low": 4, "high": 8}}})
    assert "quantization.activation_bits" in message and "4, 8, 32" in message


def test_unknown_family_lists_families():
    message = spec_error({"architecture": {"family": "transformer9000"}})
    assert "architecture" in message
    assert all(name in message for name in ("nb201", "macro", "mlp"))


def test_missing_architecture():
    assert "architecture" in spec_error({"normalization": "batchnorm"})


def test_unknown_top_level_field():
    assert "field 'colour'" in spec_error(BASE | {"colour": "blue"})


def test_bad_range_names_the_hyperparameter():
    message = spec_error(BASE | {"optimizer": {"name": "sgd", "lr": {"low": 1.0, "high": 0.1}}})
    assert "optimizer.lr" in message and "below" in message


def test_hyperparameter_that_no_chosen_optimizer_takes():
    message = spec_error(BASE | {"optimizer": {"name": "adamw", "momentum": 0.9}})
    assert "momentum" in message and "adamw" in message


def test_unknown_optimizer_lists_all_optimizers():
    message = spec_error(BASE | {"optimizer": {"name": "adagrad"}})
    for name in ("sgd", "adamw", "lion", "adabelief", "adamp", "lamb", "sophia", "diffgrad"):
        assert name in message


def test_per_optimizer_override_for_an_optimizer_not_chosen():
    message = spec_error(BASE | {"optimizer": {"name": "sgd", "per_optimizer": {"lion": {}}}})
    assert "per_optimizer.lion" in message


def test_bad_nb201_cell_lists_ops():
    message = spec_error({"architecture": {"family": "nb201", "cell": "|conv_5x5~0|+|x|"}})
    assert "architecture" in message


def test_macro_kernel_sizes_are_checked():
    message = spec_error({"architecture": {"family": "macro", "kernel_size": [3, 4]}})
    assert "field 'architecture.kernel_size': 4 not allowed; allowed: 3, 5, 7" in message


def test_yaml_and_json_files_load_the_same_space(tmp_path):
    data = {
        "name": "t",
        "architecture": {"family": "mlp", "depth": [1, 2]},
        "optimizer": {"name": ["sgd", "adamw"], "lr": {"low": 1e-3, "high": 0.1, "log": True}},
        "quantization": {"weight_bits": [4, 8], "scope": "group"},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "s.json").write_text(json.dumps(data))
    from_yaml, from_json = load_space(tmp_path / "s.yaml"), load_space(tmp_path / "s.json")
    assert from_yaml == from_json
    assert from_yaml.optimizer.hyperparameter("sgd", "lr") == FloatRange(
        low=1e-3, high=0.1, log=True
    )


def test_malformed_file_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("architecture: [unclosed")
    with pytest.raises(SpecError, match="not valid"):
        load_space(bad)
    with pytest.raises(SpecError, match="no search-space file"):
        load_space(tmp_path / "missing.yaml")


def test_fixed_axes_give_one_candidate_and_no_decisions():
    space = parse_space(
        {
            "architecture": {"family": "mlp", "depth": 2, "width": 32},
            "normalization": "layernorm",
            "optimizer": {"name": "adamw", "lr": 0.01},
            "quantization": {"weight_bits": 8, "activation_bits": 8},
        }
    )
    candidates = space.sample(5, seed=3)
    assert len({c.key for c in candidates}) == 1
    params, distributions = space.to_optuna(candidates[0])
    assert params == {} and distributions == {}
    assert candidates[0].optimizer["lr"] == 0.01
    assert candidates[0].quantization.weight_bits == {"*": 8}


def test_builtin_nb201_space_uses_the_benchmark_recipe():
    space = load_space("nb201")
    candidate = space.sample(1, seed=0)[0]
    assert candidate.optimizer == {
        "name": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "warmup_epochs": 0,
        "batch_size": 256,
    }
    assert candidate.normalization == "batchnorm"


def test_example_specs_are_valid():
    examples = Path(__file__).resolve().parents[2] / "examples"
    spaces = [p for p in sorted(examples.glob("*.yaml")) if not p.stem.endswith("-search")]
    assert spaces
    for path in spaces:  # *-search.yaml are search specs (tests/service/test_cli_search.py)
        assert load_space(path).sample(2, seed=0)


def test_the_least_candidate_takes_every_numeric_choice_at_its_least():
    space = parse_space(
        {
            "architecture": {"family": "mlp", "depth": [3, 1, 2], "width": {"low": 8, "high": 64}},
            "normalization": ["layernorm", "batchnorm"],
            "optimizer": {"name": "adamw", "lr": {"low": 1e-4, "high": 1e-1, "log": True}},
        }
    )
    least = space.least()
    assert least.architecture["depth"] == 1 and least.architecture["width"] == 8
    assert least.normalization == "layernorm"  # not a number: the first choice
    assert least.optimizer["lr"] == 1e-4
    assert space.validate_candidate(least) == least  # a candidate of the space
