"""Re-estimating a subnet's BatchNorm statistics before it is scored.

Shared running statistics belong to no single subnet (each path sees different activations),
so inherited-weight accuracy is unstable without re-estimating them per subnet (reported by
users of OFA, BigNAS and SPOS code). As those codebases do: reset the statistics, run a few
training batches in train mode with a cumulative average (``momentum=None``), then eval.

Where ``winnow.kernels`` chooses its kernels (CUDA by default), each layer's forward is replaced
for the re-estimation by ``_recalibrating_forward``: one statistics pass of the kernel
(``kernels.norms.batch_norm_statistics``) gives both what the batch is normalized with and what
the averages take in, and torch's train-mode BatchNorm does not run. Elsewhere (the fallback,
CPU by default) it is torch's BatchNorm in train mode, exactly as before.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from winnow.kernels.backend import use_triton
from winnow.kernels.norms import batch_norm_statistics

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
    # chosen first: a forced kernel that cannot run raises before any layer is touched
    fused = [m for m in layers if _fusable(m) and use_triton(m.running_mean.device)]
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the batches, not an EMA
    for layer in fused:  # an instance attribute: nn.Module.__call__ finds it before the class's
        layer.forward = functools.partial(_recalibrating_forward, layer)
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
        for layer in fused:
            del layer.forward
        model.eval()
    return used


def _fusable(layer: nn.modules.batchnorm._BatchNorm) -> bool:
    # torch's BatchNorm1d/2d/3d; a subclass with a forward of its own (SyncBatchNorm) keeps it
    return type(layer).forward is nn.modules.batchnorm._BatchNorm.forward


def _recalibrating_forward(layer: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """What train-mode BatchNorm with ``momentum=None`` does, from the kernel's statistics:
    normalize with the batch's mean and biased variance, and fold the mean and the unbiased
    variance into the running averages with weight ``1 / num_batches_tracked`` (torch's
    cumulative average)."""
    mean, var = batch_norm_statistics(x)
    count = x.numel() // x.shape[1]
    if count < 2:  # torch's check: an unbiased variance needs two values
        raise ValueError(f"Expected more than 1 value per channel when training, got {x.shape}")
    layer.num_batches_tracked.add_(1)
    weight = 1.0 / float(layer.num_batches_tracked)
    stats = layer.running_mean.dtype
    layer.running_mean.lerp_(mean.to(stats), weight)
    layer.running_var.lerp_((var * (count / (count - 1))).to(stats), weight)
    return F.batch_norm(x, mean, var, layer.weight, layer.bias, False, 0.0, layer.eps)
