"""Which families have a supernet, and how the engine builds, trains and scores with one.

``SUPERNETS`` maps a family name (``macro``, ``nb201``, ``mlp``) to a :class:`SupernetEntry`:
its functions, so that the engine and its workers (``workers/supernet_trials.py``) handle
every family's supernet the same way. A family plugs in with its adapter functions in a module
of its own (``nb201_entry.py``, ``mlp_entry.py``: they import ``seam.py``, never this module)
and one ``SUPERNETS.register`` line at the foot of this one, so that the registry is complete
once ``winnow.supernet.registry`` is imported, as the spec checks need (``macro``'s adapters
are here). ``score`` defaults to ``inherited_accuracy``, which asks only for the supernet's
``get_active_subnet``.

The entry's functions (``space``: the whole ``SearchSpace``, since a supernet may depend on more
than the architecture section, as ``mlp``'s does on the norms and the quantization axis):

- ``build(space, num_classes, input_shape)``: a fresh supernet (an ``nn.Module``) for the
  space (its ``architecture`` section, e.g. ``MacroSpace``), the task's classes and input shape.
- ``train(supernet, space, x, y, settings, on_epoch, checkpoint)``: train it in place on
  normalised training samples within ``settings.epochs`` and ``settings.max_seconds``, calling
  ``on_epoch(epoch, epochs, loss, seconds)`` after each epoch, resuming from ``checkpoint``
  when that file exists and saving it before each epoch is reported (so a trial killed mid-way
  resumes after the last epoch it reported); returns the optimizer steps done in all.
- ``score(supernet, candidate, train_batches, val_batches, bn_batches)``: the candidate's
  inherited accuracy on the validation batches (carved from the training split), its BatchNorm
  statistics (and whatever else the family re-estimates) taken from the first ``bn_batches``
  training batches.
- ``covers(space)``: what of the space the trained supernet depends on, a JSON-able dict that
  goes into the stored supernet's key (default: the architecture section); a ``ValueError``
  says the supernet cannot cover the space, which the spec check reports at submission.
- ``resize(space, cells_per_stage)``: the space with its networks at that depth, which the
  supernet is then built over (``strategy.supernet.cells_per_stage``; ``supernet_space``);
  None (the default): the family's supernet has no such depth, and the spec check refuses it.

What a supernet ranks: the architecture (x quantization, for ``mlp``) under the supernet's own
normalization and optimizer; neither is shared across a supernet, so a candidate's other choices
are not what its score measures (each family's module says how it treats them).
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
from winnow.search_space.spec import SearchSpace
from winnow.search_space.trial import EpochCallback
from winnow.supernet import mlp_entry, nb201_entry
from winnow.supernet.batchnorm import DEFAULT_BATCHES
from winnow.supernet.macro_training import inherited_accuracy
from winnow.supernet.seam import Batch, TrainSettings, steps_per_epoch

Build = Callable[[SearchSpace, int, tuple[int, ...]], nn.Module]
Train = Callable[
    [
        nn.Module,
        SearchSpace,
        torch.Tensor,
        torch.Tensor,
        TrainSettings,
        EpochCallback | None,
        Path | None,
    ],
    int,
]
Score = Callable[[nn.Module, Candidate, Iterable[Batch], Iterable[Batch], int], float]
Covers = Callable[[SearchSpace], dict[str, Any]]
Resize = Callable[[SearchSpace, int], SearchSpace]


def architecture_section(space: SearchSpace) -> dict[str, Any]:
    """The default ``covers``: a supernet of the architecture section alone."""
    return {"architecture": space.architecture.model_dump(mode="json")}


@dataclass(frozen=True)
class SupernetEntry:
    """How one family's supernet is built, trained and scored with (see the module
    docstring for each function's contract)."""

    build: Build
    train: Train
    score: Score = inherited_accuracy
    covers: Covers = architecture_section
    bn_batches: int = DEFAULT_BATCHES  # the family's default number of BatchNorm batches
    resize: Resize | None = None


def supernet_space(space: SearchSpace, settings: dict[str, Any]) -> SearchSpace:
    """The space a family's supernet is built over: the search's, at the depth of the training
    ``settings``' ``cells_per_stage`` when they have one (checked at submission)."""
    depth = settings.get("cells_per_stage")
    if depth is None:
        return space
    resize = SUPERNETS.get(space.architecture.family).resize
    if resize is None:
        raise ValueError(f"the {space.architecture.family} supernet has no cells per stage")
    return resize(space, depth)


SUPERNETS: Registry[SupernetEntry] = Registry("supernet family")


# --- macro: the elastic OFA / BigNAS supernet ----------------------------------------------------


def _build_macro(space: SearchSpace, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    from winnow.supernet.macro import MacroSupernet

    return MacroSupernet(space.architecture, num_classes, input_shape)


def _train_macro(
    supernet: nn.Module,
    space: SearchSpace,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    on_epoch: EpochCallback | None,
    checkpoint: Path | None,
) -> int:
    from winnow.supernet.macro_training import SandwichSettings, train_supernet

    sandwich = SandwichSettings(batch_size=settings.batch_size, seed=settings.seed)
    steps = settings.epochs * steps_per_epoch(len(y), settings.batch_size)
    report = train_supernet(
        supernet, x, y, sandwich, steps, settings.max_seconds, on_epoch, checkpoint
    )
    return report.steps


SUPERNETS.register("macro", SupernetEntry(build=_build_macro, train=_train_macro))


# --- nb201 and mlp: their adapters live in their own modules ------------------------------------

SUPERNETS.register(
    "nb201",
    SupernetEntry(
        build=nb201_entry.build,
        train=nb201_entry.train,
        score=nb201_entry.score,
        resize=nb201_entry.resize,
    ),
)
SUPERNETS.register(
    "mlp",
    SupernetEntry(
        build=mlp_entry.build, train=mlp_entry.train, score=mlp_entry.score, covers=mlp_entry.covers
    ),
)
