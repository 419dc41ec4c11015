"""A training run's resumable state in one file: model, optimizer, scheduler, every random
number generator the loop draws from, the epochs done, their losses and (when measured) the
test accuracy after each.

A candidate's rungs continue one training (``strategy.continue_rungs``): the worker of each rung
loads the file the last one left, trains on under the top rung's schedule and saves after every
epoch, so a promotion (on any worker that can read the path) and a re-run after a kill both
start from the last epoch that ended. Resuming is exact: the state holds the shuffling
generator and the global torch, numpy and Python generators (crop/flip, Hessian probes), so 1
epoch then 2 resumed equal 3 straight (tested), as the supernet's training checkpoints do
(``supernet/nb201_training.py``).

A file is written under a temporary name of its own (``tempfile``: unpredictable, created
exclusively; two workers of one candidate, e.g. a killed server's orphan and its re-run, never
share one), fsynced and renamed: it is complete or absent. It is read with ``torch.load(...,
weights_only=True)``: tensors, numbers, strings and containers, nothing that runs code (the
numpy generator's state is kept as a list), so a file planted in the folder cannot execute
anything. A file whose ``tag`` differs (another candidate, seed, dataset or schedule length),
that cannot be read, or whose state does not fit the run's network and optimizer (a custom
builder that changed) is ignored with a warning: the run starts from epoch 0.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)
SUFFIX = ".ckpt"


@dataclass(frozen=True)
class Checkpoint:
    """Where one training keeps its state (``path``) and what it belongs to (``tag``)."""

    path: Path
    tag: str

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None (no file, another tag, or unreadable: start over)."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - a damaged file only costs its epochs
            log.warning("checkpoint %s unreadable (%s): training from epoch 0", self.path, error)
            return None
        if not isinstance(state, dict) or state.get("tag") != self.tag:
            log.info("checkpoint %s belongs to another training: from epoch 0", self.path)
            return None
        return state

    def save(self, state: dict[str, Any]) -> bool:
        """Write ``state`` (with this tag) atomically; False when the file system refuses (a
        worker that cannot reach the folder: the training goes on, and the next rung then
        trains from epoch 0 under the same schedule, which costs epochs, not correctness)."""
        buffer = io.BytesIO()
        torch.save({**state, "tag": self.tag}, buffer)
        temporary = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                dir=self.path.parent, prefix=f"{self.path.name}.", suffix=".tmp", delete=False
            ) as file:
                temporary = file.name
                file.write(buffer.getbuffer())
                file.flush()
                os.fsync(file.fileno())  # the bytes are on disk before the name says complete
            os.replace(temporary, self.path)
        except OSError as error:
            log.warning("checkpoint %s not saved: %s", self.path, error)
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
            return False
        return True

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def capture(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    epochs_done: int,
    curve: list[float],
    accuracy: list[float] | None = None,
) -> dict[str, Any]:
    """Everything a resumed run needs to go on as if it had never stopped (``accuracy``: the
    test accuracy after each epoch of ``curve``, when measured: :func:`saved_accuracy`)."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": _numpy_state(),
        "python_rng": random.getstate(),
        "epochs_done": epochs_done,
        "curve": list(curve),
        "accuracy": list(accuracy or []),
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore(
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> tuple[int, list[float]]:
    """Load ``state`` into the run's objects; returns ``(epochs done, their losses)``. A state
    that does not fit them (another network under the same tag: a custom builder that changed)
    leaves every one as it was, with a warning, and returns ``(0, [])``: from epoch 0."""
    before = capture(model, optimizer, scheduler, generator, 0, [])
    before = {**before, "model": copy.deepcopy(before["model"])}  # loading writes in place
    try:
        return _load(state, model, optimizer, scheduler, generator)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        log.warning("checkpoint state does not fit this training (%s): from epoch 0", error)
        _load(copy.deepcopy(before), model, optimizer, scheduler, generator)
        return 0, []


def _load(
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> tuple[int, list[float]]:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])  # moves its tensors to the parameters' device
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    name, keys, position, has_gauss, cached = state["numpy_rng"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    random.setstate(state["python_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # another number of GPUs: the loop draws none
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["epochs_done"]), list(state["curve"])


def saved_accuracy(state: dict[str, Any], epochs_done: int) -> list[float]:
    """The per-epoch accuracies a state holds, when it holds one for each of the
    ``epochs_done`` that :func:`restore` returned; else none (a state saved without them, or
    one ``restore`` refused): a continued run's accuracy curve is whole or absent."""
    accuracy = [float(v) for v in state.get("accuracy", [])]
    return accuracy if epochs_done and len(accuracy) == epochs_done else []


def _numpy_state() -> list[Any]:
    """numpy's global generator state as plain values (``weights_only`` loads no arrays)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(position), int(has_gauss), float(cached)]
