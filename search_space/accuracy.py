"""A trained network's accuracy: the final measurement (``test_accuracy``) and the same
measurement taken after each epoch (``epoch_accuracy``), for the learning curve a trial stores.

Both measure top-1 accuracy on the dataset's **test** split, in order, without augmentation:
the per-epoch values are that split's learning curve (what optuna-dashboard calls intermediate
values), drawn on the dashboard and never used for a decision (no pruning, no ranking).

``epoch_accuracy`` runs in the middle of a training, so it must leave that training exactly as
it found it: the test batches draw from no generator; ``eval()`` mode freezes BatchNorm's
running statistics, dropout and the quantization observers (each updates only in training
mode); ``torch.random.fork_rng`` gives back torch's CPU and CUDA generators as they were, and
numpy's and Python's are put back by hand (``fork_rng`` covers torch's alone), so a module
that drew from any of them in eval mode could not shift the training's next draw either;
each module's mode is restored afterwards (a frozen submodule stays frozen), and the pass is
kept out of the trial's peak memory (``peak_memory.left_out``). A trial's final accuracy,
weights and peak memory are bit-identical with and without it
(``tests/search_space/test_epoch_accuracy.py``).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from winnow.search_space.accelerate import prepare_input, uses_channels_last
from winnow.search_space.datasets import Dataset
from winnow.search_space.peak_memory import left_out

EVAL_BATCH = 512


@torch.no_grad()
def test_accuracy(model: nn.Module, dataset: Dataset, device: torch.device) -> float:
    """Top-1 accuracy on the test split, as a fraction (leaves the model in eval mode)."""
    model.eval()
    correct = 0
    channels_last = uses_channels_last(model, device)
    for x, y in dataset.batches("test", EVAL_BATCH, device):
        correct += (model(prepare_input(x, channels_last)).argmax(1) == y).sum().item()
    return correct / len(dataset.test_y)


def epoch_accuracy(model: nn.Module, dataset: Dataset, device: torch.device) -> float:
    """:func:`test_accuracy` in the middle of a training, leaving it untouched: every random
    generator and every module's mode as they were (see the module docstring), and out of
    the trial's peak memory (``peak_memory.left_out``: it runs beside the optimizer's state,
    which the final measurement does not)."""
    modes = {module: module.training for module in model.modules()}
    try:
        with _generators_kept(device), left_out(device):
            return test_accuracy(model, dataset, device)
    finally:
        # each module's own mode, not the top one's: a trainer may keep a submodule frozen
        # (a BatchNorm in eval mode inside a network in training mode)
        for module, training in modes.items():
            module.training = training


@contextlib.contextmanager
def _generators_kept(device: torch.device) -> Iterator[None]:
    devices = []
    if device.type == "cuda":
        devices = [torch.cuda.current_device() if device.index is None else device.index]
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
