"""Training an elastic supernet by the sandwich rule, and scoring a candidate by its inherited
weights.

Each step (BigNAS, Yu et al. 2020, arXiv:2003.11142, Sec. 3.1): the largest subnet learns from
the labels, and the smallest and ``random_subnets`` random subnets learn from the largest's soft
outputs on the same batch (in-place distillation, detached); the gradients of all of them are
accumulated and the optimizer steps once. Training the two ends of the space every step is what
keeps both the big and the small subnets accurate; distilling from the largest (rather than the
labels) is what BigNAS and OFA found to rank the small ones best.

A trainer is seeded: the subnets drawn, the batch order (one permutation per epoch from
``(seed, epoch)``) and the augmentation (from ``(seed, step)``) are functions of the seed and
the step, so a run resumed from a ``state_dict`` continues exactly as the uninterrupted run.

``inherited_accuracy`` is family-agnostic (it asks only for ``get_active_subnet``): extract,
re-estimate BatchNorm on training batches, measure on a validation split carved from the
training data (``validation_split``), never on the test split trained candidates are scored on.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from winnow.search_space.candidate import Candidate
from winnow.search_space.datasets import crop_flip
from winnow.search_space.optimizers import build_optimizer
from winnow.search_space.schedules import build_scheduler
from winnow.search_space.trial import EpochCallback
from winnow.supernet.batchnorm import DEFAULT_BATCHES, recalibrate_batchnorm
from winnow.supernet.macro import MacroSupernet
from winnow.supernet.seam import accuracy, soft_cross_entropy

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class SandwichSettings:
    """How a supernet is trained. The defaults follow OFA / BigNAS at a small scale: SGD with
    Nesterov momentum, cosine decay over the step budget, weight decay on conv and linear
    weights only (not on BatchNorm, biases or the identity-initialised kernel transforms)."""

    random_subnets: int = 2  # besides the largest and the smallest, each step (BigNAS: 2)
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-5  # OFA's
    warmup_steps: int = 0
    distillation: bool = True  # the others learn the largest's soft outputs, else the labels
    augment: bool = False  # CIFAR crop and flip (``datasets.crop_flip``)
    seed: int = 0


def _parameter_groups(supernet: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, rest = [], []
    for name, parameter in supernet.named_parameters():
        is_weight = parameter.dim() > 1 and "kernel_transform" not in name
        (decay if is_weight else rest).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _mix(*numbers: int) -> int:
    """A seed from several integers (a step's or an epoch's own generator), by numpy's
    ``SeedSequence``: specified, so the same in every process and Python version (a tuple's
    ``hash`` is not promised to be). Negative numbers are shifted into SeedSequence's range."""
    entropy = [n if n >= 0 else 2**64 + n for n in numbers]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) & (2**63 - 1)


@dataclass
class TrainReport:
    steps: int  # optimizer steps done in all (resumed runs included)
    seconds: float  # of this call
    epoch_losses: list[float] = field(default_factory=list)  # the largest's, per finished epoch
    stopped: str = "steps"  # "steps" (the budget is done), "time" or "asked" (``steps=``)


