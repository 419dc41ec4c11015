"""The ``mlp`` family's adapters for ``registry.SUPERNETS``: the elastic supernet of ``mlp.py``
trained by the sandwich rule under the space's quantization policies (``sandwich.train``),
scored with its BatchNorm statistics and activation ranges re-estimated
(``quantization.recalibrate``).

**One normalization.** Normalization is not shared across a supernet, and a joint space may
choose among several. The supernet is built with one of them (``supernet_norm``: batchnorm when
the space allows it, else the first of the space's choices that has an elastic-width form), and
a candidate with another norm is scored on its architecture x quantization part under the
supernet's norm (``candidate.model_copy(update={"normalization": ...})``): the same stance as
``nb201`` and ``macro``, which rank under their own BatchNorm. A candidate's optimizer is not
shared either (the supernet trains with its own AdamW).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from winnow.search_space.candidate import Candidate
from winnow.search_space.params import param_values
from winnow.search_space.spec import SearchSpace
from winnow.search_space.trial import EpochCallback
from winnow.supernet.batchnorm import DEFAULT_BATCHES
from winnow.supernet.seam import (
    Batch,
    TrainSettings,
    accuracy,
    steps_per_epoch,
    tensor_dataset,
)

PREFERRED_NORM = "batchnorm"


def supernet_norm(space: SearchSpace) -> str:
    """The normalization the space's supernet is built with (see the module docstring)."""
    from winnow.supernet.mlp import SLICEABLE_NORMS

    choices = param_values(space.normalization) or []
    if PREFERRED_NORM in choices:
        return PREFERRED_NORM
    for norm in choices:
        if norm in SLICEABLE_NORMS:
            return norm
    raise ValueError(
        f"none of the space's norms {choices} has an elastic-width form "
        f"(supported: {', '.join(SLICEABLE_NORMS)}): the mlp supernet cannot cover it"
    )


def build(space: SearchSpace, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    from winnow.supernet.mlp import MLPSupernet

    return MLPSupernet(space.architecture, supernet_norm(space), num_classes, input_shape)


def train(
    supernet: nn.Module,
    space: SearchSpace,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    on_epoch: EpochCallback | None,
    checkpoint: Path | None,
) -> int:
    from winnow.supernet.quantization import sample_policy
    from winnow.supernet.sandwich import SandwichConfig
    from winnow.supernet.sandwich import train as sandwich_train

    per_epoch = steps_per_epoch(len(y), settings.batch_size)
    config = SandwichConfig(
        steps=settings.epochs * per_epoch, batch_size=settings.batch_size, seed=settings.seed
    )
    report = sandwich_train(
        supernet,
        tensor_dataset(x, y),
        config,
        lambda rng: sample_policy(space, rng),
        minutes=None if settings.max_seconds is None else settings.max_seconds / 60,
        checkpoint=checkpoint,
        checkpoint_every=per_epoch,
        on_progress=_per_epoch(on_epoch, per_epoch, settings.epochs),
        progress_every=per_epoch,
    )
    return report.steps


def _per_epoch(on_epoch: EpochCallback | None, per_epoch: int, epochs: int) -> Any:
    """``sandwich.train``'s progress (every ``per_epoch`` steps) as epoch reports: the epoch's
    mean loss and the epoch's own seconds."""
    if on_epoch is None:
        return None
    last = [0.0]

    def report(step: int, steps: int, loss: float, seconds: float) -> None:
        on_epoch(math.ceil(step / per_epoch), epochs, loss, seconds - last[0])
        last[0] = seconds

    return report


@torch.no_grad()
def score(
    supernet: nn.Module,
    candidate: Candidate,
    train_batches: Iterable[Batch],
    val_batches: Iterable[Batch],
    bn_batches: int = DEFAULT_BATCHES,
) -> float:
    """Top-1 accuracy (a fraction) on ``val_batches`` of the candidate's architecture x
    quantization under the supernet's norm, its BatchNorm statistics and activation ranges
    re-estimated on the first ``bn_batches`` training batches (0: the supernet's own)."""
    from winnow.supernet.quantization import recalibrate

    candidate = candidate.model_copy(update={"normalization": supernet.normalization})
    subnet = supernet.get_active_subnet(candidate)
    if bn_batches > 0:
        recalibrate(subnet, (x for x, _ in train_batches), bn_batches)
    return accuracy(subnet, val_batches)


def covers(space: SearchSpace) -> dict[str, Any]:
    """The architecture section, the supernet's norm and the quantization axis it trains under."""
    return {
        "architecture": space.architecture.model_dump(mode="json"),
        "normalization": supernet_norm(space),
        "quantization": space.quantization.model_dump(mode="json"),
    }
