"""Which families have a supernet, and how the engine builds, trains and scores with one.

``SUPERNETS`` maps a family name (``macro``, ``nb201``, ``mlp``) to a :class:`SupernetEntry`:
three functions, so that the engine and its workers (``workers/supernet_trials.py``) handle
every family's supernet the same way. A family plugs in with a few lines in its own module::

    from winnow.supernet.registry import SUPERNETS, SupernetEntry

    SUPERNETS.register("nb201", SupernetEntry(build=build_nb201, train=train_nb201))

and one import line at the foot of this module (the registry is complete once
``winnow.supernet.registry`` is imported, as the spec checks need). ``score`` defaults to
``inherited_accuracy``, which asks only for the supernet's ``get_active_subnet``.

The entry's functions:

- ``build(architecture, num_classes, input_shape)``: a fresh supernet (an ``nn.Module``) for the
  space's ``architecture`` section (e.g. ``MacroSpace``), the task's classes and input shape.
- ``train(supernet, x, y, settings, on_epoch, checkpoint)``: train it in place on normalised
  training samples within ``settings.epochs`` and ``settings.max_seconds``, calling
  ``on_epoch(epoch, epochs, loss, seconds)`` after each epoch, resuming from ``checkpoint``
  when that file exists and saving it after every epoch (so a trial killed mid-way resumes);
  returns the optimizer steps done in all.
- ``score(supernet, candidate, train_batches, val_batches, bn_batches)``: the candidate's
  inherited accuracy on the validation batches (carved from the training split), its BatchNorm
  statistics re-estimated on the first ``bn_batches`` training batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from winnow.search_space.candidate import Candidate
from winnow.search_space.registry import Registry
from winnow.search_space.trial import EpochCallback
from winnow.supernet.batchnorm import DEFAULT_BATCHES
from winnow.supernet.macro_training import inherited_accuracy

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TrainSettings:
    """What every family's training takes (the spec's ``strategy.supernet``, less what the
    stage alone uses)."""

    epochs: int = 5
    max_seconds: float | None = None  # the time budget; None: the epochs alone
    batch_size: int = 64
    seed: int = 0


Build = Callable[[Any, int, tuple[int, ...]], nn.Module]
Train = Callable[
    [nn.Module, torch.Tensor, torch.Tensor, TrainSettings, EpochCallback | None, Path | None], int
]
Score = Callable[[nn.Module, Candidate, Iterable[Batch], Iterable[Batch], int], float]


@dataclass(frozen=True)
class SupernetEntry:
    """How one family's supernet is built, trained and scored with (see the module
    docstring for each function's contract)."""

    build: Build
    train: Train
    score: Score = inherited_accuracy
    bn_batches: int = DEFAULT_BATCHES  # the family's default number of BatchNorm batches


SUPERNETS: Registry[SupernetEntry] = Registry("supernet family")


# --- macro: the elastic OFA / BigNAS supernet ----------------------------------------------------


def _build_macro(architecture: Any, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    from winnow.supernet.macro import MacroSupernet

    return MacroSupernet(architecture, num_classes, input_shape)


def _train_macro(
    supernet: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    on_epoch: EpochCallback | None,
    checkpoint: Path | None,
) -> int:
    from winnow.supernet.macro_training import SandwichSettings, train_supernet

    sandwich = SandwichSettings(batch_size=settings.batch_size, seed=settings.seed)
    steps = settings.epochs * max(1, len(y) // settings.batch_size)
    report = train_supernet(
        supernet, x, y, sandwich, steps, settings.max_seconds, on_epoch, checkpoint
    )
    return report.steps


SUPERNETS.register("macro", SupernetEntry(build=_build_macro, train=_train_macro))
