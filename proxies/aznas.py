"""AZ-NAS's proxies (Lee & Ham 2024, "AZ-NAS: Assembling Zero-Cost Proxies for Network
Architecture Search", CVPR), as its code computes them (``cvlab-yonsei/AZ-NAS``,
``NB201/ZeroShotProxy/compute_az_nas_score.py``): expressivity, progressivity and trainability
from the features of the network's stages; the fourth, complexity, is the network's FLOPs (the
code reads them from the benchmark's table; here the ``flops`` proxy computes them).

The code's setting, kept here: the network is re-initialised (Kaiming normal, fan-in, for every
Conv2d/Linear weight, biases 0, norm scales 1 and shifts 0), fed ONE batch of Gaussian noise of
the shape of a real batch (``trainloader=None``: AZ-NAS is not among the code's
``real_input_metrics``), in training mode, and the features are the output of the stem and of
every cell (``extract_cell_features``). Here the noise and the Rademacher directions of
trainability come from a generator seeded with the suite's seed.

Stages found without knowing the model (:func:`stage_modules`): the ``stem`` and every block of
a ``cells`` or ``blocks`` ``nn.Sequential`` (NAS-Bench-201's and the macro family's networks);
for a plain ``nn.Sequential`` (the MLP family), one stage per hidden Linear block, read after
its activation (:func:`sequential_stages`). Dropout is off in the re-initialised copy (the
code's networks have none; it would add noise of the global generator, not of the seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from winnow.proxies.base import (
    BATCH_NORMS,
    PRUNABLE_LAYERS,
    prunable_layers,
    weight_of,
    working_copy,
)

_NORMS = (*BATCH_NORMS, nn.GroupNorm)  # the code's init resets BatchNorm2d and GroupNorm
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


@torch.no_grad()
def kaiming_init(model: nn.Module, generator: torch.Generator) -> None:
    """The code's ``kaiming_normal_fanin_init``."""
    for layer in prunable_layers(model):
        nn.init.kaiming_normal_(
            weight_of(layer), mode="fan_in", nonlinearity="relu", generator=generator
        )
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    for norm in model.modules():
        if isinstance(norm, _NORMS) and norm.affine:
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)


