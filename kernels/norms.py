"""Normalization over the channel axis, and BatchNorm's per-channel statistics: a Triton kernel
(``norms_triton``) or the torch fallback, as ``backend.use_triton`` chooses.

- ``rms_norm_channels(x, weight, eps)``, ``layer_norm_channels(x, weight, bias, eps)``: RMSNorm
  and LayerNorm over the channels (dim 1) of an NCHW tensor at each position, or of an
  ``[N, C]`` matrix. The fallback is what ``search_space.norms`` computed before these existed:
  ``nn.RMSNorm`` / ``nn.LayerNorm`` (``F.rms_norm`` / ``F.layer_norm``) on the channels-last
  view, moved back. The kernel reads NCHW (or channels_last) memory in place, with no permute
  copy, and has its own backward (an ``autograd.Function``).
- ``batch_norm_statistics(x)``: the per-channel mean and biased variance over all dims but 1,
  in one read of ``x`` (the fallback: ``torch.var_mean``).

The fallbacks live in ``norms_torch`` under the same names; each entry point names its own as
``torch_fallback``, which is what the pytorch export carries into ``model.py`` (torch only).

``eps=None`` means what it means to ``nn.RMSNorm``: the machine epsilon of the computation
type (fp32's for fp16, bf16 and fp32 inputs; measured against ``F.rms_norm``). ``weight`` /
``bias`` ``None`` is the module built with ``elementwise_affine=False`` (or ``bias=False``).
fp64 (and empty) inputs take the fallback: the kernels accumulate in fp32.
"""

from __future__ import annotations

import torch

from winnow.kernels import norms_torch
from winnow.kernels.backend import falls_back_to, use_triton

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_CHANNELS = norms_torch.MAX_CHANNELS  # more channels than the kernels hold fall back
# Device types whose autocast runs F.layer_norm and F.rms_norm in fp32 (torch's autocast
# "fp32" list for CUDA); CPU's autocast has no rule for them: they run in the input's dtype.
FP32_UNDER_AUTOCAST = ("cuda",)


@falls_back_to(norms_torch.rms_norm_channels)
def rms_norm_channels(
    x: torch.Tensor, weight: torch.Tensor | None = None, eps: float | None = None
) -> torch.Tensor:
    """``x / sqrt(mean_c(x^2) + eps) * weight`` at each position of ``x`` ([N, C, ...])."""
    if _kernel(x) and x.shape[1] <= MAX_CHANNELS:
        x, weight = _as_autocast_casts(x, weight)
        return _ChannelNorm.apply(x, weight, None, _epsilon(eps), False)
    return norms_torch.rms_norm_channels(x, weight, eps)


