"""MeCo (Jiang et al. 2023, "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via
Minimum Eigenvalue of Correlation", NeurIPS), as its official code (``HamsterMimi/MeCo``,
``get_score`` with ``measure='meco'``) computes it.

A forward hook on every module of the network reads the module's output for the FIRST image of
the batch only (the code's ``data_output[0]``: "one data"), a ``C x ...`` map, flattens it to
``C`` rows (one per channel) and takes the smallest eigenvalue of the rows' Pearson correlation
matrix (``torch.corrcoef``, NaN and inf entries set to 0). The score is the sum over modules,
leaving out NaN and inf terms. Higher is better.

Containers are hooked too, as there (an ``nn.Sequential`` counts its last child's output again);
so are the network itself and its classifier, whose output for one image is a vector and adds 0.
A model with no output of two or more channels of two or more values (an MLP: every output a
vector) would score 0 whatever its architecture; there meco fails rather than tie every one.
Modules inside a weight parametrization (they output weights, not features) are skipped, and so
are outputs with fewer than two rows (``corrcoef`` of one row is a scalar; the code would fail).
The hooks ride on the shared training-mode forward of batch 0 (``winnow.proxies.passes``,
the ``meco`` need), on the network's own initialisation (the code's default ``init_w_type``
``none``). One difference: the code's NAS-Bench-201 script forwards that one image ALONE
(``--batch_size 1``, training mode, so BatchNorm normalises it by its own spatial statistics);
here it goes through with the rest of batch 0, which costs no forward of its own (and works
where a batch of one cannot, BatchNorm1d). On the 100 cells of ``bench proxies --sample 100
--seed 0`` the two rank alike: Spearman 0.914 here, 0.913 with the image alone.
"""

from __future__ import annotations

import torch
from torch import Tensor


def meco_term(output: Tensor) -> Tensor | None:
    """One module's term: the smallest eigenvalue of the channel correlation of the first
    image's output (float64), or None when that output has fewer than two rows, or fewer than
    two values per row (every correlation NaN: the code sets them to 0 and adds 0)."""
    first = output[0].detach()
    if first.dim() == 0 or first.shape[0] < 2:
        return None
    rows = first.reshape(first.shape[0], -1).double()
    if rows.shape[1] < 2:
        return None
    corr = torch.corrcoef(rows).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    # eigvalsh rather than the code's eig: the matrix is symmetric, its eigenvalues real.
    return torch.linalg.eigvalsh(corr).min()


def meco(terms: list[Tensor]) -> float:
    """The sum of the finite module terms."""
    if not terms:  # a flat model (an MLP): the code's score would be 0 for every network
        raise ValueError(
            "meco found no module output with two or more channels of two or more values each"
        )
    values = torch.stack(terms).cpu()
    return float(values[torch.isfinite(values)].sum())
