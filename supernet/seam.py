"""What the registry's families share (``registry.py`` holds the entries): the training settings
every family takes, and the samples as a ``Dataset`` for trainers that read one. A module of its
own so that the family adapters (``nb201_entry.py``, ``mlp_entry.py``) need not import the
registry that imports them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from winnow.search_space.datasets import Dataset

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TrainSettings:
    """What every family's training takes (the spec's ``strategy.supernet``, less what the
    stage alone uses)."""

    epochs: int = 5
    max_seconds: float | None = None  # the time budget; None: the epochs alone
    batch_size: int = 64
    seed: int = 0


def tensor_dataset(x: torch.Tensor, y: torch.Tensor) -> Dataset:
    """Normalised training samples as a ``Dataset`` (identity normalisation, no test split, no
    augmentation: the registry's callers pass the samples already normalised), for the
    families whose training reads a ``Dataset``."""
    empty = x[:0]
    one = torch.ones(1)
    return Dataset("supernet", x, y, empty, y[:0], int(y.max()) + 1, 1.0, one * 0, one, False)


def steps_per_epoch(samples: int, batch_size: int) -> int:
    return max(1, samples // batch_size)


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable[Batch]) -> float:
    """Top-1 accuracy (a fraction) of ``model`` in eval mode on ``batches``."""
    model.eval()
    correct = total = 0
    for x, y in batches:
        correct += int((model(x).argmax(-1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a distribution (the teacher's; rows sum to 1), as in-place
    distillation uses."""
    return -(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
