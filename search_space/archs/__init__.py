"""Architecture families: each is a spec section, its decisions, a builder and its quant slots.

A family module provides ``<Name>Space`` (its pydantic spec section, whose ``family`` literal
names the family), ``suggest(space, chooser)`` (decide an arch dict), ``decisions(arch)`` (the
arch's decided values by path, for replay), ``build(arch, norm, num_classes, input_shape)``,
``quant_slots(space, scope)`` (the names that per-group or per-layer weight bits are decided
for), ``canonical(arch, bits_for)`` (the structural hash's form), ``positions(model, arch)``
(canonical places of modules, for functional hashing), ``probe_architecture(arch, bits_for)``
(a smaller stand-in that functional hashing may probe instead, or None), ``probe_shape(probe)``
(the input shape functional hashing probes with) and ``describe(arch)`` (an
``ArchitectureView``: what the dashboard shows). A family of user code (``custom``) also
provides ``imports(space)`` (the import paths it names), ``PROBES_TASK_SHAPE`` and
``check_builder``. See ``base.Family``.

Adding a family is one module and one ``_register`` line below: the spec's ``architecture``
union (``spec.Architecture``) is built from this registry.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from pydantic import BaseModel

from winnow.search_space.archs import custom, macro, mlp, nb201
from winnow.search_space.archs.base import ArchitectureView, Family
from winnow.search_space.registry import Registry

FAMILIES: Registry[Family] = Registry("architecture family")


def _register(module: ModuleType, space: type[BaseModel]) -> None:
    family = Family.of(module, space)
    FAMILIES.register(family.name, family)


_register(nb201, nb201.NB201Space)
_register(macro, macro.MacroSpace)
_register(mlp, mlp.MLPSpace)
_register(custom, custom.CustomSpace)


def describe(arch: dict[str, Any]) -> ArchitectureView:
    """What the dashboard shows for ``arch``: its family's view; a family this build does not
    register (a stored candidate of another version) shows its name and fields only."""
    name = arch.get("family", "?")
    if name not in FAMILIES:
        return ArchitectureView(summary=str(name), fields=dict(arch))
    return FAMILIES.get(name).describe(arch)


__all__ = ["FAMILIES", "ArchitectureView", "Family", "describe"]
