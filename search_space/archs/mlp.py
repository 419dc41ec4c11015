"""``mlp``: a multilayer perceptron for flat or tabular inputs (images are flattened).

Each hidden layer is Linear -> norm -> activation (-> dropout); all hidden layers share the
candidate's width. Slots for quantization: ``hidden.{i}`` (group ``hidden``) and ``head``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from torch import nn

from winnow.search_space.activations import make_activation
from winnow.search_space.archs.base import ArchitectureView, ProbeSize
from winnow.search_space.norms import linear, make_norm
from winnow.search_space.params import (
    Chooser,
    Depth,
    Param,
    Probability,
    Width,
    decide,
    param_values,
)


class MLPSpace(BaseModel):
    """Spec section for ``family: mlp``: a multilayer perceptron (images are flattened)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    family: Literal["mlp"] = "mlp"
    depth: Depth = [1, 2, 3]
    """Hidden layers (Linear -> norm -> activation)."""
    width: Width = [64, 128, 256]
    """Units of every hidden layer."""
    activation: Param = "relu"
    """The activation after each hidden layer's norm."""
    dropout: Probability = 0.0
    """Dropout probability after each hidden layer (0: none)."""

    @property
    def max_depth(self) -> int:
        values = param_values(self.depth)
        return max(values) if values else self.depth.high


def suggest(space: MLPSpace, chooser: Chooser) -> dict[str, Any]:
    return {
        "family": "mlp",
        "depth": decide(chooser, "architecture.depth", space.depth),
        "width": decide(chooser, "architecture.width", space.width),
        "activation": decide(chooser, "architecture.activation", space.activation),
        "dropout": decide(chooser, "architecture.dropout", space.dropout),
    }


def decisions(arch: dict[str, Any]) -> dict[str, Any]:
    return {f"architecture.{k}": v for k, v in arch.items() if k != "family"}


def build(arch: dict[str, Any], norm: str, num_classes: int, input_shape: tuple[int, ...]):
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = math.prod(input_shape)
    for i in range(arch["depth"]):
        layer = linear(width_in, arch["width"], norm=norm)
        layer.winnow_slot = f"hidden.{i}"
        layers += [
            layer,
            make_norm(norm, arch["width"], spatial=False),
            make_activation(arch["activation"]),
        ]
        if arch["dropout"]:
            layers.append(nn.Dropout(arch["dropout"]))
        width_in = arch["width"]
    head = nn.Linear(width_in, num_classes)
    head.winnow_slot = "head"
    return nn.Sequential(*layers, head)


def canonical(arch: dict[str, Any], bits_for: Callable[[str], int]) -> tuple[dict, list[int]]:
    """Every decision matters; only the bits of layers that exist (depth) are kept."""
    bits = {
        slot: bits_for(slot) for slot in [*(f"hidden.{i}" for i in range(arch["depth"])), "head"]
    }
    return {**arch, "dropout": float(arch["dropout"]), "bits": bits}, list(bits.values())


def positions(model: nn.Module, arch: dict[str, Any]) -> dict[str, str]:
    return {}  # module names are already canonical places: layers are positional


def probe_architecture(arch: dict[str, Any], bits_for: Callable[[str], int]) -> None:
    return None  # no repeated unit to drop: functional hashing probes the network itself


def probe_shape(probe: ProbeSize) -> tuple[int, ...]:
    return (probe.features,)  # a flat family: it sees ``features`` inputs


def describe(arch: dict[str, Any]) -> ArchitectureView:
    """Depth x width, and the hidden layers (then the classifier head) as a table."""
    depth, width = arch.get("depth", 1), arch.get("width")
    layers = {
        "layer": [f"hidden.{i}" for i in range(depth)] + ["head"],
        "out features": [width] * depth + ["classes"],
        "activation": [arch.get("activation", "")] * depth + [""],
    }
    summary = f"mlp {arch.get('depth')}x{width} {arch.get('activation', '')}"
    return ArchitectureView(summary, dict(arch), table=layers)


def quant_slots(space: MLPSpace, scope: str) -> list[str]:
    if scope == "group":
        return ["hidden", "head"]
    return [*(f"hidden.{i}" for i in range(space.max_depth)), "head"]
