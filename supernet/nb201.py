"""The one-shot supernet of the ``nb201`` family: every op on every edge, one path per step.

Skeleton: winnow's own NAS-Bench-201 network (``archs/nb201.py``'s ``TinyNetwork``: a 3x3 conv
stem and a norm, three stages of N cells at C, 2C, 4C channels with the benchmark's stride-2
ResNet block between them, a norm, ReLU, pooling and a linear head). The reduction blocks, stem
and head are shared by every path; each of a cell's six edges holds every op of the space
(``skip_connect`` and ``avg_pool_3x3`` have no weights; each ``nor_conv`` is a ReLU-Conv-BN of its
own), and a forward runs one architecture: the same op on each edge of every cell, as a
NAS-Bench-201 cell is repeated.

Sampling (``sampling``):
- ``"uniform"``: each edge's op drawn uniformly, one path per training step (SPOS: Guo et al.,
  "Single Path One-Shot NAS with Uniform Sampling", ECCV 2020);
- ``"fair"``: FairNAS's strict fairness (Chu et al., "FairNAS: Rethinking Evaluation Fairness of
  Weight Sharing NAS", ICCV 2021): a step trains ``len(ops)`` paths whose ops on each edge are a
  random permutation of the ops, so every op of every edge is trained exactly once per step
  (gradients summed over the paths, one optimizer step).

``entangle=True`` makes ``nor_conv_1x1``'s weight the centre tap of ``nor_conv_3x3``'s weight on
the same edge (TangleNAS: Sukthanker et al., "Weight-Entangled Neural Architecture Search",
2024): the two convs share their weights and each keeps its own BatchNorm.

Normalization is the supernet's own BatchNorm and the optimizer the supernet's own SGD (see
``nb201_training.py``), whatever a candidate chooses: what this supernet ranks is the cell,
under its own norm and optimizer. ``get_active_subnet`` hands out winnow's own built network
for the candidate's cell (``FAMILIES['nb201'].build`` with BatchNorm, unquantized) with the
supernet's weights copied in; in eval mode its output equals ``forward(x, arch)``.
"""

from __future__ import annotations

import random
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from winnow.search_space.archs import FAMILIES
from winnow.search_space.archs.nb201 import (
    EDGES,
    NUM_NODES,
    OPS,
    NB201Network,
    ReLUConvNorm,
    ResNetBasicBlock,
    format_arch,
    parse_arch,
)
from winnow.search_space.candidate import Candidate
from winnow.search_space.norms import conv2d, make_norm

Sampling = Literal["uniform", "fair"]
SAMPLINGS: tuple[str, ...] = ("uniform", "fair")
NORM = "batchnorm"  # the supernet's own normalization, whatever a candidate chooses
CONV_KERNELS = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


class MixedEdge(nn.Module):
    """One edge of a supercell: every op of the space, one of them run per forward.

    ``ops`` holds a ReLU-Conv-BN per conv op (``archs/nb201.py``'s ``ReLUConvNorm``, so its
    weights map one to one onto winnow's network); with ``entangle`` the 1x1 conv has no weight
    of its own, only its BatchNorm (``centre_norm``), and reads the 3x3 weight's centre."""

    def __init__(self, channels: int, ops: tuple[str, ...], entangle: bool, slot: str):
        super().__init__()
        self.entangled = entangle and {"nor_conv_1x1", "nor_conv_3x3"} <= set(ops)
        self.ops = nn.ModuleDict()
        for op in ops:
            if op in CONV_KERNELS and not (self.entangled and op == "nor_conv_1x1"):
                self.ops[op] = ReLUConvNorm(channels, channels, CONV_KERNELS[op], 1, NORM, slot)
        self.centre_norm = make_norm(NORM, channels) if self.entangled else None
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def centre_weight(self) -> torch.Tensor:
        """The entangled 1x1 weight: the centre tap of the 3x3 weight (a view: gradients flow)."""
        return self.ops["nor_conv_3x3"][1].weight[:, :, 1:2, 1:2]

    def forward(self, x: torch.Tensor, op: str) -> torch.Tensor:
        if op == "skip_connect":
            return x
        if op == "avg_pool_3x3":
            return self.pool(x)
        if op == "nor_conv_1x1" and self.entangled:
            return self.centre_norm(F.conv2d(F.relu(x), self.centre_weight()))
        return self.ops[op](x)


