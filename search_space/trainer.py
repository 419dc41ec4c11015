"""The training function's interface: what winnow's own loop (``training.fit``) is, and what a
user's ``task.trainer: "my_pkg.train:fit"`` must be.

A training function is called once per training run (a rung) in the worker, as::

    fitted = fit(model, optimizer, scheduler, data, epochs, on_epoch, checkpoint, max_steps)

- ``model``: the candidate's network, built, quantized and on ``data.device``;
- ``optimizer``: the candidate's optimizer over the model's parameters
  (``optimizers.backward_and_step(optimizer, loss)`` steps it as winnow does, Hessian-based
  optimizers included; a plain ``loss.backward(); optimizer.step()`` serves the others);
- ``scheduler``: the candidate's learning-rate schedule (warmup, then cosine or the chosen
  shape), to be stepped once per optimizer step; its length is the whole training's (with
  continued rungs, the top rung's), so a rung of 3 epochs of a 9-epoch schedule ends at a
  rate above zero;
- ``data``: a :class:`TrainData`: ``data.batches()`` yields one epoch of shuffled
  ``(x, y)`` batches on the device (raw dataset values normalised per channel, with the
  dataset's augmentation), drawn from ``data.generator``; ``data.dataset`` is the whole
  ``Dataset`` (``train_x`` ... ``test_y``, ``num_classes``), ``data.batch_size`` and
  ``data.steps_per_epoch`` what the candidate chose; ``data.epoch_accuracy`` says whether
  the search asks for the test accuracy after every epoch (``task.eval_every_epoch``), which
  ``data.accuracy(model)`` measures as the final accuracy is measured, leaving the training
  untouched (every random generator and the network's mode as they were);
- ``epochs``: the epochs the network has trained in all when the function returns (a resumed
  run trains ``epochs`` less those its checkpoint holds);
- ``on_epoch``: None, or a callback ``on_epoch(epoch, epochs, mean_loss, seconds)`` to call
  after each epoch (epochs counted from the schedule's start): the search's live progress and
  the dashboard's curve while the rung runs. Not calling it costs only the live view;
- ``checkpoint``: None, or a :class:`~winnow.search_space.checkpoints.Checkpoint` to resume
  from and save to. ``checkpoint.load()`` is the state the last run saved (None: start at
  epoch 0) and ``checkpoint.save(state)`` writes one atomically; ``checkpoints.capture`` and
  ``checkpoints.restore`` are winnow's own state (model, optimizer, scheduler, every random
  generator, epochs done, the curve). A function that ignores it trains every rung from
  scratch, for ``epochs`` epochs under the same schedule: its results are still correct, only
  the epochs continuation saves are spent again;
- ``max_steps``: None, or a cap on optimizer steps (a fidelity counted in steps); a function
  may ignore it.

It returns a :class:`Fitted`: the mean training loss of every epoch the network has trained
(a resumed checkpoint's first), how many of them this call ran (``epochs_run``, which the
search's epoch count and ``budget.max_epochs`` use) and, optionally, the accuracy after each
of those epochs (``accuracy``: empty, the default, when not measured; else one value per epoch
of the curve, a resumed checkpoint's first: ``checkpoints.capture(..., accuracy)`` saves them
and ``checkpoints.saved_accuracy`` reads them back). They are the dashboard's learning curve,
never a decision. It raises on a failure (a NaN loss, out of memory): the trial ends
``failed`` with the exception's message and the search goes on.

Evaluation stays winnow's: after the function returns, the worker measures test accuracy,
latency and the costs as for every candidate, so a front found with a user's trainer means
what any other front means.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from winnow.search_space.accuracy import epoch_accuracy
from winnow.search_space.checkpoints import Checkpoint
from winnow.search_space.datasets import Dataset
from winnow.search_space.trial import EpochCallback
from winnow.search_space.user_code import UserCodeError, import_object

if TYPE_CHECKING:
    from winnow.search_space.candidate import Candidate

# The arguments a training function is called with, in order (positionally: a user's
# function may name them as it likes).
ARGUMENTS = (
    "model",
    "optimizer",
    "scheduler",
    "data",
    "epochs",
    "on_epoch",
    "checkpoint",
    "max_steps",
)
CALL = f"fit({', '.join(ARGUMENTS)})"


@dataclass(frozen=True)
class TrainData:
    """What one training draws its batches from: the dataset, the batch size, the device, the
    shuffling (and augmenting) generator, the candidate whose precision the forward pass
    takes (``accelerate.autocast``), and whether the test accuracy is asked for after every
    epoch (``epoch_accuracy``, on by default as ``task.eval_every_epoch`` is; :meth:`accuracy`
    measures it). ``final_follows`` is winnow's own loop's: its caller measures the final
    accuracy as soon as it returns, which is the last epoch's (``training.LEFT_TO_CALLER``);
    a user's trainer gets False and reports every epoch's."""

    dataset: Dataset
    batch_size: int
    device: torch.device
    generator: torch.Generator
    candidate: Candidate
    epoch_accuracy: bool = True
    final_follows: bool = False

    def accuracy(self, model: nn.Module) -> float:
        """The test accuracy now, measured as the final one is (``accuracy.epoch_accuracy``):
        no generator drawn from, the network's mode restored."""
        return epoch_accuracy(model, self.dataset, self.device)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.dataset.train_y) / self.batch_size)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.dataset.batches("train", self.batch_size, self.device, self.generator)


