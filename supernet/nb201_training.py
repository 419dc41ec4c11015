"""Training a one-shot supernet on a step or time budget, resumable from its checkpoint.

As SPOS trains its supernet (Guo et al., ECCV 2020): SGD with momentum and weight decay, a
cosine schedule after a short linear warmup, cross-entropy, gradient-norm clipping; each step
trains the paths the supernet's ``step_paths`` gives (one uniform path, or FairNAS's
``len(ops)`` paths with their gradients summed).

Everything random is a pure function of ``(seed, step)``: the epoch's order of the training
images (one ``randperm`` per epoch), the step's augmentation (crop and flip) and its paths. So a
run resumed from a checkpoint (model, optimizer, step, schedule length; written atomically every
``checkpoint_every`` steps and at the end) takes exactly the steps an uninterrupted run takes,
also after a kill between two checkpoints. A time budget is turned into a step count by timing
the first ``timing_steps`` steps (inside the warmup, which does not depend on the count); the
count is stored in the checkpoint and the report, and passing it as ``steps`` repeats the run.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from winnow.search_space.datasets import Dataset, crop_flip
from winnow.search_space.optimizers import build_optimizer
from winnow.search_space.schedules import lr_multiplier
from winnow.search_space.trial import EpochCallback

CHECKPOINT_FORMAT = 1


class TrainableSupernet(Protocol):
    """What training needs of a supernet: its paths per step and a forward on one path."""

    def step_paths(self, rng: random.Random) -> list[dict[str, Any]]: ...

    def __call__(self, x: torch.Tensor, arch: dict[str, Any]) -> torch.Tensor: ...


@dataclass(frozen=True)
class TrainSettings:
    """How the supernet trains (what a checkpoint must agree with to be resumed)."""

    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    batch_size: int = 64
    warmup_steps: int = 20  # linear warmup; time budgets are timed inside it
    grad_clip: float = 5.0  # max gradient norm (DARTS-style search code clips at 5)
    seed: int = 0
    augment: bool = True  # crop and flip, where the dataset is augmented (CIFAR)

    def __post_init__(self) -> None:
        if self.batch_size < 2 or self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError("batch size must be at least 2, lr positive and warmup not negative")


@dataclass(frozen=True)
class TrainReport:
    steps: int  # steps done when training stopped
    total_steps: int  # a step budget's length; a time budget's: the steps it did
    steps_per_epoch: int
    seconds: float  # training time, over every resumed run
    resumed_from: int  # the checkpoint's step this run started at (0: a fresh start)
    losses: list[float]  # mean loss of each epoch finished in this run

    @property
    def epochs(self) -> float:
        return self.steps / self.steps_per_epoch


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (SHA-256 of their repr): one stream per use and step."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big") >> 1


@dataclass
class _Run:
    """A training run's mutable state: what the checkpoint holds besides the tensors."""

    step: int
    total_steps: int | None
    seconds: float


def train_supernet(
    supernet: nn.Module,
    data: Dataset,
    settings: TrainSettings = TrainSettings(),
    *,
    steps: int | None = None,
    seconds: float | None = None,
    timing_steps: int = 10,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 100,
    on_epoch: EpochCallback | None = None,
) -> TrainReport:
    """Train ``supernet`` on ``data``'s training split for ``steps`` steps or ``seconds`` of
    training (one of them; both: whichever ends first), resuming from ``checkpoint`` when that
    file exists. ``on_epoch(epoch, epochs, mean loss, seconds)`` is called after each epoch."""
    if steps is None and seconds is None:
        raise ValueError("give a budget: steps, seconds or both")
    if seconds is not None and not 1 <= timing_steps <= settings.warmup_steps:
        raise ValueError(
            "a time budget is timed on 1 to warmup_steps steps (its epochs are not "
            f"known before): timing_steps={timing_steps}, "
            f"warmup_steps={settings.warmup_steps}"
        )
    per_epoch = len(data.train_y) // settings.batch_size  # the last, partial batch is dropped
    if per_epoch < 1:
        raise ValueError(
            f"{len(data.train_y)} training samples make no batch of {settings.batch_size}"
        )
    device = next(supernet.parameters()).device
    optimizer = _optimizer(supernet, settings)
    path = Path(checkpoint) if checkpoint is not None else None
    run = _Run(0, steps if seconds is None else None, 0.0)
    if path is not None and path.is_file():
        run = _load(path, supernet, optimizer, settings)
    resumed_from, losses, epoch_losses = run.step, [], []
    order: tuple[int, torch.Tensor] | None = None
    supernet.train()
    start, epoch_start = time.perf_counter(), time.perf_counter()
    after_first = 0.0

    def elapsed() -> float:
        return run.seconds + time.perf_counter() - start

    # a time budget trains to its deadline (the estimated length only shows the epochs);
    # a step budget to its steps; both: whichever ends first
    while not (seconds is not None and elapsed() >= seconds) and not (
        steps is not None and run.step >= steps
    ):
        epoch, position = divmod(run.step, per_epoch)
        if order is None or order[0] != epoch:
            seed = derived_seed(settings.seed, "order", epoch)
            order = (epoch, torch.randperm(len(data.train_y), generator=_generator(seed)))
        x, y = _batch(data, order[1], position, run.step, settings, device)
        factor = lr_factor(run.step, settings.warmup_steps, elapsed(), seconds, steps)
        epoch_losses.append(_step(supernet, optimizer, x, y, run, settings, factor))
        run.step += 1
        if run.step == resumed_from + 1:
            after_first = elapsed()  # the first step pays one-time costs: the pace leaves it out
        if run.total_steps is None and run.step == resumed_from + timing_steps:
            run.total_steps = _steps_for(
                seconds, elapsed(), after_first, run.step, timing_steps, steps
            )
        if path is not None and (run.step % checkpoint_every == 0):
            _save(path, supernet, optimizer, settings, run, elapsed())
        if run.step % per_epoch == 0:
            losses.append(statistics.fmean(epoch_losses))
            if on_epoch is not None:
                # a time budget's length is an estimate, which a faster machine passes
                epochs = math.ceil(max(run.total_steps or 0, run.step) / per_epoch)
                on_epoch(
                    run.step // per_epoch, epochs, losses[-1], time.perf_counter() - epoch_start
                )
            epoch_losses, epoch_start = [], time.perf_counter()
    run.seconds = elapsed()
    if seconds is not None:  # the schedule a time budget ran is the steps it did
        run.total_steps = run.step
    if path is not None:
        _save(path, supernet, optimizer, settings, run, run.seconds)
    return TrainReport(run.step, run.total_steps, per_epoch, run.seconds, resumed_from, losses)


