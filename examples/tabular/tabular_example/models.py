"""The example's network: ``architecture: {family: custom, builder:
"tabular_example.models:build"}``.

winnow calls ``build(input_shape, num_classes, norm_layer, act_layer, **params)`` with the
candidate's normalization (``norm_layer(features, spatial=False)``: a table's rows are
``(batch, features)``) and activation, and the ``params`` the search decided (``depth``,
``width``); winnow quantizes the Linear layers as the candidate's policy says.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Block(nn.Module):
    """Linear, norm, activation; residual when the width stays the same."""

    def __init__(self, features: int, width: int, norm_layer, act_layer) -> None:
        super().__init__()
        self.linear = nn.Linear(features, width)
        self.norm = norm_layer(width, spatial=False)
        self.act = act_layer()
        self.residual = features == width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm(self.linear(x)))
        return x + out if self.residual else out


class TabularNet(nn.Module):
    def __init__(
        self, features: int, num_classes: int, norm_layer, act_layer, depth: int, width: int
    ):
        super().__init__()
        blocks = []
        for _ in range(depth):
            blocks.append(Block(features, width, norm_layer, act_layer))
            features = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x.flatten(1)))


def build(input_shape, num_classes, norm_layer, act_layer, depth: int = 2, width: int = 64):
    return TabularNet(math.prod(input_shape), num_classes, norm_layer, act_layer, depth, width)
