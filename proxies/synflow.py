"""SynFlow (Tanaka et al. 2020, "Pruning neural networks without any data by iteratively
conserving synaptic flow", NeurIPS), as foresight scores a network with it (Abdelfattah et al.
2021, ``synflow`` with ``bn=False``)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from winnow.proxies.base import (
    BATCH_NORMS,
    Batch,
    prunable_layers,
    total,
    weight_of,
    working_copy,
)


@torch.no_grad()
def _absolute_values(model: nn.Module) -> None:
    """Replace every floating-point parameter and buffer by its absolute value (foresight does
    this to the whole state dict; the signs need no restoring because ``model`` is a copy), after
    resetting BatchNorm's running statistics to mean 0, variance 1."""
    for module in model.modules():
        if isinstance(module, BATCH_NORMS) and module.track_running_stats:
            module.reset_running_stats()
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            tensor.abs_()


def synflow(model: nn.Module, batches: Sequence[Batch], seed: int = 0) -> float:
    """Synaptic flow: ``sum |theta * dR/dtheta|`` over the Conv2d/Linear weights, with
    ``R = sum(f(1))`` the summed output of the network with every parameter replaced by its
    absolute value on an all-ones input of batch 1.

    In float64, as foresight: the flow is a product of every layer's weights, and a
    NAS-Bench-201 network (C=16, N=5) already reaches ~1e36, next to float32's limit of 3e38. In
    eval mode with BatchNorm's running statistics reset (mean 0, variance 1), which makes every
    BatchNorm an identity up to ``1/sqrt(1 + eps)``: what foresight's ``bn=False`` asks for.
    Other norms normalise each sample and stay.

    One difference from foresight on NAS-Bench-201: its ``bn=False`` copy
    (``nasbench2.get_prunable_copy``) builds the stem, the cells and the head without BatchNorm,
    but its ``reduction`` blocks build their two ``ReLUConvBN`` without passing ``use_bn``, so
    they keep BatchNorm, and the copy stays in training mode (``predictive.py`` calls
    ``.train()``): those four BatchNorms normalise the single all-ones image by its own spatial
    statistics. Here they are identities like the others.

    Uses only the shape of ``batches[0]``: the score does not depend on the data. ``seed`` is
    unused (nothing is random).
    """
    x = batches[0][0]
    net = working_copy(model, x.device, dtype=torch.float64).eval()
    _absolute_values(net)
    weights = [weight_of(layer) for layer in prunable_layers(net)]
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    with torch.enable_grad():
        flow = net(ones).sum()
        grads = torch.autograd.grad(flow, weights, allow_unused=True)
    return total(
        [(w * g).abs().sum() for w, g in zip(weights, grads, strict=True) if g is not None]
    )