@falls_back_to(norms_torch.layer_norm_channels)
def layer_norm_channels(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``(x - mean_c(x)) / sqrt(var_c(x) + eps) * weight + bias`` at each position of ``x``."""
    if _kernel(x) and x.shape[1] <= MAX_CHANNELS:
        x, weight, bias = _as_autocast_casts(x, weight, bias)
        return _ChannelNorm.apply(x, weight, bias, float(eps), True)
    return norms_torch.layer_norm_channels(x, weight, bias, eps)


@falls_back_to(norms_torch.batch_norm_statistics)
def batch_norm_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, var)`` per channel of ``x`` ([N, C, ...]) over all other dims; ``var`` biased
    (divided by the count, as BatchNorm normalizes with), both in ``x``'s dtype, but fp32 for
    fp16 / bf16 ``x`` (what the fp32 running statistics fold in; BatchNorm's own are fp32)."""
    if _kernel(x):
        return _combined_moments(x)
    return norms_torch.batch_norm_statistics(x)


def _kernel(x: torch.Tensor) -> bool:
    return use_triton(x.device) and x.dtype in KERNEL_DTYPES and x.numel() > 0


def _as_autocast_casts(x: torch.Tensor, *params: torch.Tensor | None) -> tuple:
    """``(x, *params)`` cast as autocast casts F.layer_norm's / F.rms_norm's arguments, so that
    the kernel's output has the fallback's dtype: under autocast on a device of
    ``FP32_UNDER_AUTOCAST``, floating tensors other than fp64 become fp32 (a differentiable
    cast, as autocast's); elsewhere unchanged."""
    device = x.device.type
    tensors = (x, *params)
    if device not in FP32_UNDER_AUTOCAST or not torch.is_autocast_enabled(device):
        return tensors
    return tuple(
        t.float() if t is not None and t.is_floating_point() and t.dtype != torch.float64 else t
        for t in tensors
    )


def _epsilon(eps: float | None) -> float:
    # F.rms_norm's default: the epsilon of the opmath type (fp32 for half types), not x's
    return float(torch.finfo(torch.float32).eps) if eps is None else float(eps)


class _ChannelNorm(torch.autograd.Function):
    """LayerNorm (``centered``) or RMSNorm over dim 1 by the Triton kernels. The forward saves
    the per-position rstd (and mean); the backward gives dx, dweight and dbias.

    The kernel's backward is not itself differentiable: a backward that builds a graph
    (``create_graph=True``: Sophia's Hessian refresh, GraSP's Hessian-gradient product) goes
    through the torch fallback with autograd instead, so second-order terms are those of eager.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps, centered):
        from winnow.kernels import norms_triton

        y, read, mean, rstd = norms_triton.norm_forward(x, weight, bias, eps, centered)
        # x itself as well as ``read`` (x, or its contiguous copy): the differentiable backward
        # needs the input as autograd knows it
        ctx.save_for_backward(x, read, weight, bias, mean, rstd)
        ctx.eps, ctx.centered = eps, centered
        return y

    @staticmethod
    def backward(ctx, dy):
        x, read, weight, bias, mean, rstd = ctx.saved_tensors
        if torch.is_grad_enabled():
            return (*_fallback_backward(ctx, dy, x, weight, bias), None, None)
        from winnow.kernels import norms_triton

        dx, dweight, dbias = norms_triton.norm_backward(
            dy, read, weight, bias is not None, mean, rstd, ctx.centered
        )
        dweight = None if dweight is None else dweight.to(weight.dtype)
        dbias = None if dbias is None else dbias.to(bias.dtype)
        return dx, dweight, dbias, None, None


def _fallback_backward(ctx, dy, x, weight, bias) -> list[torch.Tensor | None]:
    """(dx, dweight, dbias) of the fallback by autograd, keeping the graph (double backward).

    Taken with respect to aliases of the saved inputs (``view_as``: new graph nodes, linked to
    the inputs' history for the second backward), so that each is a partial derivative: with
    respect to the inputs themselves, a bias computed from the weight would add its path twice.
    """
    wanted = [
        t is not None and need
        for t, need in zip((x, weight, bias), ctx.needs_input_grad[:3], strict=True)
    ]
    with torch.enable_grad():
        x, weight, bias = (t if t is None else t.view_as(t) for t in (x, weight, bias))
        if ctx.centered:
            y = norms_torch.layer_norm_channels(x, weight, bias, ctx.eps)
        else:
            y = norms_torch.rms_norm_channels(x, weight, ctx.eps)
        chosen = [t for t, want in zip((x, weight, bias), wanted, strict=True) if want]
        grads = iter(torch.autograd.grad(y, chosen, dy, create_graph=True, allow_unused=True))
    return [next(grads) if want else None for want in wanted]


def _combined_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's per-tile (count, mean, M2) combined per channel (Chan et al. 1979).

    Not one pass of sum and sum of squares: in fp32, ``E[x^2] - E[x]^2`` cancels when the mean is
    large against the spread (activations after a bias or a ReLU; at mean/std ~ 1e3 it keeps no
    correct digit). Each tile's M2 is taken about the tile's own mean while the tile is in
    registers (x is read once), and the tiles are combined exactly as the parallel variance
    formula says, in fp64 (the partials are few: one row per tile).
    """
    from winnow.kernels import norms_triton

    count, mean, m2 = (t.double() for t in norms_triton.channel_moments(x))
    total = count.sum()
    overall = (count * mean).sum(0) / total
    m2 = m2.sum(0) + (count * (mean - overall) ** 2).sum(0)
    dtype = norms_torch.statistics_dtype(x.dtype)
    return overall.to(dtype), (m2 / total).to(dtype)
