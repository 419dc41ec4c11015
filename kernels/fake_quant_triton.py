"""Triton kernels of fake quantization (``kernels/fake_quant.py`` dispatches here, lazily).

One kernel family for per-tensor and per-channel: a tensor is seen as ``[outer, channels,
inner]`` (per-tensor is one channel) and a program works on one channel's elements, so the
observer (min/max), the scale and zero point, quantize-dequantize and the straight-through mask
are one pass over memory. Per channel, one program per channel row reduces its row and then
quantizes it (a weight row is small). Per tensor, the global min/max is needed before any
element is quantized and triton has no grid-wide barrier, so a first launch writes one min/max
partial per program (at most ``MAX_PARTIALS``, a grid-strided loop) and the quantize launch
reduces those few partials in every program before its block. Atomics would need the same
second launch to wait for them, and float atomic min/max is order-free only by luck of the
compare; partials are deterministic and cost one extra read of ``MAX_PARTIALS`` floats.

Exactness (the numerics equal ``torch.fake_quantize_per_{tensor,channel}_affine`` bit for bit):
divisions are ``tl.math.div_rn`` (IEEE; plain ``/`` is approximate when compiled), rounding is
half to even built from ``floor`` (exact for every float32), and kernels are launched with
``enable_fp_fusion=False`` so that compiled code cannot contract ``x * inv_scale`` into a fused
multiply-add with the following subtraction (the interpreter never fuses; compiled code could,
and would then round differently at exact ties). The LSQ backward asks for its FMA explicitly
(``tl.fma``), because torch's own kernel is compiled with one there. What could still differ
compiled: NaN inputs (not specified here), and the order of the LSQ scale/zero-point sums.
"""

from __future__ import annotations

import triton
import triton.language as tl

MAX_PARTIALS = 512  # per-tensor min/max partials: programs of the observer launch, at most


@triton.jit
def _round_half_even(v):
    """``nearbyint`` under round-to-nearest-even. ``v - floor(v)`` is exact for float32 (no
    ``floor(v + 0.5)``: that add can round, e.g. 0.49999997 + 0.5 == 1.0)."""
    r = tl.floor(v)
    frac = v - r
    odd = (r - 2.0 * tl.floor(r * 0.5)) == 1.0
    up = (frac > 0.5) | ((frac == 0.5) & odd)
    return r + up.to(tl.float32)


