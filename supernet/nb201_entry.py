"""The ``nb201`` family's adapters for ``registry.SUPERNETS``: the one-shot supernet of ``nb201.py``
trained by ``nb201_training.train_supernet`` (SPOS), scored by inherited accuracy.

What it ranks: the cell, under the supernet's own BatchNorm and SGD (``nb201.py``); a joint
space's normalization, optimizer and quantization choices are not shared, so every candidate of
a cell gets that cell's score. Built at the space's size (``channels``, ``cells_per_stage``;
``resize``: the supernet at the depth ``strategy.supernet.cells_per_stage``, whose candidates
are scored by their cell at its depth) over its ``ops``, with the input channels of the task;
uniform sampling, no entanglement (the family's defaults). Training: ``settings.epochs``
epochs of the samples as steps, within ``settings.max_seconds``; the samples come normalised,
so the crop-and-flip augmentation of the benchmark's own runs (``bench supernet``) is not
applied here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from winnow.search_space.candidate import Candidate
from winnow.search_space.spec import SearchSpace
from winnow.search_space.trial import EpochCallback
from winnow.supernet.batchnorm import DEFAULT_BATCHES
from winnow.supernet.macro_training import inherited_accuracy
from winnow.supernet.seam import Batch, TrainSettings, steps_per_epoch, tensor_dataset


def build(space: SearchSpace, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    from winnow.supernet.nb201 import NB201Supernet

    arch = space.architecture
    return NB201Supernet(
        num_classes,
        in_channels=input_shape[0],
        channels=arch.channels,
        cells_per_stage=arch.cells_per_stage,
        ops=tuple(arch.ops),
    )


def train(
    supernet: nn.Module,
    space: SearchSpace,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    on_epoch: EpochCallback | None,
    checkpoint: Path | None,
) -> int:
    from winnow.supernet import nb201_training

    per_epoch = steps_per_epoch(len(y), settings.batch_size)
    spos = nb201_training.TrainSettings(batch_size=settings.batch_size, seed=settings.seed)
    report = nb201_training.train_supernet(
        supernet,
        tensor_dataset(x, y),
        spos,
        steps=settings.epochs * per_epoch,
        seconds=settings.max_seconds,
        checkpoint=checkpoint,
        checkpoint_every=per_epoch,  # saved before the epoch is reported
        on_epoch=on_epoch,
    )
    return report.steps


def resize(space: SearchSpace, cells_per_stage: int) -> SearchSpace:
    """The space with ``cells_per_stage`` cells a stage: the supernet built over it is that
    deep (``bench supernet``'s figures were taken at one cell a stage; a full-depth supernet
    trains about 5x fewer epochs in the same time; no comparison of depths is recorded)."""
    arch = space.architecture.model_copy(update={"cells_per_stage": cells_per_stage})
    return space.model_copy(update={"architecture": arch})


def score(
    supernet: nn.Module,
    candidate: Candidate,
    train_batches: Iterable[Batch],
    val_batches: Iterable[Batch],
    bn_batches: int = DEFAULT_BATCHES,
) -> float:
    """The inherited accuracy of the candidate's cell at the supernet's depth (the space's
    own, unless ``resize`` set another depth)."""
    # always set: a candidate without the field would be read at the family's default depth
    # (``NB201Supernet._cell``: 5), not at this supernet's
    arch = candidate.architecture | {"cells_per_stage": supernet.cells_per_stage}
    candidate = candidate.model_copy(update={"architecture": arch})
    return inherited_accuracy(supernet, candidate, train_batches, val_batches, bn_batches)