class SandwichTrainer:
    """Sandwich-rule training of one supernet over ``max_steps`` optimizer steps.

    Example::

        trainer = SandwichTrainer(supernet, SandwichSettings(seed=1), max_steps=2000)
        trainer.fit(x, y, max_seconds=600, on_epoch=print)
        torch.save(trainer.state_dict(), path)  # later: trainer.load_state_dict(torch.load(path))
    """

    def __init__(self, supernet: MacroSupernet, settings: SandwichSettings, max_steps: int) -> None:
        self.supernet, self.settings, self.max_steps = supernet, settings, max_steps
        # winnow's SGD: torch.optim.SGD on CPU, FusedSGD where the kernels run (CUDA); the
        # groups carry the weight decay (none on norms and biases)
        self.optimizer = build_optimizer(
            "sgd",
            _parameter_groups(supernet, settings.weight_decay),
            {
                "lr": settings.lr,
                "momentum": settings.momentum,
                "nesterov": settings.momentum > 0,
                "weight_decay": 0.0,
            },
        )
        self.scheduler = build_scheduler(self.optimizer, settings.warmup_steps, max_steps, "cosine")
        self.rng = random.Random(settings.seed)  # the random subnets
        self.step = 0
        self.samples: int | None = None  # the training set's size, fixed by the first fit
        self.epoch_losses: list[float] = []
        self._running: list[float] = []  # the largest's losses in the epoch under way

    # --- one step ----------------------------------------------------------------------------

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One sandwich step on a batch; returns the largest's loss."""
        supernet, settings = self.supernet, self.settings
        supernet.train()
        self.optimizer.zero_grad(set_to_none=True)
        logits = supernet(x, supernet.largest())
        loss = F.cross_entropy(logits, y)
        loss.backward()
        teacher = logits.detach().softmax(-1)
        others = [supernet.smallest()]
        others += [supernet.sample(self.rng) for _ in range(settings.random_subnets)]
        for arch in others:
            out = supernet(x, arch)
            other = soft_cross_entropy(out, teacher) if settings.distillation else None
            (other if other is not None else F.cross_entropy(out, y)).backward()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss.item()

    # --- many steps --------------------------------------------------------------------------

    def _batch(self, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, i: int) -> Batch:
        size = self.settings.batch_size
        idx = order[i * size : (i + 1) * size]
        xb = x[idx]
        if self.settings.augment:
            xb = crop_flip(xb, torch.Generator().manual_seed(_mix(self.settings.seed, self.step)))
        return xb, y[idx]

    def fit(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        steps: int | None = None,
        max_seconds: float | None = None,
        on_epoch: EpochCallback | None = None,
    ) -> TrainReport:
        """Train on normalised ``x``, ``y`` until ``max_steps`` (or ``steps`` more, or
        ``max_seconds``) are done; ``on_epoch(epoch, epochs, loss, seconds)`` after each epoch
        (the largest's mean loss). Incomplete last batches are dropped (BatchNorm, equal
        sizes)."""
        if self.samples is not None and self.samples != len(y):
            raise ValueError(
                f"this run trained on {self.samples} samples, not {len(y)}: its epochs and "
                "their orders would not continue"
            )
        self.samples = len(y)
        per_epoch = len(y) // self.settings.batch_size
        if per_epoch < 1:
            size = self.settings.batch_size
            raise ValueError(f"{len(y)} samples are fewer than a batch of {size}")
        epochs = math.ceil(self.max_steps / per_epoch)
        stop = self.max_steps if steps is None else min(self.max_steps, self.step + steps)
        start = epoch_start = time.perf_counter()
        stopped = "steps" if stop == self.max_steps else "asked"
        order, order_epoch = torch.arange(0), -1
        while self.step < stop:
            if max_seconds is not None and time.perf_counter() - start >= max_seconds:
                stopped = "time"
                break
            epoch, i = divmod(self.step, per_epoch)
            if epoch != order_epoch:  # each epoch's order is the seed's, resumed or not
                seeded = torch.Generator().manual_seed(_mix(self.settings.seed, -1, epoch))
                order, order_epoch = torch.randperm(len(y), generator=seeded), epoch
            self._running.append(self.train_step(*self._batch(x, y, order, i)))
            if self.step % per_epoch == 0:
                self.epoch_losses.append(statistics.fmean(self._running))
                self._running = []
                now = time.perf_counter()
                if on_epoch is not None:
                    on_epoch(epoch + 1, epochs, self.epoch_losses[-1], now - epoch_start)
                epoch_start = now
        return TrainReport(self.step, time.perf_counter() - start, list(self.epoch_losses), stopped)

    # --- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "supernet": self.supernet.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": self.rng.getstate(),
            "step": self.step,
            "max_steps": self.max_steps,
            "settings": asdict(self.settings),
            "samples": self.samples,
            "epoch_losses": list(self.epoch_losses),
            "running": list(self._running),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a run from :meth:`state_dict`'s; refused when it was trained for another
        step budget or with other settings (its schedule and its subnets would not continue),
        and its training set's size is checked at the next :meth:`fit`."""
        if state["max_steps"] != self.max_steps:
            raise ValueError(
                f"the checkpoint was trained for {state['max_steps']} steps, not {self.max_steps}:"
                " its learning-rate schedule would not continue"
            )
        settings = asdict(self.settings)
        if state.get("settings") != settings:
            differ = sorted(
                k for k in settings if (state.get("settings") or {}).get(k) != settings[k]
            )
            raise ValueError(
                f"the checkpoint was trained with other settings ({', '.join(differ)}): "
                f"{state.get('settings')}, not {settings}"
            )
        self.supernet.load_state_dict(state["supernet"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng.setstate(state["rng"])
        self.step = state["step"]
        self.samples = state["samples"]
        self.epoch_losses = list(state["epoch_losses"])
        self._running = list(state["running"])


def save_checkpoint(trainer: SandwichTrainer, path: str | Path) -> None:
    """Write the trainer's state atomically (a kill mid-write leaves the previous file)."""
    path = Path(path)
    partial = path.with_suffix(path.suffix + ".partial")
    with open(partial, "wb") as file:
        torch.save(trainer.state_dict(), file)
        file.flush()
        os.fsync(file.fileno())  # on disk before the rename, so a crash cannot leave it empty
    os.replace(partial, path)


def train_supernet(
    supernet: MacroSupernet,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: SandwichSettings,
    max_steps: int,
    max_seconds: float | None = None,
    on_epoch: EpochCallback | None = None,
    checkpoint: str | Path | None = None,
) -> TrainReport:
    """Train ``supernet`` by the sandwich rule within a step and a time budget, resuming from
    ``checkpoint`` when that file exists and saving it after every epoch and at the end."""
    trainer = SandwichTrainer(supernet, settings, max_steps)
    if checkpoint is not None and Path(checkpoint).is_file():
        # weights_only: a checkpoint is tensors and plain values, never code to unpickle
        trainer.load_state_dict(torch.load(checkpoint, weights_only=True))

    def report(epoch: int, epochs: int, loss: float, seconds: float) -> None:
        if checkpoint is not None:
            save_checkpoint(trainer, checkpoint)
        if on_epoch is not None:
            on_epoch(epoch, epochs, loss, seconds)

    result = trainer.fit(x, y, max_seconds=max_seconds, on_epoch=report)
    if checkpoint is not None:
        save_checkpoint(trainer, checkpoint)
    return result


# --- scoring by inherited weights ----------------------------------------------------------


def validation_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training samples the supernet trains on and of those it is validated on
    (a seeded random ``fraction`` of the training split; the test split is never used)."""
    if not 0 < fraction < 1:
        raise ValueError(f"a validation fraction is in (0, 1), got {fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = max(1, round(n * fraction))
    if held >= n:
        raise ValueError(f"holding out {held} of {n} samples leaves none to train on")
    return order[held:].sort().values, order[:held].sort().values


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[Batch]:
    """``(x, y)`` in order, in batches of ``batch_size`` (the last may be smaller)."""
    for start in range(0, len(y), batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]


@torch.no_grad()
def inherited_accuracy(
    supernet: Any,
    candidate: Candidate,
    train_batches: Iterable[Batch],
    val_batches: Iterable[Batch],
    bn_batches: int = DEFAULT_BATCHES,
) -> float:
    """Top-1 accuracy (a fraction) of ``candidate``'s subnet with the inherited weights, its
    BatchNorm statistics re-estimated on the first ``bn_batches`` of ``train_batches``
    (0: the supernet's own sliced statistics, the ablation), on ``val_batches``."""
    subnet = supernet.get_active_subnet(candidate)
    if bn_batches > 0:
        recalibrate_batchnorm(subnet, (x for x, _ in train_batches), bn_batches)
    return accuracy(subnet, val_batches)
