"""Zen-score (Lin et al. 2021, "Zen-NAS: A Zero-Shot NAS for High-Performance Image
Recognition", ICCV), as the paper's code (``idstcv/ZenNAS``, ``compute_zen_score.py``) computes
it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from winnow.proxies.base import (
    BATCH_NORMS,
    Batch,
    inside_parametrization,
    prunable_layers,
    weight_of,
    working_copy,
)

MIXUP_GAMMA = 1e-2  # the code's default ``mixup_gamma`` (alpha in the paper)

_NORMS_RESET = (*BATCH_NORMS, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)


@torch.no_grad()
def gaussian_init(model: nn.Module, generator: torch.Generator) -> None:
    """The code's ``network_weight_gaussian_init``: every Conv2d/Linear weight ~ N(0, 1) and bias
    0, every norm's scale 1 and shift 0 (BatchNorm and GroupNorm there; LayerNorm and RMSNorm
    too here, the norms this project adds). BatchNorm running statistics are reset as well, so
    that the score does not depend on what the model saw before."""
    for layer in prunable_layers(model):
        nn.init.normal_(weight_of(layer), generator=generator)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    for norm in model.modules():
        if isinstance(norm, _NORMS_RESET):
            if getattr(norm, "weight", None) is not None:
                nn.init.ones_(norm.weight)
            if getattr(norm, "bias", None) is not None:
                nn.init.zeros_(norm.bias)
        if isinstance(norm, BATCH_NORMS) and norm.track_running_stats:
            norm.reset_running_stats()


def pre_gap_features(model: nn.Module, x: Tensor) -> Tensor:
    """The feature map before global average pooling (the code's ``forward_pre_GAP``), found
    without knowing the model: the last 4-D output with more than one spatial position that any
    module produces. Flat models (an MLP, or a ConvNet pooled down to 1x1 before its head) have
    none; their features are the input of the last Linear layer called (the classifier), the
    representation a global pool would have produced."""
    found: dict[str, Tensor] = {}

    def on_output(module: nn.Module, inputs: tuple, output: object) -> None:
        if isinstance(output, Tensor) and output.dim() == 4 and output.shape[2:].numel() > 1:
            found["map"] = output

    def on_linear_input(module: nn.Module, inputs: tuple) -> None:
        found["flat"] = inputs[0]

    handles = []
    for name, module in model.named_modules():
        if module is model or inside_parametrization(name):
            continue
        handles.append(module.register_forward_hook(on_output))
        if isinstance(module, nn.Linear):
            handles.append(module.register_forward_pre_hook(on_linear_input))
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    if "map" in found:
        return found["map"]
    if "flat" in found:
        return found["flat"]
    raise ValueError("zen found neither a spatial feature map nor a Linear classifier input")


def zen_score(features: Tensor, mixed_features: Tensor, running_vars: Sequence[Tensor]) -> float:
    """``log(mean_n sum |f(x) - f(x + alpha eps)|) + sum_BN log sqrt(mean running_var)``: the
    code's L1 distance per sample (the paper writes a Frobenius norm) averaged over the batch,
    plus the BatchNorm scaling term of every BatchNorm layer."""
    distance = (features - mixed_features).abs().flatten(1).sum(1).mean().double()
    bn_term = sum((v.double().mean().sqrt().log() for v in running_vars), torch.zeros(()))
    return float(distance.log() + bn_term.to(distance.device))


def zen(model: nn.Module, batches: Sequence[Batch], seed: int = 0) -> float:
    """Zen-score of a copy of ``model``: Gaussian re-initialisation (:func:`gaussian_init`),
    Gaussian inputs ``x`` and ``x + 0.01 eps`` of the shape of ``batches[0]`` (its values are not
    used), drawn from a generator seeded with ``seed``, both through the network in training
    mode without gradients, then :func:`zen_score` of the pre-GAP features
    (:func:`pre_gap_features`).

    The BatchNorm term reads ``running_var`` after the two forwards, exactly as the code: with
    momentum 0.1 from fresh statistics that is ``0.81 + 0.09 v(x) + 0.1 v(x')`` of the batch
    variances, not a batch variance itself. It sums over every torch BatchNorm (1d and 2d; the
    batch stage of BCN too); the code only knew BatchNorm2d. A model without BatchNorm gets no BN
    term: its score is the log feature distance alone, so Zen-scores compare candidates that share
    a norm, not candidates across norms.
    """
    x0 = batches[0][0]
    net = working_copy(model, x0.device)
    generator = torch.Generator(device=x0.device).manual_seed(seed)
    gaussian_init(net, generator)
    x = torch.randn(x0.shape, generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    with torch.no_grad():
        features = pre_gap_features(net, x)
        mixed = pre_gap_features(net, x + MIXUP_GAMMA * noise)
    running_vars = [
        m.running_var
        for m in net.modules()
        if isinstance(m, BATCH_NORMS) and m.running_var is not None
    ]
    return zen_score(features, mixed, running_vars)
