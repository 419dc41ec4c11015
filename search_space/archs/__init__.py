"""Architecture families: each is a spec section, its decisions, a builder and its quant slots.

A family module provides ``<Name>Space`` (its pydantic spec section), ``suggest(space, chooser)``
(decide an arch dict), ``decisions(arch)`` (the arch's decided values by path, for replay),
``build(arch, norm, num_classes, input_shape)``, ``quant_slots(space, scope)`` (the names that
per-group or per-layer weight bits are decided for), ``canonical(arch, bits_for)`` (the structural
hash's form), ``positions(model, arch)`` (canonical places of modules, for functional hashing) and
``probe_architecture(arch, bits_for)`` (a smaller stand-in that functional hashing may probe
instead, or None).
Adding a family is one module and one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from pydantic import BaseModel
from torch import nn

from winnow.search_space.archs import macro, mlp, nb201
from winnow.search_space.params import Chooser
from winnow.search_space.registry import Registry


@dataclass(frozen=True)
class Family:
    name: str
    space: type[BaseModel]
    suggest: Callable[[Any, Chooser], dict[str, Any]]
    decisions: Callable[[dict[str, Any]], dict[str, Any]]
    build: Callable[[dict[str, Any], str, int, tuple[int, ...]], nn.Module]
    quant_slots: Callable[[Any, str], list[str]]
    # (arch, bits_for) -> (canonical arch form with live layers' bits, those bits)
    canonical: Callable[[dict[str, Any], Callable[[str], int]], tuple[dict, list[int]]]
    # (built model, arch) -> {module-name prefix: canonical place}, for functional hashing
    positions: Callable[[nn.Module, dict[str, Any]], dict[str, str]]
    # (arch, bits_for) -> (a smaller arch computing equal functions exactly when this one does,
    # the effective values it replaced, which the hash takes as given), or None
    probe_architecture: Callable[
        [dict[str, Any], Callable[[str], int]], tuple[dict[str, Any], dict[str, Any]] | None
    ]


def _family(name: str, module: ModuleType, space: type[BaseModel]) -> Family:
    return Family(
        name,
        space,
        module.suggest,
        module.decisions,
        module.build,
        module.quant_slots,
        module.canonical,
        module.positions,
        module.probe_architecture,
    )


FAMILIES: Registry[Family] = Registry("architecture family")
FAMILIES.register("nb201", _family("nb201", nb201, nb201.NB201Space))
FAMILIES.register("macro", _family("macro", macro, macro.MacroSpace))
FAMILIES.register("mlp", _family("mlp", mlp, mlp.MLPSpace))

__all__ = ["FAMILIES", "Family"]
