"""What an architecture family is: ``Family``, the functions its module provides, and
``ArchitectureView``, what it shows of a candidate's architecture (as data: the dashboard draws
it, this package imports no UI code)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from pydantic import BaseModel
from torch import nn

from winnow.search_space.params import Chooser


class ProbeSize(Protocol):
    """What a family reads of functional hashing's probe (``functional_hash.Probe``, which
    imports the families: a protocol here keeps the arrow one way)."""

    channels: int
    size: int
    features: int


@dataclass(frozen=True)
class ArchitectureView:
    """What the dashboard shows for one candidate's architecture."""

    summary: str  # one line, e.g. a chart's hover text
    fields: dict[str, Any]  # the recipe's architecture table (less what the graph shows)
    table: dict[str, list[Any]] | None = None  # columns of a per-stage or per-layer table
    graph: str | None = None  # Graphviz DOT source, e.g. of an nb201 cell
    caption: str | None = None  # what the graph shows (Markdown)


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
    # the input shape functional hashing probes the family's networks with
    probe_shape: Callable[[ProbeSize], tuple[int, ...]]
    # (arch) -> what the dashboard shows of it
    describe: Callable[[dict[str, Any]], ArchitectureView]
    # (spec section) -> {field in the section: import path} of the user code it names
    imports: Callable[[Any], dict[str, str]] = lambda space: {}
    # whether functional hashing probes the task's own input shape (``Probe.task_shape``)
    # rather than the probe's small stand-in (a user's network may need its real input size)
    probes_task_shape: bool = False
    # (arch, norm, (input shape, classes) or None) -> None: what can be checked of the user
    # code before a search starts (raises what building would); None for winnow's own
    check: Callable[[dict[str, Any], str, Any], None] | None = None

    @classmethod
    def of(cls, module: ModuleType, space: type[BaseModel]) -> Family:
        """The family a module defines, named by its spec section's ``family`` literal."""
        return cls(
            space.model_fields["family"].default,
            space,
            module.suggest,
            module.decisions,
            module.build,
            module.quant_slots,
            module.canonical,
            module.positions,
            module.probe_architecture,
            module.probe_shape,
            module.describe,
            getattr(module, "imports", lambda space: {}),
            getattr(module, "PROBES_TASK_SHAPE", False),
            getattr(module, "check_builder", None),
        )


def image_probe_shape(probe: ProbeSize) -> tuple[int, ...]:
    """Convolutional families see ``channels x size x size`` (they compute the same function at
    any resolution)."""
    return (probe.channels, probe.size, probe.size)
