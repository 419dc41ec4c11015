"""The built-in search spaces by name (``space: nb201`` in a spec), and reading a space file:
data only, so that the client SDK can tell a built-in name from a file and send a file's
content without loading the spec language (torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from winnow.search_space.specfile import load_yaml_or_json


def read_space_file(path: str | Path) -> dict[str, Any]:
    """The mapping a space file holds, unvalidated (``SpecFileError`` when the file is missing,
    not YAML/JSON or not a mapping; a missing one's error lists the built-in names)."""
    return load_yaml_or_json(
        path,
        "search space",
        expect="a mapping with an 'architecture' field",
        hint=f" (built-in spaces: {', '.join(BUILTIN_SPACES)})",
    )


# The NAS-Bench-201 training recipe (Dong & Yang 2020): SGD, lr 0.1, Nesterov momentum 0.9,
# weight decay 5e-4, cosine schedule, batch 256.
BUILTIN_SPACES: dict[str, dict[str, Any]] = {
    # A joint space with deliberately coarse choices, where equivalent recipes recur (zero decay
    # makes AdamW Adam, zero momentum makes Nesterov moot, 32-bit weights, dead layers' bits);
    # `winnow bench hashing --space nb201-joint --sample N` measures the duplicates.
    "nb201-joint": {
        "name": "nb201-joint",
        "architecture": {"family": "nb201"},
        "normalization": ["batchnorm", "layernorm", "none"],
        "optimizer": {
            "name": ["sgd", "adam", "adamw"],
            "lr": [0.01, 0.1],
            "weight_decay": [0.0, 5e-4],
            "momentum": [0.0, 0.9],
            "nesterov": [True, False],
            "warmup_epochs": [0, 1],
            "batch_size": 128,
        },
        "quantization": {
            "weight_bits": [4, 8, 32],
            "scope": "group",
            "activation_bits": [8, 32],
            "granularity": ["per_channel", "per_tensor"],
            "symmetric": [True, False],
        },
    },
    # The bundled scikit-learn digits (1x8x8 images, 10 classes): MLPs x norms x three
    # optimizers x quantization; `winnow demo` searches it (examples/digits.yaml is this space
    # as a file to copy).
    "digits-joint": {
        "name": "digits-joint",
        "architecture": {
            "family": "mlp",
            "depth": [1, 2, 3],
            "width": [64, 128, 256],
            "activation": ["relu", "gelu", "silu"],
        },
        "normalization": ["batchnorm", "layernorm", "rmsnorm", "none"],
        "optimizer": {
            "name": ["adamw", "sgd", "lion"],
            "per_optimizer": {
                "adamw": {"lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True}},
                "sgd": {"lr": {"low": 1.0e-2, "high": 0.3, "log": True}},
                "lion": {"lr": {"low": 1.0e-4, "high": 1.0e-3, "log": True}},
            },
            "schedule": "cosine",
            "warmup_epochs": [0, 1],
            "batch_size": [32, 64],
        },
        "quantization": {
            "weight_bits": [4, 8, 32],
            "scope": "group",
            "activation_bits": [8, 32],
            "granularity": "per_channel",
            "symmetric": [True, False],
        },
    },
    "nb201": {
        "name": "nb201",
        "architecture": {"family": "nb201"},
        "optimizer": {
            "name": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": 5e-4,
            "schedule": "cosine",
            "batch_size": 256,
        },
    },
}
