"""Fake quantization (quantize, then dequantize) with the straight-through gradient: the Triton
kernel (``fake_quant_triton``) on CUDA, torch's own fake-quantize ops elsewhere
(``backend.use_triton`` decides; see ``kernels/backend.py``).

The numerics are torch's ``fake_quantize_per_{tensor,channel}_affine``: with
``inv_scale = 1.0f / scale`` in float32, ``q = clamp(nearbyint(x * inv_scale) + zero_point,
qmin, qmax)`` rounded half to even, then ``(q - zero_point) * scale``; the gradient is the
incoming one where the unclamped ``q`` lies in [qmin, qmax] and 0 where it was clipped. The
kernel computes the same bits: the same observer (min/max), the same float32 scale and zero
point as :func:`quantization_params`, the same rounding. The torch path is exactly what
``winnow.search_space.quantization`` computed before the kernels existed.

Public: :func:`fake_quantize` (the tensor's own range), :func:`fake_quantize_with_range` (a given
range, e.g. an activation observer's), :func:`quantize_codes` (the integer codes, what the tests
compare), :func:`fake_quantize_learnable` (LSQ, a learned scale and zero point; Esser et al.
2020, "Learned Step Size Quantization", ICLR) with :func:`lsq_grad_factor`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from winnow.kernels import fake_quant_torch
from winnow.kernels.backend import falls_back_to, interpreting, use_triton
from winnow.kernels.fake_quant_torch import (  # noqa: F401 - the names winnow has always used
    _MIN_SCALE,
    FLOAT_BITS,
    _channel_range,
    _observed_range,
    _torch_fake_quantize,
    _torch_learnable,
    integer_range,
    quantization_params,
)


def _kernel_runs(x: Tensor) -> bool:
    # The kernel is written for float32 (winnow's training dtype); torch's half kernels round
    # through double in places, so other dtypes keep the fallback rather than risk a bit.
    return x.dtype == torch.float32 and use_triton(x.device)


# ------------------------------------------------------------------------- the public functions


@falls_back_to(fake_quant_torch.fake_quantize)
def fake_quantize(
    x: Tensor, bits: int, per_channel: bool, symmetric: bool, axis: int = 0
) -> Tensor:
    """Quantize ``x`` to ``bits`` bits over its own min/max range and dequantize it again.

    Per-channel reduces over every dim but ``axis`` (one scale per output channel for weights);
    per-tensor uses one scale. ``bits == 32`` returns ``x`` unchanged. The gradient with respect
    to ``x`` is the straight-through estimator (1 everywhere, since the range covers ``x``).
    """
    if bits == FLOAT_BITS:
        return x
    channel_axis = axis % x.dim() if per_channel else None
    if _kernel_runs(x):
        return _TritonFakeQuant.apply(x, None, None, bits, symmetric, channel_axis)
    low, high = _observed_range(x, channel_axis)
    return _torch_fake_quantize(x, low, high, bits, symmetric, channel_axis)


@falls_back_to(fake_quant_torch.fake_quantize_with_range)
def fake_quantize_with_range(
    x: Tensor, low: Tensor, high: Tensor, bits: int, symmetric: bool, axis: int | None = None
) -> Tensor:
    """Fake-quantize ``x`` for a given float range: per-tensor when ``axis`` is None (``low`` and
    ``high`` scalars), else per-channel along ``axis``. Values outside the range are clipped;
    the gradient is straight-through inside the range and 0 where clipped."""
    if bits == FLOAT_BITS:
        return x
    axis = None if axis is None else axis % x.dim()
    if _kernel_runs(x):
        return _TritonFakeQuant.apply(x, low, high, bits, symmetric, axis)
    return _torch_fake_quantize(x, low, high, bits, symmetric, axis)


def quantize_codes(
    x: Tensor,
    bits: int,
    symmetric: bool,
    axis: int | None = None,
    low: Tensor | None = None,
    high: Tensor | None = None,
) -> Tensor:
    """The int32 codes in [qmin, qmax] that fake quantization dequantizes: per-tensor when
    ``axis`` is None, else per channel along ``axis``; over ``x``'s own range, or over
    [``low``, ``high``] when given. The fallback reads them off torch's fake-quantized output
    (``(q - zp) * scale`` divided by the scale is within 2^-24 relative of ``q - zp``, so
    rounding recovers the integer exactly)."""
    if bits == FLOAT_BITS:
        raise ValueError("32 bits is not quantized: there are no integer codes")
    axis = None if axis is None else axis % x.dim()
    if (low is None) != (high is None):
        raise ValueError("give both low and high (a range), or neither (x's own range)")
    if _kernel_runs(x):
        return _triton_forward(x, low, high, bits, symmetric, axis, codes=True)[0]
    if low is None:
        low, high = _observed_range(x, axis)
    y = _torch_fake_quantize(x.detach(), low, high, bits, symmetric, axis)
    scale, zero_point = quantization_params(low, high, bits, symmetric)
    shape = [1] * x.dim()
    if axis is not None:
        shape[axis] = -1
    codes = torch.round(y / scale.reshape(shape)).to(torch.int32)
    return codes + zero_point.reshape(shape)


def lsq_grad_factor(numel: int, bits: int, symmetric: bool) -> float:
    """LSQ's gradient scale g = 1 / sqrt(numel * qmax) (Esser et al. 2020, section 2.2): numel
    is the number of values one scale quantizes (a layer's weights, or its features)."""
    return 1.0 / math.sqrt(numel * integer_range(bits, symmetric)[1])


def fake_quantize_learnable(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    bits: int,
    symmetric: bool,
    axis: int | None = None,
    grad_factor: float = 1.0,
) -> Tensor:
    """LSQ fake quantization with a learned ``scale`` and (float) ``zero_point``: per-tensor
    (0-d or 1-element tensors) when ``axis`` is None, else one per channel along ``axis``.

    The forward rounds the zero point half to even; the backward is torch's
    ``_fake_quantize_learnable_*`` convention, which is LSQ's: d/dx straight-through inside the
    clamp range; d/d scale = round(x/s) - x/s inside and qmin - zp or qmax - zp where clipped;
    d/d zero point = -scale where clipped and 0 inside; scale and zero-point gradients summed
    over what they quantize and multiplied by ``grad_factor`` (LSQ's g: :func:`lsq_grad_factor`).
    """
    qmin, qmax = integer_range(bits, symmetric)
    axis = None if axis is None else axis % x.dim()
    if _kernel_runs(x):
        return _TritonLearnable.apply(x, scale, zero_point, qmin, qmax, axis, grad_factor)
    return _torch_learnable(x, scale, zero_point, qmin, qmax, axis, grad_factor)


# --------------------------------------------------------------------------- the Triton path


def _learnable_backward_by_torch(ctx, grad, x, scale, zero_point) -> list[Tensor | None]:
    """LSQ's (dx, dscale, dzero_point) by autograd through the fallback, for a backward that
    builds a graph: it then behaves as torch's does (whose double backward raises "not
    implemented"), instead of silently dropping the second-order terms. Taken with respect to
    aliases (``view_as``) so each is a partial derivative (see ``norms._fallback_backward``)."""
    qmin, qmax, axis, grad_factor = ctx.settings
    inputs = (x, scale, zero_point)
    wanted = list(ctx.needs_input_grad[:3])
    with torch.enable_grad():
        x, scale, zero_point = (t.view_as(t) for t in inputs)
        y = _torch_learnable(x, scale, zero_point, qmin, qmax, axis, grad_factor)
        chosen = [t for t, want in zip((x, scale, zero_point), wanted, strict=True) if want]
        grads = iter(torch.autograd.grad(y, chosen, grad, create_graph=True))
    return [next(grads) if want else None for want in wanted]


def _triton():
    from winnow.kernels import fake_quant_triton  # imports triton: only when a kernel runs

    return fake_quant_triton


def _next_power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _block(n: int) -> int:
    """Elements per program step: 1024 compiled (4 warps, 8 per thread); under the interpreter,
    which runs each program in Python over numpy, as large as the work (up to 2^16)."""
    if interpreting():
        return min(max(_next_power_of_2(n), 1024), 1 << 16)
    return 1024


def _layout(x: Tensor, axis: int | None) -> tuple[int, int, int]:
    """(channels, inner, elements per channel) of ``x`` seen as [outer, channels, inner]."""
    if axis is None:
        return 1, x.numel(), x.numel()
    channels = x.shape[axis]
    inner = math.prod(x.shape[axis + 1 :])
    return channels, inner, x.numel() // max(channels, 1)


def _launch_options(x: Tensor, axis: int | None) -> dict:
    channels, inner, n = _layout(x, axis)
    row_contiguous = axis is None or n == inner  # outer == 1: a channel is one run of memory
    return {"n": n, "channels": channels, "inner": inner, "ROW_CONTIGUOUS": row_contiguous}


def _ranges(x: Tensor, low: Tensor | None, high: Tensor | None, axis: int | None, block: int):
    """(low, high, values per channel, observe in-kernel): the stored ranges the quantize kernel
    reduces. Per tensor without a range: the min/max partials of a first launch."""
    kernels = _triton()
    if low is not None:
        low = low.detach().to(device=x.device, dtype=torch.float32).reshape(-1).contiguous()
        high = high.detach().to(device=x.device, dtype=torch.float32).reshape(-1).contiguous()
        return low, high, 1, False
    if axis is not None:
        return x, x, 1, True  # one program per channel reduces its own row
    parts = min(max(-(-x.numel() // block), 1), kernels.MAX_PARTIALS)
    lows = torch.empty(parts, device=x.device, dtype=torch.float32)
    highs = torch.empty_like(lows)
    kernels.minmax_partials_kernel[(parts,)](
        x, lows, highs, x.numel(), BLOCK=block, enable_fp_fusion=False
    )
    return lows, highs, parts, False


def _triton_forward(
    x: Tensor,
    low: Tensor | None,
    high: Tensor | None,
    bits: int,
    symmetric: bool,
    axis: int | None,
    codes: bool,
) -> tuple[Tensor, Tensor]:
    """(fake-quantized x, int8 straight-through mask), or (int32 codes, the codes) if ``codes``."""
    x = x.detach().contiguous()
    qmin, qmax = integer_range(bits, symmetric)
    options = _launch_options(x, axis)
    block = _block(options["n"])
    lows, highs, n_ranges, observe = _ranges(x, low, high, axis, block)
    out = torch.empty_like(x, dtype=torch.int32 if codes else x.dtype)
    mask = out if codes else torch.empty_like(x, dtype=torch.int8)
    parts = 1 if observe else max(-(-options["n"] // block), 1)
    if x.numel():
        _triton().fake_quant_kernel[(options["channels"], parts)](
            x, out, mask, lows, highs, n_ranges=n_ranges, QMIN=qmin, QMAX=qmax,
            SYMMETRIC=symmetric, MIN_SCALE=_MIN_SCALE, OBSERVE=observe, CODES=codes,
            BLOCK=block, RANGE_BLOCK=max(_next_power_of_2(n_ranges), 16),
            enable_fp_fusion=False, **options,
        )  # fmt: skip
    return out, mask


def _triton_masked_grad(grad: Tensor, mask: Tensor) -> Tensor:
    grad = grad.contiguous()
    out = torch.empty_like(grad)
    block = _block(grad.numel())
    grid = (max(-(-grad.numel() // block), 1),)
    _triton().masked_grad_kernel[grid](
        grad, mask, out, grad.numel(), BLOCK=block, enable_fp_fusion=False
    )
    return out


class _TritonFakeQuant(torch.autograd.Function):
    """The kernel's forward stores the straight-through mask; the backward is one product."""

    @staticmethod
    def forward(ctx, x, low, high, bits, symmetric, axis):
        y, mask = _triton_forward(x, low, high, bits, symmetric, axis, codes=False)
        ctx.save_for_backward(mask)
        return y

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True: torch's fake-quantize backward is ``grad * mask``, differentiable
            # in ``grad`` (a Hessian-vector product passes through it); the kernel's is not
            return grad * mask.to(grad.dtype), None, None, None, None, None
        return _triton_masked_grad(grad, mask), None, None, None, None, None


class _TritonLearnable(torch.autograd.Function):
    """LSQ: the backward recomputes the rounding from x (nothing but x is stored)."""

    @staticmethod
    def forward(ctx, x_in, scale, zero_point, qmin, qmax, axis, grad_factor):
        x = x_in.contiguous()
        scale_flat = scale.detach().float().reshape(-1).contiguous()
        zp_flat = zero_point.detach().float().reshape(-1).contiguous()
        options = _launch_options(x, axis)
        block = _block(options["n"])
        out = torch.empty_like(x)
        parts = max(-(-options["n"] // block), 1)
        if x.numel():
            _triton().lsq_forward_kernel[(options["channels"], parts)](
                x, out, scale_flat, zp_flat, QMIN=qmin, QMAX=qmax, BLOCK=block,
                enable_fp_fusion=False, **options,
            )  # fmt: skip
        ctx.save_for_backward(x, scale_flat, zp_flat, x_in, scale, zero_point)
        ctx.shapes = (scale.shape, zero_point.shape)
        ctx.settings = (qmin, qmax, axis, grad_factor)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, scale, zero_point, *inputs = ctx.saved_tensors
        qmin, qmax, axis, grad_factor = ctx.settings
        if torch.is_grad_enabled():  # create_graph=True
            return *_learnable_backward_by_torch(ctx, grad, *inputs), None, None, None, None
        grad = grad.contiguous()
        options = _launch_options(x, axis)
        block = _block(options["n"])
        parts = max(-(-options["n"] // block), 1)
        dx = torch.empty_like(x)
        dscale = torch.zeros(options["channels"], parts, device=x.device, dtype=torch.float32)
        dzp = torch.zeros_like(dscale)
        if x.numel():
            _triton().lsq_backward_kernel[(options["channels"], parts)](
                x, grad, dx, dscale, dzp, scale, zero_point, grad_factor=grad_factor,
                QMIN=qmin, QMAX=qmax, PER_TENSOR=axis is None, BLOCK=block,
                enable_fp_fusion=False, **options,
            )  # fmt: skip
        scale_shape, zp_shape = ctx.shapes
        dscale, dzp = dscale.sum(dim=1).reshape(scale_shape), dzp.sum(dim=1).reshape(zp_shape)
        return dx, dscale, dzp, None, None, None, None
