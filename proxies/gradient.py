"""Gradient-based zero-cost proxies, as formulas on weights and gradients.

Each function takes one tensor per prunable layer (``winnow.proxies.base.prunable_layers``) and
returns the network's score as foresight (Abdelfattah et al. 2021, "Zero-Cost Proxies for
Lightweight NAS", ICLR) reports it: the per-weight (or per-channel) saliencies summed over the
whole network. Where the gradients come from is ``winnow.proxies.passes``. All sums are in
float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from winnow.proxies.base import total


def snip(weights: Sequence[Tensor], grads: Sequence[Tensor]) -> float:
    """SNIP (Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection
    Sensitivity", ICLR): connection sensitivity ``sum |theta * dL/dtheta|`` with L the
    cross-entropy of one batch. foresight takes the gradient of a unit mask multiplying each
    weight, which equals ``theta * dL/dtheta``."""
    return total([(w.detach() * g).abs().sum() for w, g in zip(weights, grads, strict=True)])


def grad_norm(grads: Sequence[Tensor]) -> float:
    """Gradient norm (foresight's ``grad_norm``, Abdelfattah et al. 2021): the sum over layers
    of the L2 (Frobenius) norm of each layer's weight gradient of the cross-entropy."""
    return total([g.double().norm() for g in grads])


def grasp(weights: Sequence[Tensor], hessian_grads: Sequence[Tensor]) -> float:
    """GraSP (Wang et al. 2020, "Picking Winning Tickets Before Training by Preserving Gradient
    Flow", ICLR), with foresight's sign: ``sum -theta * Hg``, where ``Hg`` is the Hessian of the
    loss times its gradient (a double backward). GraSP prunes the weights with the *largest*
    ``theta * Hg``; foresight negated it because accuracy correlated negatively with it, so that
    higher is better like every other proxy."""
    return total([-(w.detach() * h).sum() for w, h in zip(weights, hessian_grads, strict=True)])


def channel_fisher(activation: Tensor, activation_grad: Tensor) -> Tensor:
    """Fisher information of each channel of one layer's output (Theis et al. 2018, "Faster
    gaze prediction with dense networks and Fisher pruning"; Turner et al. 2020, BlockSwap):
    ``0.5 * mean_n (sum_spatial a * dL/da)^2``, one value per channel ``k`` of ``a`` (N, K, ...).
    """
    a, g = activation.detach().double(), activation_grad.detach().double()
    per_sample = (a * g).sum(dim=tuple(range(2, a.dim()))) if a.dim() > 2 else a * g
    return 0.5 * per_sample.pow(2).mean(0)


def fisher(channel_values: Sequence[Tensor], weights: Sequence[Tensor]) -> float:
    """Fisher (Turner et al. 2020; foresight's ``fisher``): each layer's per-channel Fisher
    information (:func:`channel_fisher`), given to every weight of that output channel as
    foresight broadcasts it, summed over the network: ``sum_layers sum_k F_k * |W[k]|``, where
    ``|W[k]|`` is the number of weights feeding channel ``k`` (fan-in x kernel size)."""
    terms = [
        values.sum() * (w.numel() // w.shape[0])
        for values, w in zip(channel_values, weights, strict=True)
    ]
    return total(terms)


def zico(per_batch_grads: Sequence[Sequence[Tensor]]) -> float:
    """ZiCo (Li et al. 2023, "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on
    Gradients", ICLR), as its official code computes it.

    ``per_batch_grads[b][l]`` is layer ``l``'s weight gradient of the cross-entropy on batch
    ``b`` (at least two batches). Per layer: over the batches, the mean absolute gradient over
    the standard deviation (population std, numpy's default), summed over the weights whose std
    is not zero; the log of that sum is the layer's term (layers whose sum is 0 are left out, as
    in the code), and the score is the sum of the terms. Gradients are per batch: the paper's
    definition, and the official code's (``SLDGroup/ZiCo``: its first ``getzico`` lacked
    ``zero_grad`` and accumulated them; commit d7076d5, February 2023, added
    ``network.zero_grad()`` before each batch's backward).
    """
    if len(per_batch_grads) < 2:
        raise ValueError(
            f"zico needs gradients of at least two batches, got {len(per_batch_grads)}"
        )
    terms = []
    for layer_grads in zip(*per_batch_grads, strict=True):
        g = torch.stack([t.detach().flatten().double() for t in layer_grads])
        std = g.std(dim=0, correction=0)
        keep = std != 0
        terms.append((g.abs().mean(dim=0)[keep] / std[keep]).sum())
    sums = torch.stack(terms).cpu() if terms else torch.zeros(0)
    return float(sum(math.log(s) for s in sums.tolist() if s != 0))
