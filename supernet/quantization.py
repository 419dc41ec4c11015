"""Elastic quantization (EQ-Net, Xu et al. 2023, arXiv:2210.07528): one set of shared weights
trained under sampled quantization policies, so that a subnet's accuracy under its own policy
(bit widths, per-channel or per-tensor scales, symmetric or affine) is inherited, not retrained.

A supernet's layer runs ``quantized_linear`` with a ``QuantPolicy``: the same fake quantization
``search_space.quantization.apply_quantization`` attaches to winnow's built network (its
``WeightFakeQuant`` on the sliced weight, its ``ActivationFakeQuant`` on the input), so the
extracted subnet under that policy computes what the supernet computed.

Activation ranges: winnow's activation quantizers keep running min/max ranges (an EMA while
training). A supernet keeps one observer per layer input, shared by every policy (a min/max
range does not depend on the bits it is quantized to) and every subnet, as BatchNorm's running
statistics are; so, like BatchNorm's, a subnet's ranges are re-estimated before it is scored
(``recalibrate``: a few training batches, cumulative average).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from winnow.search_space.params import RandomChooser
from winnow.search_space.quantization import (
    FLOAT_BITS,
    ActivationFakeQuant,
    QuantPolicy,
    WeightFakeQuant,
)
from winnow.search_space.spec import SearchSpace
from winnow.supernet.batchnorm import DEFAULT_BATCHES, recalibrate_batchnorm

FLOAT_POLICY = QuantPolicy()


def sample_policy(space: SearchSpace, rng: random.Random) -> QuantPolicy:
    """A quantization policy of ``space``'s quantization axis, drawn as a search draws one
    (its scope, bits, granularity and symmetry choices), and from that axis alone: a training
    run's draws do not change with the space's optimizer or norm axes."""
    return space.suggest_quantization(RandomChooser(rng))


def new_observer() -> ActivationFakeQuant:
    """A layer input's range observer; its bits and symmetry are set per call (``observe``)."""
    return ActivationFakeQuant(8)


@functools.lru_cache(maxsize=64)
def _weight_quantizer(bits: int, per_channel: bool, symmetric: bool) -> WeightFakeQuant:
    return WeightFakeQuant(bits, per_channel, symmetric)  # stateless: one per setting serves all


def quantize_input(x: Tensor, observer: ActivationFakeQuant, policy: QuantPolicy) -> Tensor:
    """The input fake quantization a layer of winnow's network under ``policy`` applies, with
    the shared observer's running range (updated in training mode, as winnow's is)."""
    if policy.activation_bits == FLOAT_BITS:
        return x  # apply_quantization attaches no input quantizer then
    observer.bits, observer.symmetric = policy.activation_bits, policy.symmetric
    return observer(x)


def quantize_weight(weight: Tensor, bits: int, policy: QuantPolicy) -> Tensor:
    """The weight fake quantization of a layer with ``bits`` under ``policy`` (per output
    channel or per tensor, of the sliced weight: the subnet's layer is that slice)."""
    if bits == FLOAT_BITS:
        return weight
    per_channel = policy.granularity == "per_channel"
    return _weight_quantizer(bits, per_channel, policy.symmetric)(weight)


def quantized_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    slot: str,
    policy: QuantPolicy,
    observer: ActivationFakeQuant,
) -> Tensor:
    """``F.linear`` as winnow's ``Linear`` of slot ``slot`` computes it under ``policy``."""
    bits = policy.bits_for(slot)
    if bits == FLOAT_BITS and policy.activation_bits == FLOAT_BITS:
        return F.linear(x, weight, bias)
    return F.linear(
        quantize_input(x, observer, policy), quantize_weight(weight, bits, policy), bias
    )


# Kurtosis of a uniform distribution: weights spread evenly over their range use every level
# of a min/max quantizer, whatever its bits, where a peaked (Gaussian, 3.0) layer's outliers
# stretch the range and leave its bulk on a few levels.
UNIFORM_KURTOSIS = 1.8


def weight_distribution_loss(weight: Tensor) -> Tensor:
    """EQ-Net's weight distribution regularization (Xu et al. 2023, Sec. 3.3): the squared
    skewness and the squared distance of the kurtosis to a uniform distribution's, per output
    channel (averaged), so that shared weights quantize well at every bit width and scale."""
    rows = weight.flatten(1)
    z = (rows - rows.mean(1, keepdim=True)) / rows.std(1, keepdim=True, correction=0).clamp_min(
        1e-8
    )
    skew, kurtosis = z.pow(3).mean(1), z.pow(4).mean(1)
    return (skew.pow(2) + (kurtosis - UNIFORM_KURTOSIS).pow(2)).mean()


def copy_observer(source: ActivationFakeQuant, target: ActivationFakeQuant) -> None:
    """Give a subnet layer's input quantizer the supernet observer's range."""
    with torch.no_grad():
        for name in ("running_min", "running_max", "initialized"):
            getattr(target, name).copy_(getattr(source, name))


def observers(model: nn.Module) -> list[ActivationFakeQuant]:
    return [m for m in model.modules() if isinstance(m, ActivationFakeQuant)]


@torch.no_grad()
def recalibrate(
    model: nn.Module, batches: Iterable[Tensor], num_batches: int = DEFAULT_BATCHES
) -> int:
    """Re-estimate a subnet's BatchNorm statistics and activation ranges on the first
    ``num_batches`` batches (both cumulative averages, train mode: see
    ``batchnorm.recalibrate_batchnorm``); leaves ``model`` in eval mode, returns the batches
    used. The weights are not changed."""
    quantizers = observers(model)
    momenta = [q.momentum for q in quantizers]
    for q in quantizers:
        q.initialized.fill_(False)

    def averaging(source: Iterable[Tensor]) -> Iterator[Tensor]:
        # ActivationFakeQuant's EMA with momentum 1/n on batch n is the cumulative average
        for n, x in enumerate(source, start=1):
            for q in quantizers:
                q.momentum = 1.0 / n
            yield x

    try:
        return recalibrate_batchnorm(model, averaging(batches), num_batches)
    finally:
        for q, momentum in zip(quantizers, momenta, strict=True):
            q.momentum = momentum
