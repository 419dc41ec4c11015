"""What a supernet provides, whatever the family (``nb201``, ``macro``, ``mlp``).

A supernet holds the shared weights of every architecture in a family's space. It trains by
sampling architectures (``sample``) and running ``forward(x, arch)`` on them, and hands out a
static network for one candidate (``get_active_subnet``) whose output equals that forward: the
subnet is scored, calibrated and quantized like any network winnow builds.

What it ranks is the architecture (and, with elastic quantization, the quantization policy)
under the supernet's own normalization and optimizer: those are not shared across a supernet.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

import torch
from torch import nn

from winnow.search_space.candidate import Candidate


class Supernet(Protocol):
    family: str  # the architecture family whose space it covers

    def sample(self, rng: random.Random) -> dict[str, Any]:
        """One architecture of the space (a family ``architecture`` dict), for a training step."""
        ...

    def forward(self, x: torch.Tensor, arch: dict[str, Any]) -> torch.Tensor:
        """The supernet's output with only ``arch``'s paths active."""
        ...

    def get_active_subnet(self, candidate: Candidate) -> nn.Module:
        """A static network for ``candidate`` with the inherited weights (a copy: training it
        leaves the supernet as it was)."""
        ...