def stage_modules(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are AZ-NAS's features, in the order the forward calls them."""
    blocks = getattr(model, "cells", None) or getattr(model, "blocks", None)
    stem = getattr(model, "stem", None)
    if isinstance(stem, nn.Module) and isinstance(blocks, nn.Sequential):
        return [stem, *blocks]
    if isinstance(model, nn.Sequential):
        stages = sequential_stages(model)
        if len(stages) >= 2:
            return stages
    raise ValueError(
        "aznas needs a stem and a Sequential of cells or blocks, or a Sequential with two or more"
        " hidden Linear/Conv2d blocks"
    )


def sequential_stages(model: nn.Sequential) -> list[nn.Module]:
    """One stage per hidden block of a plain Sequential (the MLP family's Linear -> norm ->
    activation -> dropout): each block starts at a Linear/Conv2d, and its stage is its last
    module that changes the features (Dropout, Identity and Flatten do not). The last child is
    the classifier, not a stage."""
    passive = (*_DROPOUTS, nn.Identity, nn.Flatten)
    blocks: list[list[nn.Module]] = []
    for child in list(model)[:-1]:
        if isinstance(child, PRUNABLE_LAYERS):
            blocks.append([])
        if blocks and not isinstance(child, passive):
            blocks[-1].append(child)
    return [block[-1] for block in blocks]


def stage_features(model: nn.Module, x: Tensor) -> list[Tensor]:
    """The outputs of :func:`stage_modules`, as the modules return them (still in the graph:
    a reshaped view would be a sibling of the next stage's input, not on its path, and autograd
    would find no gradient between them)."""
    features: list[Tensor] = []

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        features.append(output)

    handles = [m.register_forward_hook(hook) for m in stage_modules(model)]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    if len(features) < 2:
        raise ValueError(f"aznas needs two or more stage features, found {len(features)}")
    return features


def as_maps(feature: Tensor) -> Tensor:
    """A stage feature (or its gradient) as ``N x C x H x W``: a 2-D ``N x C`` one as
    ``N x C x 1 x 1``."""
    return feature if feature.dim() == 4 else feature.reshape(*feature.shape, 1, 1)


def feature_entropy(feature: Tensor) -> float:
    """One stage's expressivity: the entropy of the normalised eigenvalues of the channel
    covariance of its feature, positions and images pooled (``b*h*w`` rows of ``c``)."""
    feature = as_maps(feature)
    b, c, h, w = feature.shape
    rows = feature.detach().permute(0, 2, 3, 1).reshape(b * h * w, c).double()
    rows = rows - rows.mean(0, keepdim=True)
    eigenvalues = torch.linalg.eigvalsh(rows.T @ rows / rows.shape[0])
    p = eigenvalues / eigenvalues.sum()
    return float((-p * torch.log(p + 1e-8)).sum())


def expressivity(entropies: Sequence[float]) -> float:
    """The sum of the stages' entropies."""
    return float(np.sum(entropies))


def progressivity(entropies: Sequence[float]) -> float:
    """The smallest increase of entropy from one stage to the next."""
    return float(np.min(np.diff(entropies)))


def trainability_term(g_in: Tensor, g_out: Tensor) -> float:
    """One pair of consecutive stages: with ``M`` the mean outer product of the input and output
    gradients per position (the input gradient pixel-unshuffled to the output's resolution after
    a stride), ``2 - s - 1/s`` of ``M``'s largest singular value ``s``: 0 at ``s = 1`` (the
    gradient neither grows nor shrinks), negative either way. ``-inf`` when the gradient passes
    unchanged (a cell that is an identity)."""
    g_in, g_out = as_maps(g_in), as_maps(g_out)
    if g_in.shape == g_out.shape and torch.equal(g_in, g_out):
        return -np.inf
    if g_in.shape[2:] != g_out.shape[2:]:
        g_in = F.pixel_unshuffle(g_in, g_in.shape[2] // g_out.shape[2])
    bo, co, ho, wo = g_out.shape
    rows_out = g_out.permute(0, 2, 3, 1).reshape(-1, co).double()
    rows_in = g_in.permute(0, 2, 3, 1).reshape(-1, g_in.shape[1]).double()
    s = float(torch.linalg.svdvals(rows_in.T @ rows_out / (bo * ho * wo)).max())
    return -s - 1 / (s + 1e-6) + 2


def trainability(features: Sequence[Tensor], generator: torch.Generator) -> float:
    """The mean of :func:`trainability_term` over consecutive stages, last pair first, each
    backpropagating a Rademacher (+-1) gradient from the later stage to the earlier one."""
    terms = []
    for i in reversed(range(1, len(features))):
        f_out, f_in = features[i], features[i - 1]
        signs = torch.randint(0, 2, f_out.shape, generator=generator, device=f_out.device)
        g_out = (signs * 2 - 1).to(f_out.dtype)
        g_in = None
        if f_out.requires_grad and f_in.requires_grad:
            (g_in,) = torch.autograd.grad(f_out, f_in, g_out, retain_graph=True, allow_unused=True)
        # None only where the later stage does not depend on the earlier one (a cell whose
        # every path is "none"); the benchmark's Zero op (x * 0) keeps the graph and gives a
        # zero gradient there, so zeros stand in. (A reduction block after such a cell still
        # gets a non-zero gradient, through its 1x1 shortcut.)
        terms.append(trainability_term(torch.zeros_like(f_in) if g_in is None else g_in, g_out))
    return float(np.mean(terms))


@dataclass(frozen=True)
class AZScores:
    expressivity: float
    progressivity: float
    trainability: float


def az_scores(model: nn.Module, x_like: Tensor, seed: int) -> AZScores:
    """The three scores of a re-initialised copy of ``model`` on Gaussian noise of the shape of
    ``x_like`` (its values are not used)."""
    net = working_copy(model, x_like.device)
    generator = torch.Generator(device=x_like.device).manual_seed(seed)
    kaiming_init(net, generator)
    for dropout in net.modules():
        if isinstance(dropout, _DROPOUTS):
            dropout.eval()
    x = torch.randn(x_like.shape, generator=generator, device=x_like.device)
    with torch.enable_grad():
        features = stage_features(net, x)
        entropies = [feature_entropy(f) for f in features]
        train = trainability(features, generator)
    return AZScores(expressivity(entropies), progressivity(entropies), train)
