"""The torch fallbacks of ``norms.py``: what winnow computed before its kernels, torch only.

Each function has the name of the ``norms`` entry point it stands in for (whose
``torch_fallback`` it is), so that the pytorch export carries it into ``model.py`` in place of
that entry point: an exported network computes exactly what winnow's computes on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The norm kernels hold a position's channels in one tile (norms_triton); kept here, beside
# the fallbacks, so that the entry points (norms) and the kernels read it without a cycle.
MAX_CHANNELS = 8192


def rms_norm_channels(
    x: torch.Tensor, weight: torch.Tensor | None = None, eps: float | None = None
) -> torch.Tensor:
    """``nn.RMSNorm`` over dim 1: on ``x`` itself if [N, C], else on its channels-last view
    (for NCHW the ``permute(0, 2, 3, 1)`` view), moved back."""
    if x.dim() == 2:
        return F.rms_norm(x, (x.shape[1],), weight, eps)
    return F.rms_norm(x.movedim(1, -1), (x.shape[1],), weight, eps).movedim(-1, 1)


def layer_norm_channels(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``nn.LayerNorm`` over dim 1, as ``rms_norm_channels``."""
    if x.dim() == 2:
        return F.layer_norm(x, (x.shape[1],), weight, bias, eps)
    return F.layer_norm(x.movedim(1, -1), (x.shape[1],), weight, bias, eps).movedim(-1, 1)


def batch_norm_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(mean, biased var)`` over all dims but 1 (``torch.var_mean``), in
    ``statistics_dtype(x.dtype)``."""
    x = x.to(statistics_dtype(x.dtype))
    var, mean = torch.var_mean(x, dim=(0, *range(2, x.dim())), correction=0)
    return mean, var


def statistics_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for the half types (BatchNorm keeps its statistics in fp32), else ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
