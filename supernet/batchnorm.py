"""Re-estimating a subnet's BatchNorm statistics before it is scored.

Shared running statistics belong to no single subnet (each path sees different activations),
so inherited-weight accuracy is unstable without re-estimating them per subnet (reported by
users of OFA, BigNAS and SPOS code). As those codebases do: reset the statistics, run a few
training batches in train mode with a cumulative average (``momentum=None``), then eval.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

DEFAULT_BATCHES = 8  # batches of training data a subnet's statistics are re-estimated on


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, batches: Iterable[torch.Tensor], num_batches: int = DEFAULT_BATCHES
) -> int:
    """Re-estimate every BatchNorm's running mean and variance of ``model`` on the first
    ``num_batches`` input batches (cumulative average, train mode), leave ``model`` in eval
    mode and return the number of batches used. Layers without running statistics are left
    alone; the model's weights are not changed."""
    layers = [m for m in batchnorm_layers(model) if m.track_running_stats]
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the batches, not an EMA
    model.train()
    used = 0
    try:
        for x in batches:
            if used >= num_batches:
                break
            model(x)
            used += 1
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.eval()
    return used