@triton.jit
def _offsets(channel, j, channels, inner, ROW_CONTIGUOUS: tl.constexpr):
    """Memory offsets of elements ``j`` of ``channel`` in a contiguous ``[outer, channels,
    inner]`` tensor (``ROW_CONTIGUOUS``: outer is 1, so a channel is one run of memory)."""
    if ROW_CONTIGUOUS:
        offsets = channel * inner + j
    else:
        offsets = (j // inner) * channels * inner + channel * inner + j % inner
    return offsets


@triton.jit
def _qparams(
    low,
    high,
    QMIN: tl.constexpr,
    QMAX: tl.constexpr,
    SYMMETRIC: tl.constexpr,
    MIN_SCALE: tl.constexpr,
):
    """winnow's ``quantization_params`` in float32: (scale, zero point as a float)."""
    if SYMMETRIC:
        top = tl.maximum(tl.abs(low), tl.abs(high))
        scale = tl.maximum(tl.math.div_rn(top, QMAX + 0.0), MIN_SCALE)
        zero_point = scale * 0.0
    else:
        low = tl.minimum(low, 0.0)
        high = tl.maximum(high, 0.0)
        scale = tl.maximum(tl.math.div_rn(high - low, QMAX - QMIN + 0.0), MIN_SCALE)
        zero_point = _round_half_even(tl.math.div_rn(-low, scale))
        zero_point = tl.minimum(tl.maximum(zero_point, QMIN), QMAX)
    return scale, zero_point


@triton.jit
def _channel_minmax(
    x_ptr, channel, n, channels, inner, ROW_CONTIGUOUS: tl.constexpr, BLOCK: tl.constexpr
):
    low = tl.full([BLOCK], float("inf"), tl.float32)
    high = tl.full([BLOCK], float("-inf"), tl.float32)
    for start in range(0, n, BLOCK):
        j = start + tl.arange(0, BLOCK)
        inside = j < n
        x = tl.load(x_ptr + _offsets(channel, j, channels, inner, ROW_CONTIGUOUS), mask=inside)
        x = x.to(tl.float32)
        low = tl.minimum(low, tl.where(inside, x, float("inf")))
        high = tl.maximum(high, tl.where(inside, x, float("-inf")))
    return tl.min(low, axis=0), tl.max(high, axis=0)


@triton.jit
def minmax_partials_kernel(x_ptr, low_ptr, high_ptr, n, BLOCK: tl.constexpr):
    """Per-tensor observer, pass 1: program p writes the min/max of blocks p, p + P, ..."""
    pid = tl.program_id(0)
    step = tl.num_programs(0) * BLOCK
    low = tl.full([BLOCK], float("inf"), tl.float32)
    high = tl.full([BLOCK], float("-inf"), tl.float32)
    for start in range(pid * BLOCK, n, step):
        offs = start + tl.arange(0, BLOCK)
        inside = offs < n
        x = tl.load(x_ptr + offs, mask=inside).to(tl.float32)
        low = tl.minimum(low, tl.where(inside, x, float("inf")))
        high = tl.maximum(high, tl.where(inside, x, float("-inf")))
    tl.store(low_ptr + pid, tl.min(low, axis=0))
    tl.store(high_ptr + pid, tl.max(high, axis=0))


@triton.jit
def fake_quant_kernel(
    x_ptr,
    out_ptr,
    mask_ptr,
    low_ptr,
    high_ptr,
    n,
    channels,
    inner,
    n_ranges,
    QMIN: tl.constexpr,
    QMAX: tl.constexpr,
    SYMMETRIC: tl.constexpr,
    MIN_SCALE: tl.constexpr,
    OBSERVE: tl.constexpr,
    CODES: tl.constexpr,
    ROW_CONTIGUOUS: tl.constexpr,
    BLOCK: tl.constexpr,
    RANGE_BLOCK: tl.constexpr,
):
    """Grid (channels, parts): program (c, p) quantizes blocks p, p + parts, ... of channel c.

    The range is the channel's own min/max (``OBSERVE``) or the min/max of ``n_ranges`` stored
    values per channel (the per-tensor partials, or a given range). Writes the fake-quantized
    values and the straight-through mask, or (``CODES``) the int32 codes alone.
    """
    channel = tl.program_id(0)
    part = tl.program_id(1)
    if OBSERVE:
        low, high = _channel_minmax(x_ptr, channel, n, channels, inner, ROW_CONTIGUOUS, BLOCK)
    else:
        k = tl.arange(0, RANGE_BLOCK)
        stored = k < n_ranges
        lows = tl.load(low_ptr + channel * n_ranges + k, mask=stored, other=float("inf"))
        highs = tl.load(high_ptr + channel * n_ranges + k, mask=stored, other=float("-inf"))
        low, high = tl.min(lows, axis=0), tl.max(highs, axis=0)
    scale, zero_point = _qparams(low, high, QMIN, QMAX, SYMMETRIC, MIN_SCALE)
    inv_scale = tl.math.div_rn(1.0, scale)
    for start in range(part * BLOCK, n, tl.num_programs(1) * BLOCK):
        j = start + tl.arange(0, BLOCK)
        inside = j < n
        offs = _offsets(channel, j, channels, inner, ROW_CONTIGUOUS)
        x = tl.load(x_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        q = _round_half_even(x * inv_scale) + zero_point  # torch: zp + nearbyint(x * inv)
        code = tl.minimum(tl.maximum(q, QMIN), QMAX)
        if CODES:
            tl.store(out_ptr + offs, code.to(tl.int32), mask=inside)
        else:
            y = (code - zero_point) * scale
            tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=inside)
            kept = (q >= QMIN) & (q <= QMAX)
            tl.store(mask_ptr + offs, kept.to(tl.int8), mask=inside)


@triton.jit
def masked_grad_kernel(grad_ptr, mask_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """The straight-through backward: ``grad * mask`` (a product, as torch's, so an inf or NaN
    gradient where clipped stays NaN exactly as there)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    grad = tl.load(grad_ptr + offs, mask=inside, other=0.0)
    kept = tl.load(mask_ptr + offs, mask=inside, other=0).to(grad.dtype)
    tl.store(out_ptr + offs, grad * kept, mask=inside)


# ------------------------------------------------------------------ LSQ (learnable scale)


@triton.jit
def lsq_forward_kernel(
    x_ptr,
    out_ptr,
    scale_ptr,
    zp_ptr,
    n,
    channels,
    inner,
    QMIN: tl.constexpr,
    QMAX: tl.constexpr,
    ROW_CONTIGUOUS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Fake quantization with a given (learned) scale and float zero point, rounded half to
    even and clamped as torch's ``_fake_quantize_learnable_*`` forward does."""
    channel = tl.program_id(0)
    scale = tl.load(scale_ptr + channel)
    zero_point = tl.load(zp_ptr + channel)
    zero_point = tl.minimum(tl.maximum(_round_half_even(zero_point), QMIN), QMAX)
    inv_scale = tl.math.div_rn(1.0, scale)
    for start in range(tl.program_id(1) * BLOCK, n, tl.num_programs(1) * BLOCK):
        j = start + tl.arange(0, BLOCK)
        inside = j < n
        offs = _offsets(channel, j, channels, inner, ROW_CONTIGUOUS)
        x = tl.load(x_ptr + offs, mask=inside, other=0.0)
        q = _round_half_even(x * inv_scale) + zero_point
        code = tl.minimum(tl.maximum(q, QMIN), QMAX)
        tl.store(out_ptr + offs, (code - zero_point) * scale, mask=inside)


@triton.jit
def lsq_backward_kernel(
    x_ptr,
    grad_ptr,
    dx_ptr,
    dscale_ptr,
    dzp_ptr,
    scale_ptr,
    zp_ptr,
    n,
    channels,
    inner,
    grad_factor,
    QMIN: tl.constexpr,
    QMAX: tl.constexpr,
    PER_TENSOR: tl.constexpr,
    ROW_CONTIGUOUS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """The LSQ gradients (Esser et al. 2020) in torch's convention: dx straight-through inside
    the clamp range; d scale = (x_fq - x) / scale inside, qmin - zp or qmax - zp where clipped;
    d zero point = -scale where clipped, 0 inside; both times ``grad_factor``. Program (c, p)
    writes its partial sums to ``[channels, parts]`` (summed by the caller). torch rounds the
    zero point differently here per tensor (``trunc(clamp(zp + 0.5))``) than per channel."""
    channel = tl.program_id(0)
    part = tl.program_id(1)
    scale = tl.load(scale_ptr + channel)
    zero_point = tl.load(zp_ptr + channel)
    if PER_TENSOR:
        zero_point = tl.minimum(tl.maximum(zero_point + 0.5, QMIN), QMAX)
        zero_point = tl.where(zero_point < 0.0, tl.ceil(zero_point), tl.floor(zero_point))
    else:
        zero_point = tl.minimum(tl.maximum(_round_half_even(zero_point), QMIN), QMAX)
    inv_scale = tl.math.div_rn(1.0, scale)
    dscale_acc = tl.zeros([BLOCK], tl.float32)
    dzp_acc = tl.zeros([BLOCK], tl.float32)
    for start in range(part * BLOCK, n, tl.num_programs(1) * BLOCK):
        j = start + tl.arange(0, BLOCK)
        inside = j < n
        offs = _offsets(channel, j, channels, inner, ROW_CONTIGUOUS)
        x = tl.load(x_ptr + offs, mask=inside, other=0.0)
        grad = tl.load(grad_ptr + offs, mask=inside, other=0.0)
        # torch: nearbyint(zero_point + x * inv_scale), compiled with a fused multiply-add
        q = _round_half_even(tl.fma(x, inv_scale, zero_point))
        below = q < QMIN
        above = q > QMAX
        clipped = below | above
        tl.store(dx_ptr + offs, grad * (~clipped).to(tl.float32), mask=inside)
        # torch: (x_fq - x) with x_fq = (clamp(q) - zp) * scale, contracted into an FMA as well
        error = tl.fma(tl.minimum(tl.maximum(q, QMIN), QMAX) - zero_point, scale, -x)
        inner_term = grad * error * inv_scale * grad_factor
        bound = tl.where(below, QMIN - zero_point, QMAX - zero_point)
        dscale = tl.where(clipped, grad * bound * grad_factor, inner_term)
        dzp = tl.where(clipped, grad * -1.0 * scale * grad_factor, 0.0)
        dscale_acc += tl.where(inside, dscale, 0.0)
        dzp_acc += tl.where(inside, dzp, 0.0)
    slot = channel * tl.num_programs(1) + part
    tl.store(dscale_ptr + slot, tl.sum(dscale_acc, axis=0))
    tl.store(dzp_ptr + slot, tl.sum(dzp_acc, axis=0))
