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
image ``i``'s logits, the gradients over every Conv2d/Linear weight, taken on one
training-mode forward of the images (BatchNorm's batch statistics couple them, as there).

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


def empirical_ntk(logits: Tensor, weights: Sequence[Tensor]) -> Tensor:
    """``Theta = J J^T`` (float64, N x N), ``J[i]`` the gradient of ``logits[i].sum()`` with
    respect to every weight: one backward per image, as TE-NAS's ``get_ntk_n``. (Autograd's
    batched backward, ``is_grads_batched``, gives the same numbers and was no faster on CPU.)"""
    rows = []
    for i in range(logits.shape[0]):
        grads = torch.autograd.grad(
            logits[i].sum(), list(weights), retain_graph=True, allow_unused=True
        )
        rows.append(torch.cat([g.detach().flatten().double() for g in grads if g is not None]))
    jacobian = torch.stack(rows)
    return jacobian @ jacobian.T


def batch_ntk(model: nn.Module, x: Tensor, weights: Sequence[Tensor]) -> Tensor:
    """The empirical NTK of ``model`` on the first ``LGA_SAMPLES`` images of ``x``, from a
    forward of those images alone (training mode: their batch statistics)."""
    logits = model(x[:LGA_SAMPLES])
    return empirical_ntk(logits, weights)


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
