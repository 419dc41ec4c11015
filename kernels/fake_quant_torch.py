"""The torch fallbacks of ``fake_quant``'s kernels, torch only: what winnow's quantization
computed before the kernels (``search_space.quantization``), and what the pytorch export
carries into ``model.py`` in their place (``torch_fallback``).
"""

from __future__ import annotations

import torch
from torch import Tensor

FLOAT_BITS = 32  # 32 bits = not quantized

# The smallest scale allowed, so that an all-zero (or constant-zero) range never divides by zero;
# the same guard as torch.ao.quantization's observers (``eps = torch.finfo(torch.float32).eps``).
_MIN_SCALE = torch.finfo(torch.float32).eps


def integer_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Symmetric: the narrow signed range [-(2^(b-1)-1), 2^(b-1)-1] (zero exactly representable
    and the range symmetric, as in Jacob et al. 2018 for weights); affine: [0, 2^b - 1]."""
    if symmetric:
        q = 2 ** (bits - 1) - 1
        return -q, q
    return 0, 2**bits - 1


def quantization_params(
    low: Tensor, high: Tensor, bits: int, symmetric: bool
) -> tuple[Tensor, Tensor]:
    """Scale (float32) and integer zero point (int32) for the float range [low, high].

    Symmetric: scale = max(|low|, |high|) / (2^(b-1)-1), zero point 0. Affine: the range is first
    widened to include 0 (so that zero padding and ReLU zeros are exact), then
    scale = (high - low) / (2^b - 1) and zero point = round(-low / scale).
    Works elementwise, so per-channel ranges give per-channel parameters.
    """
    qmin, qmax = integer_range(bits, symmetric)
    low, high = low.detach().float(), high.detach().float()
    if symmetric:
        scale = torch.maximum(low.abs(), high.abs()) / qmax
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
        return scale.clamp_min(_MIN_SCALE), zero_point
    low, high = low.clamp(max=0.0), high.clamp(min=0.0)
    scale = ((high - low) / (qmax - qmin)).clamp_min(_MIN_SCALE)
    zero_point = torch.round(-low / scale).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point


def _channel_range(x: Tensor, axis: int) -> tuple[Tensor, Tensor]:
    """Min and max of ``x`` over every dim but ``axis`` (one value per channel)."""
    flat = x.detach().movedim(axis, 0).reshape(x.shape[axis], -1)
    low, high = torch.aminmax(flat, dim=1)
    return low, high


def _observed_range(x: Tensor, axis: int | None) -> tuple[Tensor, Tensor]:
    return torch.aminmax(x.detach()) if axis is None else _channel_range(x, axis)


def _torch_learnable(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis, grad_factor: float
) -> Tensor:
    """The LSQ fallback: torch's own learnable fake-quantize ops."""
    if axis is None:
        return torch._fake_quantize_learnable_per_tensor_affine(
            x, scale.reshape(1), zero_point.reshape(1), qmin, qmax, grad_factor
        )
    return torch._fake_quantize_learnable_per_channel_affine(
        x, scale, zero_point, axis, qmin, qmax, grad_factor
    )


def _torch_fake_quantize(
    x: Tensor, low: Tensor, high: Tensor, bits: int, symmetric: bool, axis: int | None
) -> Tensor:
    """The fallback: winnow's parameters, then torch's own ops, which implement quantize ->
    clamp -> dequantize with the straight-through gradient (masked outside the clipping range)
    for any [quant_min, quant_max] inside 8 bits."""
    qmin, qmax = integer_range(bits, symmetric)
    scale, zero_point = quantization_params(low, high, bits, symmetric)
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(
            x, scale.reshape(()), zero_point.reshape(()), qmin, qmax
        )
    return torch.fake_quantize_per_channel_affine(x, scale, zero_point, axis, qmin, qmax)


def fake_quantize(
    x: Tensor, bits: int, per_channel: bool, symmetric: bool, axis: int = 0
) -> Tensor:
    """``fake_quant.fake_quantize`` in torch: over ``x``'s own min/max range (per channel along
    ``axis``, or per tensor), torch's fake-quantize ops."""
    if bits == FLOAT_BITS:
        return x
    if per_channel:
        axis = axis % x.dim()
        low, high = _channel_range(x, axis)
        return fake_quantize_with_range(x, low, high, bits, symmetric, axis=axis)
    low, high = torch.aminmax(x.detach())
    return fake_quantize_with_range(x, low, high, bits, symmetric)


def fake_quantize_with_range(
    x: Tensor, low: Tensor, high: Tensor, bits: int, symmetric: bool, axis: int | None = None
) -> Tensor:
    """``fake_quant.fake_quantize_with_range`` in torch: values beyond [low, high] are clipped,
    the gradient straight-through inside and 0 where clipped."""
    if bits == FLOAT_BITS:
        return x
    return _torch_fake_quantize(x, low, high, bits, symmetric, axis)
