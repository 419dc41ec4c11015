"""Activation- and Jacobian-based zero-cost proxies, as formulas: NASWOT and jacob_cov.

Both score how differently a network treats the images of one batch at initialisation. The
codes and the Jacobian come from ``winnow.proxies.passes``.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Above this many units a +-1 dot product is no longer exact in float32 (24-bit mantissa).
_FLOAT32_EXACT = 2**24

JACOB_COV_K = 1e-5  # Mellor et al. 2020 (v1) and foresight


def naswot_kernel(codes: Tensor) -> Tensor:
    """NASWOT's kernel of one layer's binary codes ``c`` (N samples x D units, 0/1):
    ``K = c c^T + (1 - c)(1 - c)^T``, i.e. ``K[i, j]`` is the number of units on which samples
    ``i`` and ``j`` agree (``D`` minus their Hamming distance). Returned in float64.

    Computed as ``(D + s s^T) / 2`` with ``s = 2c - 1`` (one matrix product instead of two; the
    same integers), in float32 while that is exact.
    """
    n, d = codes.shape
    dtype = torch.float32 if d < _FLOAT32_EXACT else torch.float64
    signs = codes.to(dtype) * 2 - 1
    return ((signs @ signs.T).double() + d) / 2


def naswot(kernel: Tensor) -> float:
    """NASWOT (Mellor et al. 2021, "Neural Architecture Search without Training", ICML):
    ``log |det K|`` (slogdet) of the kernel summed over every activation layer
    (:func:`naswot_kernel` of the codes ``input > 0``), as the official ``hook_logdet``."""
    return float(torch.linalg.slogdet(kernel.double()).logabsdet)


def jacob_cov(jacobian: Tensor) -> float:
    """jacob_cov (Mellor et al. 2020, "Neural Architecture Search without Training", arXiv v1;
    foresight's ``jacob_cov``): with ``J`` the gradient of the summed network output with respect
    to each input of the batch (one row per sample), ``C`` the correlation matrix of the rows and
    ``v`` its eigenvalues, ``-sum(log(v + k) + 1 / (v + k))`` with ``k = 1e-5``.

    ``eigvalsh`` (the reference uses ``eig``) because ``C`` is symmetric: real eigenvalues. A
    constant row (a sample the output ignores) makes ``C`` undefined and the score NaN.
    """
    rows = jacobian.detach().flatten(1).double()
    eigenvalues = torch.linalg.eigvalsh(torch.corrcoef(rows))
    shifted = eigenvalues + JACOB_COV_K
    return float(-(shifted.log() + shifted.reciprocal()).sum())