def _steps_for(
    seconds: float | None, spent: float, after_first: float, done: int, timed: int, cap: int | None
) -> int:
    """The steps a time budget is expected to take (the epochs shown), at the pace of the timed
    steps after the first (of one timed step: that step's)."""
    assert seconds is not None
    pace = (spent - after_first) / (timed - 1) if timed > 1 else spent / done
    total = done + int(max(seconds - spent, 0.0) / max(pace, 1e-9))
    return max(done, min(total, cap) if cap is not None else total)


def lr_factor(
    step: int, warmup_steps: int, spent: float, seconds: float | None, steps: int | None
) -> float:
    """The factor on the base rate at ``step``: linear warmup, then a cosine over the step
    budget, over the time budget (the fraction of ``seconds`` spent), or over whichever of the
    two is further spent. A schedule over the steps a time budget was expected to take (timed
    on the first steps) would stop at the deadline with the rate still high if the machine
    slows down later (a shared CPU), and end early if it speeds up; following the time spent,
    the rate reaches 0 at the deadline either way (budget-aware decay: Li et al., ICLR 2020,
    "Budgeted Training"). A time budget's run is therefore not repeatable step for step."""
    if step < warmup_steps or seconds is None:
        return lr_multiplier(step, warmup_steps, steps or 0, "cosine")
    by_time = 0.5 * (1.0 + math.cos(math.pi * min(1.0, spent / seconds)))
    if steps is None:
        return by_time
    return min(by_time, lr_multiplier(step, warmup_steps, steps, "cosine"))


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _optimizer(supernet: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """winnow's SGD (``build_optimizer``): ``torch.optim.SGD`` on CPU, as before; the fused
    kernel's ``FusedSGD`` where the kernels run (CUDA by default)."""
    hyperparameters = {
        "lr": settings.lr,
        "momentum": settings.momentum,
        "nesterov": settings.nesterov,
        "weight_decay": settings.weight_decay,
    }
    return build_optimizer("sgd", supernet.parameters(), hyperparameters)


def _batch(
    data: Dataset,
    order: torch.Tensor,
    position: int,
    step: int,
    settings: TrainSettings,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's batch: its slice of the epoch's order, normalised, augmented from the step's
    own generator (``Dataset.batches`` draws every batch of an epoch from one generator, which a
    resumed run could not re-enter mid-epoch)."""
    index = order[position * settings.batch_size : (position + 1) * settings.batch_size]
    x = data.normalize(data.train_x[index])
    if settings.augment and data.augment:
        x = crop_flip(x, _generator(derived_seed(settings.seed, "augment", step)))
    return x.to(device), data.train_y[index].to(device)


def _step(
    supernet: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    run: _Run,
    settings: TrainSettings,
    factor: float,
) -> float:
    """One optimizer step over the step's paths (gradients summed) at ``factor`` times the
    base rate; returns their mean loss."""
    for group in optimizer.param_groups:
        group["lr"] = settings.lr * factor
    optimizer.zero_grad(set_to_none=True)
    paths = supernet.step_paths(random.Random(derived_seed(settings.seed, "paths", run.step)))
    losses = []
    for arch in paths:
        loss = F.cross_entropy(supernet(x, arch), y)
        if not torch.isfinite(loss):
            raise ArithmeticError(f"supernet loss became {loss.item()} at step {run.step + 1}")
        loss.backward()
        losses.append(loss.item())
    nn.utils.clip_grad_norm_(supernet.parameters(), settings.grad_clip)
    optimizer.step()
    return statistics.fmean(losses)


# --- checkpoints ----------------------------------------------------------------------------


def _save(
    path: Path,
    supernet: nn.Module,
    optimizer: torch.optim.Optimizer,
    settings: TrainSettings,
    run: _Run,
    seconds: float,
) -> None:
    """Write the checkpoint as ``.tmp``, fsync, rename: a kill mid-write leaves the last one."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "settings": asdict(settings),
        "step": run.step,
        "total_steps": run.total_steps,
        "seconds": seconds,
        "model": supernet.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load(
    path: Path, supernet: nn.Module, optimizer: torch.optim.Optimizer, settings: TrainSettings
) -> _Run:
    state = torch.load(path, map_location=next(supernet.parameters()).device, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a format-{CHECKPOINT_FORMAT} supernet checkpoint")
    if state["settings"] != asdict(settings):
        raise ValueError(
            f"{path} was written with other settings ({state['settings']}); "
            "resume with those, or start afresh with another checkpoint path"
        )
    supernet.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return _Run(state["step"], state["total_steps"], state["seconds"])
