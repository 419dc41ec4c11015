"""SWAP-Score (Peng et al. 2024, "SWAP-NAS: Sample-Wise Activation Patterns for Ultra-fast NAS",
ICLR), as its official code (``pym1024/SWAP``, ``src/metrics/swap.py`` and ``correlation.py``)
computes it, and its regularisation by model size.

The code re-initialises the network with Gaussian weights (``network_weight_gaussian_init``, the
same init as Zen-NAS's), puts 16 real training images through it in training mode without
gradients, and keeps the sign of every ReLU output: a binary ``samples x neurons`` matrix. The
SWAP-Score is the number of DISTINCT columns, i.e. of distinct per-neuron activation patterns
across the samples (``torch.unique(A.T, dim=0)``). ``correlation.py`` averages it over 32
re-initialisations.

Here: the sign of the activation's input (``> 0``), which for a ReLU is the sign of its output
and for the smooth activations this project adds (GELU, SiLU, ...) the same on/off split; every
activation layer is read whatever the rank of its input (the code reads 4-D inputs only: every
ReLU of a NAS-Bench-201 network, and none of an MLP's). ``SWAP_REPEATS`` re-initialisations,
fewer than the code's 32 to keep the suite's cost: on the 100 cells of ``bench proxies --sample
100 --seed 0`` the Spearman was 0.740 with 1, 0.729 with 2 and 0.724 with 8 repeats.

Regularisation (the paper's Eq. for model-size control): ``SWAP * exp(-(p - mu)^2 / sigma)``
with ``p`` the parameter count in thousands (the code's ``count_parameters`` / 1e3);
``mu`` and ``sigma`` are the user's: they pick the model size the search is steered to, so they
are not part of the per-network score (:func:`size_regularised`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from winnow.proxies.base import ACTIVATION_MODULES, Batch, working_copy
from winnow.proxies.zen import gaussian_init

SWAP_SAMPLES = 16  # the code's --input_samples
SWAP_REPEATS = 2  # the code averages 32 Gaussian re-initialisations; each costs a forward
_BINCOUNT_SAMPLES = 20  # 2**20 counters (8 MB) at most


def swap_score(patterns: Tensor) -> int:
    """The number of distinct columns of a ``samples x neurons`` 0/1 pattern matrix.

    Each column is packed into one int64 (bit ``i`` = sample ``i``) and the distinct integers
    counted: the count of ``torch.unique(patterns.T, dim=0)``, the code's, without sorting
    millions of rows (a NAS-Bench-201 network has about 1.5 million ReLU units); up to 63
    samples. The rows are packed one at a time, so the memory is a few int64 vectors of
    ``neurons``, never an int64 copy of the whole matrix. Up to ``_BINCOUNT_SAMPLES`` samples
    the packed integers are below ``2**n`` and are counted by a bincount, without the sort of
    ``torch.unique`` (0.002 s against 0.04 s per repeat on a NAS-Bench-201 network's 16
    samples, whose forward takes about 0.35 s)."""
    n = patterns.shape[0]
    if n > 63:
        return int(torch.unique(patterns.T, dim=0).shape[0])
    packed = torch.zeros(patterns.shape[1], dtype=torch.int64, device=patterns.device)
    for i in range(n):
        packed.bitwise_or_(patterns[i].to(torch.int64).bitwise_left_shift_(i))
    if n <= _BINCOUNT_SAMPLES:
        return int(torch.count_nonzero(torch.bincount(packed, minlength=1 << n)))
    return int(torch.unique(packed).numel())


def size_regularised(score: float, params: float, mu: float, sigma: float) -> float:
    """The regularised SWAP-Score, ``score * exp(-(params/1e3 - mu)^2 / sigma)``: ``params`` a
    parameter count, ``mu`` (thousands of parameters) the size favoured, ``sigma`` how sharply."""
    return score * math.exp(-((params / 1e3 - mu) ** 2) / sigma)


def _patterns(net: nn.Module, x: Tensor) -> Tensor:
    """The on/off pattern of every activation input, one row per sample."""
    codes: list[Tensor] = []

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        codes.append((inputs[0].detach() > 0).flatten(1).to(torch.uint8))

    handles = [
        m.register_forward_hook(hook) for m in net.modules() if isinstance(m, ACTIVATION_MODULES)
    ]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for handle in handles:
            handle.remove()
    if not codes:
        raise ValueError("swap found no activation layer (ReLU, GELU, SiLU, ...) in the model")
    return torch.cat(codes, 1)


def swap(model: nn.Module, batches: Sequence[Batch], seed: int = 0) -> float:
    """The SWAP-Score of a copy of ``model`` on the first ``SWAP_SAMPLES`` images of batch 0,
    averaged over ``SWAP_REPEATS`` Gaussian initialisations drawn from a generator seeded with
    ``seed``."""
    x = batches[0][0][:SWAP_SAMPLES]
    net = working_copy(model, x.device)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    scores = []
    for _ in range(SWAP_REPEATS):
        gaussian_init(net, generator)
        scores.append(swap_score(_patterns(net, x.float())))
    return sum(scores) / len(scores)