class SuperCell(nn.Module):
    """A NAS-Bench-201 cell with a ``MixedEdge`` on each of its six edges. The sums are taken
    in winnow's ``Cell`` order (kept edges in ``EDGES`` order, ``torch.stack(...).sum(0)``), so
    a path's output is bit-for-bit the static cell's."""

    def __init__(self, channels: int, ops: tuple[str, ...], entangle: bool, slot: str):
        super().__init__()
        self.edges = nn.ModuleList(
            MixedEdge(channels, ops, entangle, f"{slot}.edge{e}") for e in range(len(EDGES))
        )

    def forward(self, x: torch.Tensor, cell: tuple[str, ...]) -> torch.Tensor:
        nodes = [x]
        for target in range(1, NUM_NODES):
            inputs = [
                self.edges[e](nodes[source], op)
                for e, ((source, t), op) in enumerate(zip(EDGES, cell, strict=True))
                if t == target and op != "none"
            ]
            nodes.append(torch.stack(inputs).sum(0) if inputs else torch.zeros_like(x))
        return nodes[-1]


class NB201Supernet(nn.Module):
    """The one-shot supernet of the ``nb201`` family (see the module docstring).

    Module names follow ``NB201Network`` (``stem``, ``cells.{i}``, ``lastact``, ``classifier``),
    the reduction blocks are winnow's own ``ResNetBasicBlock``, so extraction copies whole
    submodules where nothing is chosen."""

    family = "nb201"

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        channels: int = 16,
        cells_per_stage: int = 5,
        ops: tuple[str, ...] = OPS,
        sampling: Sampling = "uniform",
        entangle: bool = False,
    ):
        super().__init__()
        if sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {sampling!r}; allowed: {', '.join(SAMPLINGS)}")
        unknown = [op for op in ops if op not in OPS]
        if unknown or not ops:
            raise ValueError(f"unknown ops {unknown}; allowed: {', '.join(OPS)}")
        self.ops = tuple(ops)
        self.sampling = sampling
        self.entangle = entangle
        self.num_classes, self.in_channels = num_classes, in_channels
        self.channels, self.cells_per_stage = channels, cells_per_stage
        self.stem = nn.Sequential(
            conv2d(in_channels, channels, 3, 1, 1, norm=NORM), make_norm(NORM, channels)
        )
        blocks: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage > 0:
                blocks.append(ResNetBasicBlock(c, 2 * c, NORM, f"stage{stage}.reduce"))
                c *= 2
            blocks += [
                SuperCell(c, self.ops, entangle, f"stage{stage}.cell{i}")
                for i in range(cells_per_stage)
            ]
        self.cells = nn.ModuleList(blocks)
        self.lastact = nn.Sequential(make_norm(NORM, c), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    # --- the Supernet protocol --------------------------------------------------------------

    def arch(self, cell: tuple[str, ...] | str) -> dict[str, Any]:
        """The family ``architecture`` dict of a cell (ops or an arch string) at this size."""
        ops = parse_arch(cell) if isinstance(cell, str) else tuple(cell)
        return {
            "family": "nb201",
            "cell": format_arch(ops),
            "channels": self.channels,
            "cells_per_stage": self.cells_per_stage,
        }

    def sample(self, rng: random.Random) -> dict[str, Any]:
        """One architecture, each edge's op drawn uniformly from the supernet's ops."""
        return self.arch([rng.choice(self.ops) for _ in EDGES])

    def step_paths(self, rng: random.Random) -> list[dict[str, Any]]:
        """The architectures one training step trains: one uniform path (SPOS), or with
        ``fair`` sampling ``len(ops)`` paths covering every op of every edge once (FairNAS)."""
        if self.sampling == "uniform":
            return [self.sample(rng)]
        per_edge = [rng.sample(self.ops, len(self.ops)) for _ in EDGES]
        return [self.arch([edge[k] for edge in per_edge]) for k in range(len(self.ops))]

    def forward(self, x: torch.Tensor, arch: dict[str, Any] | str) -> torch.Tensor:
        cell = self._cell(arch)
        x = self.stem(x)
        for block in self.cells:
            x = block(x, cell) if isinstance(block, SuperCell) else block(x)
        x = self.lastact(x)
        return self.classifier(self.pool(x).flatten(1))

    def get_active_subnet(self, candidate: Candidate | dict[str, Any]) -> NB201Network:
        """winnow's network for the candidate's cell (the family's ``build``, BatchNorm,
        unquantized: the supernet ranks the cell alone) with a copy of the supernet's weights
        and running statistics, in the supernet's mode, on its device."""
        arch = candidate.architecture if isinstance(candidate, Candidate) else candidate
        cell = self._cell(arch)
        shape = (self.in_channels, 32, 32)  # only the channel count matters to the build
        with torch.random.fork_rng(devices=[]):  # the build's init must not move the caller's RNG
            subnet = FAMILIES.get("nb201").build(self.arch(cell), NORM, self.num_classes, shape)
        device = self.classifier.weight.device
        subnet.to(device)
        with torch.no_grad():
            _copy_weights(self, subnet, cell)
        return subnet.train(self.training)

    # --- helpers ----------------------------------------------------------------------------

    def _cell(self, arch: dict[str, Any] | str) -> tuple[str, ...]:
        """The cell's ops, checked against this supernet's space and size."""
        if isinstance(arch, str):
            cell = parse_arch(arch)
        else:
            if arch.get("family", "nb201") != "nb201":
                raise ValueError(f"an nb201 supernet cannot run a {arch.get('family')} network")
            size = (arch.get("channels", 16), arch.get("cells_per_stage", 5))
            if size != (self.channels, self.cells_per_stage):
                raise ValueError(
                    f"the supernet has C={self.channels}, N={self.cells_per_stage}; "
                    f"the architecture asks for C={size[0]}, N={size[1]}"
                )
            cell = parse_arch(arch["cell"])
        outside = sorted({op for op in cell if op not in self.ops and op != "none"})
        if outside:
            raise ValueError(f"ops {outside} are not in the supernet's ops {list(self.ops)}")
        return cell


def _copy_weights(supernet: NB201Supernet, subnet: NB201Network, cell: tuple[str, ...]) -> None:
    """Copy the supernet's tensors for ``cell`` into ``subnet`` (same module layout, see
    ``NB201Network``: a static cell keeps only its non-``none`` edges, in ``EDGES`` order)."""
    for name in ("stem", "lastact", "classifier"):
        getattr(subnet, name).load_state_dict(getattr(supernet, name).state_dict())
    for block, static in zip(supernet.cells, subnet.cells, strict=True):
        if not isinstance(block, SuperCell):
            static.load_state_dict(block.state_dict())
            continue
        kept = [(e, op) for e, op in enumerate(cell) if op != "none"]
        for static_edge, (e, op) in zip(static.edges, kept, strict=True):
            if op not in CONV_KERNELS:
                continue  # skip and pool carry no tensors
            edge = block.edges[e]
            if op == "nor_conv_1x1" and edge.entangled:
                static_edge[1].weight.copy_(edge.centre_weight())
                static_edge[2].load_state_dict(edge.centre_norm.state_dict())
            else:
                static_edge.load_state_dict(edge.ops[op].state_dict())
