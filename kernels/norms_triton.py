"""Triton kernels of ``norms.py``: channel LayerNorm / RMSNorm forward and backward, and the
per-channel statistics pass of BatchNorm. Imported only when ``backend.use_triton`` chooses them.

Every kernel reads its tensor through a ``Layout``: positions ``(n, s)`` and channels ``c`` at
``n * stride_n + s * stride_s + c * stride_c``. NCHW memory is ``(C*S, 1, S)`` (S = H*W), so no
permute copy is made; channels_last is ``(S*C, C, 1)``; an ``[N, C]`` matrix is one "sample"
of N positions, ``(0, C, 1)``. A program loads a ``[BLOCK_C, BLOCK_S]`` tile.

The structure follows Liger-Kernel's RMSNorm and LayerNorm (the row's rstd, and for LayerNorm
its mean, saved by the forward; the backward computes dx from them and writes each program's
partial dweight / dbias, which torch then sums), written here for a strided channel axis.

Compiled versus interpreted: the divisions and square roots are the IEEE round-to-nearest ones
(``div_rn``, ``sqrt_rn``), as numpy's in the interpreter; what can still differ compiled is the
order of the in-tile sums (``tl.sum``'s tree) and fused multiply-adds, i.e. a few ulp in fp32.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from winnow.kernels import backend
from winnow.kernels.norms_torch import MAX_CHANNELS  # the entry points fall back beyond it

# Elements of one program's tile. Compiled, 4096 fp32 values keep a tile in registers at 4-8
# warps; the interpreter runs each program in Python over numpy, so there a tile is large and
# the programs few (the tests' shapes then run in one or a few programs).
TILE = 4096
INTERPRETER_TILE = 1 << 17
# Passed to every launch (triton 3.9 warns when it is left to the default, which 3.10 turns
# off): FMA contraction on, as the kernels were written and measured; the tolerances against
# the fallback (1e-5) cover its rounding differences.
FP_FUSION = True


class Layout(NamedTuple):
    """Where ``(n, s, c)`` lives: ``samples`` x ``positions`` rows of ``channels`` values."""

    samples: int
    positions: int
    channels: int
    stride_n: int
    stride_s: int
    stride_c: int


def layout(t: torch.Tensor) -> tuple[torch.Tensor, Layout]:
    """``t`` (a copy only if its memory is neither contiguous nor channels_last) and its layout.
    Strides are derived from the shape, since torch leaves those of size-1 dims arbitrary."""
    c = t.shape[1]
    if t.dim() == 2:
        t = t.contiguous()
        return t, Layout(1, t.shape[0], c, 0, c, 1)
    s = t[0, 0].numel()
    if (
        t.dim() == 4
        and not t.is_contiguous()
        and t.is_contiguous(memory_format=torch.channels_last)
    ):
        return t, Layout(t.shape[0], s, c, s * c, c, 1)
    t = t.contiguous()
    return t, Layout(t.shape[0], s, c, c * s, 1, s)


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    if t.dim() == 4 and not t.is_contiguous():
        return torch.channels_last  # ``layout`` kept only these two
    return torch.contiguous_format


def _block(size: int, most: int) -> int:
    # at least 2 wide: defensive (size-1 block dims are a corner of Triton's layouts that no
    # GPU here could check); masks cover the padding
    return max(2, min(triton.next_power_of_2(size), most))


def _blocks(lay: Layout) -> tuple[int, int]:
    block_c = _block(lay.channels, MAX_CHANNELS)
    if block_c < lay.channels:
        raise ValueError(f"the norm kernels hold <= {MAX_CHANNELS} channels, got {lay.channels}")
    tile = INTERPRETER_TILE if backend.interpreting() else TILE
    return block_c, _block(lay.positions, tile // block_c)


def _warps(block_c: int, block_s: int) -> int:
    return 4 if block_c * block_s <= 4096 else 8


@triton.jit
def _div(a, b):
    """IEEE ``a / b`` (``div_rn``), with a scalar ``b`` broadcast to ``a``'s shape first:
    ``div_rn`` does not broadcast compiled (the interpreter's numpy would)."""
    return tl.math.div_rn(a, tl.zeros_like(a) + b)


@triton.jit
def _tile(pid, positions, channels, stride_n, stride_s, stride_c, blocks_per_sample,
          BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):  # fmt: skip
    """Offsets ``[BLOCK_C, BLOCK_S]`` of program ``pid``'s tile, its mask, and its rows."""
    n = pid // blocks_per_sample
    s = (pid % blocks_per_sample) * BLOCK_S + tl.arange(0, BLOCK_S)
    c = tl.arange(0, BLOCK_C)
    mask = (c[:, None] < channels) & (s[None, :] < positions)
    offsets = n * stride_n + s[None, :] * stride_s + c[:, None] * stride_c
    rows = n * positions + s
    return offsets, mask, c, rows, s < positions


@triton.jit
def _norm_forward(
    x_ptr, y_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr,
    positions, channels, count, stride_n, stride_s, stride_c, blocks_per_sample, eps,
    CENTERED: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    """LayerNorm (``CENTERED``) or RMSNorm over the channels of each position, in fp32.
    ``count`` is ``channels`` as a float (an int argument of 1 would arrive as a constexpr)."""
    pid = tl.program_id(0).to(tl.int64)
    offsets, mask, c, rows, row_mask = _tile(
        pid, positions, channels, stride_n, stride_s, stride_c, blocks_per_sample,
        BLOCK_C, BLOCK_S,
    )  # fmt: skip
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if CENTERED:
        mean = _div(tl.sum(x, axis=0), count)
        x = tl.where(mask, x - mean[None, :], 0.0)
        tl.store(mean_ptr + rows, mean, mask=row_mask)
    variance = _div(tl.sum(x * x, axis=0), count)
    rstd = _div(tl.zeros_like(variance) + 1.0, tl.math.sqrt_rn(variance + eps))
    tl.store(rstd_ptr + rows, rstd, mask=row_mask)
    y = x * rstd[None, :]
    if HAS_WEIGHT:
        w = tl.load(w_ptr + c, mask=c < channels, other=0.0).to(tl.float32)
        y = y * w[:, None]
    if HAS_BIAS:
        b = tl.load(b_ptr + c, mask=c < channels, other=0.0).to(tl.float32)
        y = y + b[:, None]
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _norm_backward(
    dy_ptr, x_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_ptr, db_ptr,
    positions, channels, count, stride_n, stride_s, stride_c,
    dy_stride_n, dy_stride_s, dy_stride_c, blocks_per_sample,
    CENTERED: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    """dx of each position; this program's partial dweight / dbias (row ``pid`` of dw / db).

    With ``xhat = (x - mean) * rstd`` and ``g = dy * w``:
    ``dx = rstd * (g - xhat * mean_c(g * xhat) - [CENTERED] mean_c(g))``.
    """
    pid = tl.program_id(0).to(tl.int64)
    offsets, mask, c, rows, row_mask = _tile(
        pid, positions, channels, stride_n, stride_s, stride_c, blocks_per_sample,
        BLOCK_C, BLOCK_S,
    )  # fmt: skip
    dy_offsets, _, _, _, _ = _tile(
        pid, positions, channels, dy_stride_n, dy_stride_s, dy_stride_c, blocks_per_sample,
        BLOCK_C, BLOCK_S,
    )  # fmt: skip
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + dy_offsets, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.load(rstd_ptr + rows, mask=row_mask, other=0.0)
    if CENTERED:
        mean = tl.load(mean_ptr + rows, mask=row_mask, other=0.0)
        x = x - mean[None, :]
    xhat = tl.where(mask, x * rstd[None, :], 0.0)
    g = dy
    if HAS_WEIGHT:
        w = tl.load(w_ptr + c, mask=c < channels, other=0.0).to(tl.float32)
        g = dy * w[:, None]
    inner = _div(tl.sum(g * xhat, axis=0), count)
    dx = g - xhat * inner[None, :]
    if CENTERED:
        dx = dx - _div(tl.sum(g, axis=0), count)[None, :]
    dx = dx * rstd[None, :]
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    if HAS_WEIGHT:
        tl.store(dw_ptr + pid * channels + c, tl.sum(dy * xhat, axis=1), mask=c < channels)
    if HAS_BIAS:
        tl.store(db_ptr + pid * channels + c, tl.sum(dy, axis=1), mask=c < channels)


def _programs(lay: Layout, block_s: int) -> tuple[int, int]:
    blocks_per_sample = triton.cdiv(lay.positions, block_s)
    return lay.samples * blocks_per_sample, blocks_per_sample


def norm_forward(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    centered: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(y, x_used, mean, rstd)``: the normalized tensor (x's dtype and memory format), the
    tensor the kernel read, and the per-position fp32 mean (empty unless ``centered``) and rstd."""
    x, lay = layout(x)
    y = torch.empty_like(x, memory_format=_memory_format(x))
    rows = lay.samples * lay.positions
    rstd = torch.empty(rows, device=x.device, dtype=torch.float32)
    mean = torch.empty(rows if centered else 0, device=x.device, dtype=torch.float32)
    block_c, block_s = _blocks(lay)
    programs, per_sample = _programs(lay, block_s)
    _norm_forward[(programs,)](
        x, y, weight if weight is not None else x, bias if bias is not None else x,
        mean if centered else rstd, rstd,
        lay.positions, lay.channels, float(lay.channels), lay.stride_n, lay.stride_s,
        lay.stride_c, per_sample, eps,
        CENTERED=centered, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
        BLOCK_C=block_c, BLOCK_S=block_s, num_warps=_warps(block_c, block_s),
        enable_fp_fusion=FP_FUSION,
    )  # fmt: skip
    return y, x, mean, rstd


def norm_backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    has_bias: bool,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    centered: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(dx, dweight, dbias)``, the last two fp32, from the forward's ``x`` (as
    ``norm_forward`` returned it)."""
    _, lay = layout(x)
    dy, dy_lay = layout(dy)
    dx = torch.empty_like(x, memory_format=_memory_format(x))
    block_c, block_s = _blocks(lay)
    programs, per_sample = _programs(lay, block_s)
    partial = (programs, lay.channels)
    dw = torch.empty(partial, device=x.device, dtype=torch.float32) if weight is not None else rstd
    db = torch.empty(partial, device=x.device, dtype=torch.float32) if has_bias else rstd
    _norm_backward[(programs,)](
        dy, x, weight if weight is not None else x, mean if centered else rstd, rstd, dx, dw, db,
        lay.positions, lay.channels, float(lay.channels), lay.stride_n, lay.stride_s,
        lay.stride_c, dy_lay.stride_n, dy_lay.stride_s, dy_lay.stride_c, per_sample,
        CENTERED=centered, HAS_WEIGHT=weight is not None, HAS_BIAS=has_bias,
        BLOCK_C=block_c, BLOCK_S=block_s, num_warps=_warps(block_c, block_s),
        enable_fp_fusion=FP_FUSION,
    )  # fmt: skip
    # the partial sums' reduction (torch's, over the programs) in fp32; the caller casts
    return dx, dw.sum(0) if weight is not None else None, db.sum(0) if has_bias else None


# --- BatchNorm statistics ---------------------------------------------------------------------


@triton.jit
def _channel_moments(
    x_ptr, mean_ptr, m2_ptr,
    positions, channels, stride_n, stride_s, stride_c, blocks_per_sample,
    BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    """Per channel of this program's tile: the mean and the sum of squared deviations from it
    (both from the tile held in registers, so one read of x), at row ``pid`` of mean / m2."""
    pid = tl.program_id(0).to(tl.int64)
    c0 = tl.program_id(1) * BLOCK_C
    n = pid // blocks_per_sample
    s = (pid % blocks_per_sample) * BLOCK_S + tl.arange(0, BLOCK_S)
    c = c0 + tl.arange(0, BLOCK_C)
    mask = (c[:, None] < channels) & (s[None, :] < positions)
    offsets = n * stride_n + s[None, :] * stride_s + c[:, None] * stride_c
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    count = tl.sum((s < positions).to(tl.float32), axis=0)
    mean = _div(tl.sum(x, axis=1), count)
    deviation = tl.where(mask, x - mean[:, None], 0.0)
    tl.store(mean_ptr + pid * channels + c, mean, mask=c < channels)
    tl.store(m2_ptr + pid * channels + c, tl.sum(deviation * deviation, axis=1), mask=c < channels)


def channel_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(count, mean, m2)`` per tile and channel (``[tiles, 1]``, ``[tiles, C]`` twice)."""
    x, lay = layout(x)
    tile = INTERPRETER_TILE if backend.interpreting() else TILE
    block_s = _block(lay.positions, tile)
    block_c = _block(lay.channels, tile // block_s)
    programs, per_sample = _programs(lay, block_s)
    mean = torch.empty((programs, lay.channels), device=x.device, dtype=torch.float32)
    m2 = torch.empty_like(mean)
    grid = (programs, triton.cdiv(lay.channels, block_c))
    _channel_moments[grid](
        x, mean, m2, lay.positions, lay.channels, lay.stride_n, lay.stride_s, lay.stride_c,
        per_sample, BLOCK_C=block_c, BLOCK_S=block_s, num_warps=_warps(block_c, block_s),
        enable_fp_fusion=FP_FUSION,
    )  # fmt: skip
    starts = torch.arange(per_sample, device=x.device) * block_s
    count = (lay.positions - starts).clamp(max=block_s).repeat(lay.samples)
    return count.unsqueeze(1), mean, m2