@dataclass(frozen=True)
class Fitted:
    """What a training function did: the mean loss of every epoch the network has trained
    (those of a resumed checkpoint first), how many of them this call ran, and the test
    accuracy after each epoch of ``curve`` (empty: not measured)."""

    curve: list[float]
    epochs_run: int
    accuracy: list[float] = field(default_factory=list)


@runtime_checkable
class TrainFunction(Protocol):
    """A training function (see the module docstring): winnow's ``training.fit``, or the
    user's ``task.trainer``."""

    def __call__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        data: TrainData,
        epochs: int,
        on_epoch: EpochCallback | None = None,
        checkpoint: Checkpoint | None = None,
        max_steps: int | None = None,
    ) -> Fitted: ...


def load_trainer(path: str) -> TrainFunction:
    """The user's training function at ``path`` (``"my_pkg.train:fit"``), imported and checked
    to take the interface's arguments: ``UserCodeError`` saying what is wrong."""
    function = import_object(path)
    check_signature(path, function)
    return function  # type: ignore[return-value]  # checked above as far as Python can


def check_signature(path: str, function: Callable[..., object]) -> None:
    """``UserCodeError`` unless ``function`` can be called with the interface's arguments
    (positionally), told without calling it."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # a builtin or extension without a signature: the call will tell
    try:
        signature.bind(*ARGUMENTS)
    except TypeError as error:
        raise UserCodeError(
            f"{path}: a training function is called as {CALL}; {path.partition(':')[2]}"
            f"{signature} cannot take that ({error})"
        ) from None


def fitted_of(path: str, returned: object, epochs: int, max_steps: int | None = None) -> Fitted:
    """The ``Fitted`` a user's function returned, checked: anything else is a
    ``UserCodeError`` naming what came back. Without ``max_steps`` the curve must hold every
    one of the ``epochs`` (a step cap may end it sooner), and the call must have trained at
    least one epoch unless its checkpoint already held them all."""
    if not isinstance(returned, Fitted):
        raise UserCodeError(
            f"{path} returned {type(returned).__name__}, not a "
            "winnow.search_space.trainer.Fitted(curve, epochs_run)"
        )
    curve = [float(loss) for loss in returned.curve]
    run = returned.epochs_run
    if isinstance(run, bool) or not isinstance(run, numbers.Integral):
        raise UserCodeError(
            f"task.trainer {path} returned epochs_run={run!r} ({type(run).__name__}): "
            "it must be an int, the epochs this call trained"
        )
    if not 0 <= run <= len(curve) or len(curve) > epochs:
        raise UserCodeError(
            f"task.trainer {path} returned a curve of {len(curve)} epochs and epochs_run="
            f"{run}: asked for {epochs} epochs in all, the curve holds every "
            "epoch trained (a resumed checkpoint's first) and epochs_run those of this call"
        )
    if max_steps is None and len(curve) != epochs:
        raise UserCodeError(
            f"task.trainer {path} returned a curve of {len(curve)} epochs: asked for {epochs} "
            "epochs in all (no step cap), the curve must hold the loss of every one"
        )
    if run < 1 and len(curve) < epochs:
        raise UserCodeError(
            f"task.trainer {path} returned epochs_run=0 with a curve of {len(curve)} of "
            f"{epochs} epochs: a call whose checkpoint does not hold every epoch must train"
        )
    return Fitted(curve, int(run), _accuracy_of(path, returned.accuracy, len(curve)))


def _accuracy_of(path: str, returned: object, epochs: int) -> list[float]:
    """A user's per-epoch accuracies, checked: none, or a fraction for every epoch of the
    curve (what the dashboard draws against the loss), as a list, a tuple, or a 1-D numpy
    array or tensor."""
    values = _fractions(path, returned)
    if values and len(values) != epochs:
        raise UserCodeError(
            f"task.trainer {path} returned {len(values)} accuracies for a curve of {epochs} "
            "epochs: give one per epoch of the curve, or none"
        )
    outside = [v for v in values if not 0.0 <= v <= 1.0]  # NaN too
    if outside:
        raise UserCodeError(
            f"task.trainer {path} returned accuracy {outside[0]!r}: each must be a fraction "
            "in [0, 1] (correct / total, not a percentage)"
        )
    return values


def _fractions(path: str, returned: object) -> list[float]:
    if returned is None:
        return []
    if isinstance(returned, torch.Tensor | np.ndarray):
        # an array's truth value is ambiguous and a tensor's raises: read it as its values
        returned = returned.tolist() if returned.ndim == 1 else returned
    try:
        return [float(v) for v in returned]  # type: ignore[union-attr]
    except (TypeError, ValueError, RuntimeError):
        raise UserCodeError(
            f"task.trainer {path} returned accuracy={returned!r}: it must be a sequence of "
            "fractions (a list, or a 1-D array or tensor), one per epoch of the curve, or empty"
        ) from None
