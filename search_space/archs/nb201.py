"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020), built as the benchmark builds it.

Network (the benchmark's ``TinyNetwork``): a 3x3 conv stem with C=16 channels and a norm; three
stages of N=5 cells at C, 2C, 4C channels with a stride-2 ResNet basic block between stages; a
norm, ReLU, global average pool and a linear classifier. Every cell is the same 4-node DAG: node
``i`` sums one op applied to every earlier node ``j < i``; the cell's output is node 3.

Arch strings, e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|...~2|``,
list the op on each edge into node 1, node 2, node 3; ``op~j`` reads from node ``j``.

With the default BatchNorm the parameter count of every cell equals the benchmark's own network
(1,531,546 for the all-``nor_conv_3x3`` cell and 73,306 for the all-``none`` cell with 10
classes); ``tests/search_space/test_nb201.py`` checks this. The norm is the candidate's choice at
every norm position (stem, each ReLU-Conv-Norm op, the last norm before the classifier).

Each Conv2d carries a ``winnow_slot`` name used by quantization policies: ``stem``,
``stage{s}.cell{c}.edge{e}``, ``stage{s}.reduce`` and ``head``.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from winnow.search_space.archs.nb201_canonical import (
    EDGES,
    NUM_NODES,
    canonical_cell,
    live_conv_edges,
)
from winnow.search_space.norms import conv2d, make_norm

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


class ArchStringError(ValueError):
    """A NAS-Bench-201 arch string that cannot be parsed."""


def parse_arch(arch: str) -> tuple[str, ...]:
    """Return the six edge ops of an arch string, in ``EDGES`` order."""
    nodes = arch.strip().split("+")
    if len(nodes) != NUM_NODES - 1:
        raise ArchStringError(f"arch string {arch!r} must have {NUM_NODES - 1} nodes joined by '+'")
    ops: list[str] = []
    for target, node in enumerate(nodes, start=1):
        edges = [e for e in node.strip().strip("|").split("|")]
        if len(edges) != target:
            raise ArchStringError(
                f"node {target} of {arch!r} must have {target} edges, not {len(edges)}"
            )
        for source, edge in enumerate(edges):
            op, _, src = edge.partition("~")
            if op not in OPS:
                raise ArchStringError(f"unknown op {op!r} in {arch!r}; allowed: {', '.join(OPS)}")
            if src != str(source):
                raise ArchStringError(
                    f"edge {edge!r} of node {target} must read from node {source}"
                )
            ops.append(op)
    return tuple(ops)


def format_arch(ops: tuple[str, ...] | list[str]) -> str:
    """Inverse of :func:`parse_arch`."""
    if len(ops) != len(EDGES):
        raise ArchStringError(f"a cell has {len(EDGES)} edges, got {len(ops)} ops")
    nodes: list[list[str]] = [[] for _ in range(NUM_NODES - 1)]
    for (source, target), op in zip(EDGES, ops, strict=True):
        nodes[target - 1].append(f"{op}~{source}")
    return "+".join("|" + "|".join(node) + "|" for node in nodes)


class ReLUConvNorm(nn.Sequential):
    """The benchmark's ReLUConvBN: ReLU -> Conv (no bias) -> norm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, norm: str, slot: str):
        conv = conv2d(c_in, c_out, kernel, stride, kernel // 2, norm=norm)
        conv.winnow_slot = slot
        super().__init__(nn.ReLU(inplace=False), conv, make_norm(norm, c_out))


def make_op(op: str, channels: int, norm: str, slot: str) -> nn.Module | None:
    """One edge op at stride 1 (cells never change shape); ``None`` for ``none``."""
    if op == "none":
        return None
    if op == "skip_connect":
        return nn.Identity()
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    kernel = 3 if op == "nor_conv_3x3" else 1
    return ReLUConvNorm(channels, channels, kernel, 1, norm, slot)


class Cell(nn.Module):
    """A NAS-Bench-201 cell (the benchmark's InferCell), stride 1, C channels in and out.

    ``none`` edges are left out of the sums: the benchmark multiplies their input by zero, which
    adds nothing to the sum, so the function and its gradients are the same.
    """

    def __init__(self, ops: tuple[str, ...], channels: int, norm: str, slot: str):
        super().__init__()
        self.ops = ops
        self.edges = nn.ModuleList()
        self.edge_index: list[tuple[int, int]] = []  # (source, target) of each kept edge
        for e, ((source, target), op) in enumerate(zip(EDGES, ops, strict=True)):
            module = make_op(op, channels, norm, f"{slot}.edge{e}")
            if module is not None:
                self.edges.append(module)
                self.edge_index.append((source, target))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for target in range(1, NUM_NODES):
            inputs = [
                module(nodes[source])
                for module, (source, t) in zip(self.edges, self.edge_index, strict=True)
                if t == target
            ]
            nodes.append(torch.stack(inputs).sum(0) if inputs else torch.zeros_like(x))
        return nodes[-1]


class ResNetBasicBlock(nn.Module):
    """The benchmark's stride-2 reduction block: two ReLU-Conv-Norm 3x3 and an
    AvgPool(2) -> Conv1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, norm: str, slot: str):
        super().__init__()
        self.conv_a = ReLUConvNorm(c_in, c_out, 3, 2, norm, slot)
        self.conv_b = ReLUConvNorm(c_out, c_out, 3, 1, norm, slot)
        shortcut = conv2d(c_in, c_out, 1, norm=norm)
        shortcut.winnow_slot = slot
        self.downsample = nn.Sequential(nn.AvgPool2d(kernel_size=2, stride=2), shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The benchmark's TinyNetwork for one cell, with the chosen norm everywhere."""

    def __init__(
        self,
        ops: tuple[str, ...],
        num_classes: int,
        in_channels: int = 3,
        channels: int = 16,
        cells_per_stage: int = 5,
        norm: str = "batchnorm",
    ):
        super().__init__()
        stem_conv = conv2d(in_channels, channels, 3, 1, 1, norm=norm)
        stem_conv.winnow_slot = "stem"
        self.stem = nn.Sequential(stem_conv, make_norm(norm, channels))
        blocks: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage > 0:
                blocks.append(ResNetBasicBlock(c, 2 * c, norm, f"stage{stage}.reduce"))
                c *= 2
            for i in range(cells_per_stage):
                blocks.append(Cell(ops, c, norm, f"stage{stage}.cell{i}"))
        self.cells = nn.Sequential(*blocks)
        self.lastact = nn.Sequential(make_norm(norm, c), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        self.classifier.winnow_slot = "head"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(self.pool(x).flatten(1))


# --- the family: spec section, decisions, builder -------------------------------------------

from collections.abc import Callable  # noqa: E402
from typing import Any, Literal  # noqa: E402

from pydantic import BaseModel, ConfigDict, Field, field_validator  # noqa: E402

from winnow.search_space.archs.base import ArchitectureView, image_probe_shape  # noqa: E402
from winnow.search_space.params import MAX_DEPTH, MAX_WIDTH, Chooser, decide  # noqa: E402


class NB201Space(BaseModel):
    """Spec section for ``family: nb201``. ``cell`` fixes the cell; ``ops`` limits edge ops."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    family: Literal["nb201"] = "nb201"
    ops: list[Literal[OPS]] = list(OPS)  # type: ignore[valid-type]
    """The operations each of the cell's six edges chooses among."""
    cell: str | None = None
    """Fixes the cell: an arch string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (none: searched)."""
    channels: int = Field(16, ge=1, le=MAX_WIDTH // 4)  # the last stage has 4 x channels
    """Channels of the first stage (doubled by each reduction)."""
    cells_per_stage: int = Field(5, ge=1, le=MAX_DEPTH)
    """Cells per stage (three stages, two reductions between)."""

    @field_validator("cell")
    @classmethod
    def _valid_cell(cls, cell: str | None) -> str | None:
        return None if cell is None else format_arch(parse_arch(cell))


def suggest(space: NB201Space, chooser: Chooser) -> dict[str, Any]:
    if space.cell is not None:
        ops = parse_arch(space.cell)
    else:
        ops = tuple(decide(chooser, f"architecture.edge{e}", space.ops) for e in range(len(EDGES)))
    return {
        "family": "nb201",
        "cell": format_arch(ops),
        "channels": space.channels,
        "cells_per_stage": space.cells_per_stage,
    }


def decisions(arch: dict[str, Any]) -> dict[str, Any]:
    """The per-edge values of an arch, keyed by decision path."""
    return {f"architecture.edge{e}": op for e, op in enumerate(parse_arch(arch["cell"]))}


def build(arch: dict[str, Any], norm: str, num_classes: int, input_shape: tuple[int, ...]):
    if len(input_shape) != 3:
        raise ValueError(f"nb201 needs image inputs (C, H, W), got input shape {input_shape}")
    return NB201Network(
        parse_arch(arch["cell"]),
        num_classes,
        in_channels=input_shape[0],
        channels=arch.get("channels", 16),
        cells_per_stage=arch.get("cells_per_stage", 5),
        norm=norm,
    )


def canonical(arch: dict[str, Any], bits_for: Callable[[str], int]) -> tuple[dict, list[int]]:
    """Canonical arch form with the bits of live layers at their canonical places, and those
    bits (see ``archs/nb201_canonical.py`` and ``search_space/canonical.py``)."""
    ops = parse_arch(arch["cell"])
    live = sorted(live_conv_edges(ops))
    cells, live_bits = [], []
    for slot in _cell_slots(arch):
        attrs = {e: str(bits_for(f"{slot}.edge{e}")) for e in live}
        cells.append(canonical_cell(ops, attrs).form)
        live_bits += [int(b) for b in attrs.values()]
    if cells[0] == "0":  # every cell outputs zero: the network is a constant
        return {"family": "nb201", "cells": "0"}, []
    fixed = {slot: bits_for(slot) for slot in ("stem", "stage1.reduce", "stage2.reduce", "head")}
    form = {
        "family": "nb201",
        "channels": arch.get("channels", 16),
        "cells_per_stage": arch.get("cells_per_stage", 5),
        "cells": cells[0] if len(set(cells)) == 1 else cells,
        "bits": fixed,
    }
    return form, live_bits + list(fixed.values())


def _cell_slots(arch: dict[str, Any]) -> list[str]:
    per_stage = arch.get("cells_per_stage", 5)
    return [f"stage{s}.cell{c}" for s in range(3) for c in range(per_stage)]


def positions(model: NB201Network, arch: dict[str, Any]) -> dict[str, str]:
    """Canonical place of every edge module (module name prefix -> position), so that
    functional hashing initialises equivalent modules of equivalent cells alike."""
    ops = parse_arch(arch["cell"])
    kept_edges = [e for e, op in enumerate(ops) if op != "none"]
    cell_positions = canonical_cell(ops).positions
    cells = [(i, m) for i, m in enumerate(model.cells) if isinstance(m, Cell)]
    found = {}
    for (index, _), slot in zip(cells, _cell_slots(arch), strict=True):
        for k, e in enumerate(kept_edges):
            found[f"cells.{index}.edges.{k}"] = f"{slot}/{cell_positions.get(e, f'dead{e}')}"
    return found


def probe_architecture(
    arch: dict[str, Any], bits_for: Callable[[str], int]
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """One cell per stage, for functional hashing (4x cheaper at 5 cells per stage), and the
    effective value it replaced. Every cell of a stage has the same ops, so two candidates'
    stacks of N cells compute equal functions exactly when their single cells do (given the
    rest equal): the probe decides cell equivalence, and the repeat count is hashed as given.
    Only when each live layer's weight bits agree across the cells of a stage, which is all that
    the probe observes (bits of dead layers change nothing, so they may differ)."""
    per_stage = arch.get("cells_per_stage", 5)
    if per_stage == 1:
        return None
    live = live_conv_edges(parse_arch(arch["cell"]))
    for stage, edge in itertools.product(range(3), sorted(live)):
        first = bits_for(f"stage{stage}.cell0.edge{edge}")
        if any(bits_for(f"stage{stage}.cell{c}.edge{edge}") != first for c in range(1, per_stage)):
            return None
    return arch | {"cells_per_stage": 1}, {"cells_per_stage": per_stage}


probe_shape = image_probe_shape


def describe(arch: dict[str, Any]) -> ArchitectureView:
    """The cell as a graph (its string in the caption, so the fields leave it out)."""
    cell, channels, per_stage = arch.get("cell"), arch.get("channels"), arch.get("cells_per_stage")
    caption = (
        f"cell `{cell}`: node 0 is the cell's input, node 3 its output; "
        f"`none` edges carry nothing and are not drawn. {per_stage} "
        f"cells per stage, {channels} channels."
    )
    return ArchitectureView(
        summary=f"nb201 {cell} C{channels} N{per_stage}",
        fields={k: v for k, v in arch.items() if k != "cell"},
        graph=cell_dot(arch["cell"]),
        caption=caption,
    )


def cell_dot(cell: str) -> str:
    """Graphviz source of a cell ``|op~0|+|op~0|op~1|+|...|``: node j sums one edge from each
    earlier node i, labelled with its operation; ``none`` edges are left out (they carry
    nothing; ``describe``'s caption says so)."""
    lines = [
        "digraph cell {",
        "  rankdir=LR; node [shape=circle, fontname=Helvetica];",
        "  edge [fontname=Helvetica, fontsize=10];",
    ]
    for target, node in enumerate(cell.strip("|").split("|+|"), start=1):
        for edge in node.split("|"):
            operation, _, source = edge.partition("~")
            if operation != "none":
                lines.append(f'  {source} -> {target} [label="{operation}"];')
    lines.append("}")
    return "\n".join(lines)


def quant_slots(space: NB201Space, scope: str) -> list[str]:
    if scope == "group":
        return ["stem", "stage0", "stage1", "stage2", "head"]
    slots = ["stem"]
    for stage in range(3):
        if stage:
            slots.append(f"stage{stage}.reduce")
        slots += [
            f"stage{stage}.cell{c}.edge{e}"
            for c in range(space.cells_per_stage)
            for e in range(len(EDGES))
        ]
    return slots + ["head"]
