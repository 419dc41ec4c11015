"""Label-gradient alignment (LGA; Mok et al. 2022, "Demystifying the Neural Tangent Kernel from a
Practical Perspective: Can it be trusted for Neural Architecture Search without training?",
CVPR): how well the empirical neural tangent kernel at initialisation, on a batch of real
images, lines up with the kernel of their labels.

The paper's definition: with ``Theta`` the empirical NTK of the batch and ``Y`` the label
kernel (``Y[i, j] = 1`` when images ``i`` and ``j`` share a class, else 0; a +-1 coding differs
by a scale and a shift, which the centering and the normalisation remove), each centred by the
mean of its entries ``mu(.)``::

    LGA = <Theta - mu(Theta), Y - mu(Y)>_F / (||Theta - mu(Theta)||_F ||Y - mu(Y)||_F)

a number in [-1, 1], higher is better. The official repository (``nutellamok/DemystifyingNTK``)
holds a README only, so the NTK is the one of the NTK metrics the paper revisits (TE-NAS's
``get_ntk_n``): ``Theta[i, j] = <d f_i / d theta, d f_j / d theta>`` with ``f_i`` the sum of
image ``i``'s logits, the gradients over every parameter named ``weight`` as there (every
Conv2d/Linear weight, a parametrized one's ``original``, and the norms' scales; no bias), taken
on one training-mode forward of the images (BatchNorm's batch statistics couple them, as there).

Memory: the Jacobian's rows are kept in float32 (``N x P``: 16 images of the largest
NAS-Bench-201 network, 1.5 million weights, take 95 MB) and the Gram accumulated in float64 a
chunk of columns at a time; a Jacobian over ``MAX_JACOBIAN_BYTES`` fails with its size (a
MemoryError, so lga is reported failed) rather than exhaust the machine.

Cost: each image's gradient is a backward through the whole batch's graph (BatchNorm couples
them), so N images cost N backwards of an N-image graph; on this project's CPU a 64-image NTK
of a NAS-Bench-201 network took 50 s. So the NTK is taken on the first ``LGA_SAMPLES`` (16)
images of batch 0, with a forward of their own (the ``ntk`` need of ``winnow.proxies.passes``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

LGA_SAMPLES = 16  # images of batch 0 the NTK is taken on (see the module docstring)
MAX_JACOBIAN_BYTES = 2 * 1024**3  # float32 rows: 16 images of a 33-million-weight network
_GRAM_CHUNK = 1 << 20  # Jacobian columns cast to float64 at a time


def ntk_parameters(model: nn.Module) -> list[Tensor]:
    """TE-NAS's ``'weight' in name`` parameters: each module's own ``weight`` (Conv2d, Linear,
    norms) and, for a parametrized weight, its ``original``; not the parametrization's own."""
    chosen = []
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        if "parametrizations" in parts:
            if parts[-2:] == ["weight", "original"]:
                chosen.append(parameter)
        elif parts[-1] == "weight":
            chosen.append(parameter)
    return chosen


def empirical_ntk(
    logits: Tensor,
    weights: Sequence[Tensor],
    chunk: int = _GRAM_CHUNK,
    max_bytes: int = MAX_JACOBIAN_BYTES,
) -> Tensor:
    """``Theta = J J^T`` (float64, N x N), ``J[i]`` the gradient of ``logits[i].sum()`` with
    respect to every weight: one backward per image, as TE-NAS's ``get_ntk_n``. (Autograd's
    batched backward, ``is_grads_batched``, gives the same numbers and was no faster on CPU.)
    ``J`` is held in float32 and multiplied ``chunk`` columns at a time in float64; a ``J`` of
    more than ``max_bytes`` raises MemoryError before any backward."""
    size = logits.shape[0] * sum(w.numel() for w in weights) * 4
    if size > max_bytes:
        raise MemoryError(
            f"lga's Jacobian would take {size / 1e9:.2f} GB ({logits.shape[0]} images x "
            f"{size // 4 // logits.shape[0]} weights in float32), over {max_bytes / 1e9:.2f} GB"
        )
    rows = []
    for i in range(logits.shape[0]):
        grads = torch.autograd.grad(
            logits[i].sum(), list(weights), retain_graph=True, allow_unused=True
        )
        rows.append(torch.cat([g.detach().flatten().float() for g in grads if g is not None]))
    jacobian = torch.stack(rows)
    del rows
    gram = torch.zeros(len(jacobian), len(jacobian), dtype=torch.float64, device=jacobian.device)
    for columns in jacobian.split(chunk, dim=1):
        columns = columns.double()
        gram += columns @ columns.T
    return gram


def batch_ntk(model: nn.Module, x: Tensor) -> Tensor:
    """The empirical NTK of ``model`` over :func:`ntk_parameters` on the first ``LGA_SAMPLES``
    images of ``x``, from a forward of those images alone (training mode: their batch
    statistics)."""
    logits = model(x[:LGA_SAMPLES])
    return empirical_ntk(logits, ntk_parameters(model))


def label_kernel(labels: Tensor) -> Tensor:
    """``Y[i, j] = 1`` where labels ``i`` and ``j`` are equal, else 0 (float64)."""
    return (labels[:, None] == labels[None, :]).double()


def lga(ntk: Tensor, labels: Tensor) -> float:
    """LGA of an NTK (N x N) and the batch's integer labels (N): the cosine between the
    mean-centred NTK and the mean-centred label kernel. Undefined (NaN) when every label is the
    same or the NTK is constant."""
    theta = ntk.double()
    y = label_kernel(labels.to(theta.device))
    theta, y = theta - theta.mean(), y - y.mean()
    return float((theta * y).sum() / (theta.norm() * y.norm()))
