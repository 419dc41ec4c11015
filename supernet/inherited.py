"""Inherited accuracy: a candidate scored with the supernet's weights, on a validation split.

The validation split is carved from the training data (``carve_validation``), never the test
split that trained candidates are scored on: the carved dataset has no test images at all. A
candidate's score: extract its subnet (``get_active_subnet``), re-estimate its BatchNorm
statistics on a few fixed training batches (``batchnorm.recalibrate_batchnorm``; the number of
batches is a setting), then its accuracy and loss on the validation split in eval mode. Without
re-estimation the subnet evaluates with the supernet's shared running statistics, which belong
to no single path; ``score_candidate`` can report both, for the BatchNorm ablation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from winnow.search_space.candidate import Candidate
from winnow.search_space.datasets import Dataset
from winnow.supernet.base import Supernet
from winnow.supernet.batchnorm import DEFAULT_BATCHES, recalibrate_batchnorm

EVAL_BATCH = 256


def carve_validation(dataset: Dataset, fraction: float = 0.1, seed: int = 0) -> Dataset:
    """``dataset`` with a seeded ``fraction`` of its training split moved out as the validation
    split, which takes the place of the test split (the test images are left out entirely)."""
    n = len(dataset.train_y)
    n_val = int(round(fraction * n))
    if not 0 < n_val < n:
        raise ValueError(f"a validation fraction of {fraction} of {n} training samples is empty")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, rest = order[:n_val].sort().values, order[n_val:].sort().values
    return dataclasses.replace(
        dataset,
        name=f"{dataset.name}[validation {fraction:g} of train, seed {seed}]",
        train_x=dataset.train_x[rest],
        train_y=dataset.train_y[rest],
        test_x=dataset.train_x[val],
        test_y=dataset.train_y[val],
    )


def calibration_batches(
    data: Dataset,
    num_batches: int = DEFAULT_BATCHES,
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> list[torch.Tensor]:
    """Fixed training inputs (seeded, normalised, not augmented) that every candidate's
    BatchNorm statistics are re-estimated on, so candidates differ only in their cell."""
    needed = num_batches * batch_size
    if needed > len(data.train_y):
        raise ValueError(f"{num_batches} batches of {batch_size} need {needed} training samples")
    order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(seed))
    x = data.normalize(data.train_x[order[:needed]]).to(device)
    return list(x.split(batch_size))


@dataclass(frozen=True)
class Validation:
    accuracy: float  # top-1, a fraction
    loss: float  # mean cross-entropy


@dataclass(frozen=True)
class InheritedScore:
    recalibrated: Validation  # after re-estimating BatchNorm statistics: the score
    shared_statistics: Validation | None  # with the supernet's running statistics (ablation)


@torch.no_grad()
def validate(model: nn.Module, data: Dataset, device: torch.device | str = "cpu") -> Validation:
    """Accuracy and loss of ``model`` in eval mode on ``data``'s test split (for carved data:
    the validation split)."""
    model.eval()
    correct, loss = 0, 0.0
    for x, y in data.batches("test", EVAL_BATCH, device):
        logits = model(x)
        correct += int((logits.argmax(1) == y).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
    n = len(data.test_y)
    return Validation(correct / n, loss / n if math.isfinite(loss) else math.inf)


def score_subnet(
    subnet: nn.Module,
    data: Dataset,
    batches: list[torch.Tensor],
    *,
    ablation: bool = False,
    device: torch.device | str = "cpu",
) -> InheritedScore:
    """An extracted subnet's accuracy on ``data``'s validation split after re-estimating its
    BatchNorm statistics on ``batches``; with ``ablation`` also before (shared statistics)."""
    shared = validate(subnet, data, device) if ablation else None
    recalibrate_batchnorm(subnet, batches, len(batches))
    return InheritedScore(validate(subnet, data, device), shared)


def score_candidate(
    supernet: Supernet,
    candidate: Candidate,
    data: Dataset,
    batches: list[torch.Tensor],
    *,
    ablation: bool = False,
    device: torch.device | str = "cpu",
) -> InheritedScore:
    """The candidate's inherited accuracy: its subnet extracted, then ``score_subnet``."""
    subnet = supernet.get_active_subnet(candidate)
    return score_subnet(subnet, data, batches, ablation=ablation, device=device)
