"""Training a supernet by the sandwich rule with in-place distillation (BigNAS, Yu et al. 2020,
arXiv:2003.11142; OFA, Cai et al. 2020) under sampled quantization policies (EQ-Net).

Each step, on one batch, gradients of several subnets are summed before one optimizer step:
the largest architecture at full precision, trained on the labels (the teacher), then the
smallest and ``random_subnets`` random architectures, each under a policy drawn from the space's
quantization axis, trained on the teacher's soft predictions (in-place distillation: the
teacher is the same supernet, in the same step). With ``sample_quantization`` off every
sub-step is full precision (the ablation: a plain elastic supernet scored under quantization).

A run is a pure function of its settings and the step: the batch of step ``k`` comes from the
permutation of its epoch (seeded by the epoch), its architectures and policies from a
``random.Random`` seeded by the step, and the learning rate from the step (cosine), so a run
resumed from a checkpoint (``state_dict``: weights, optimizer state, step, and the seconds
trained so far, which a time budget counts) continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from winnow.search_space.datasets import Dataset
from winnow.search_space.quantization import QuantPolicy
from winnow.supernet.quantization import FLOAT_POLICY, weight_distribution_loss
from winnow.supernet.seam import soft_cross_entropy

# (steps done, steps in all, the mean summed loss of the steps since the last report, seconds
# since this call started)
ProgressCallback = Callable[[int, int, float, float], None]
PolicySampler = Callable[[random.Random], QuantPolicy]


class ElasticSupernet(Protocol):
    """What the sandwich rule needs of a supernet (``MLPSupernet`` provides it)."""

    def sample(self, rng: random.Random) -> dict[str, Any]: ...
    def largest(self, rng: random.Random) -> dict[str, Any]: ...
    def smallest(self, rng: random.Random) -> dict[str, Any]: ...
    def __call__(self, x: Tensor, arch: dict[str, Any], policy: QuantPolicy | None) -> Tensor: ...
    def parameters(self) -> Any: ...
    def quantized_weights(self) -> list[Tensor]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...


@dataclass(frozen=True)
class SandwichConfig:
    steps: int = 3000  # the schedule's length (a time budget may stop a run before it)
    batch_size: int = 64
    lr: float = 3e-3  # AdamW, cosine to 0 over ``steps``
    weight_decay: float = 1e-4
    random_subnets: int = 2  # besides the largest and the smallest, each step
    distill: bool = True  # children learn the largest's soft predictions, else the labels
    sample_quantization: bool = True  # each child under a sampled policy, else full precision
    # EQ-Net's weight distribution loss, times this: on the digits bench 0.1 keeps 2-bit
    # per-tensor subnets from collapsing (worst inherited accuracy 0.38 -> 0.81)
    weight_regularization: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class TrainReport:
    steps: int  # steps done in all (a resumed run counts the earlier ones)
    seconds: float  # this call's training time (``elapsed``: the run's, resumes included)
    loss: float  # the last step's summed loss (nan before any step)


def make_optimizer(supernet: ElasticSupernet, config: SandwichConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(supernet.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def learning_rate(config: SandwichConfig, step: int) -> float:
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps))


def step_batch(
    dataset: Dataset, config: SandwichConfig, step: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The training batch of step ``step``: its epoch's permutation (seeded by the epoch), cut
    into full batches."""
    n = len(dataset.train_y)
    per_epoch = max(n // config.batch_size, 1)
    epoch, index = divmod(step, per_epoch)
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator)
    idx = order[index * config.batch_size : (index + 1) * config.batch_size]
    x = dataset.normalize(dataset.train_x[idx].to(device))
    return x, dataset.train_y[idx].to(device)


def sandwich_step(
    supernet: ElasticSupernet,
    optimizer: torch.optim.Optimizer,
    batch: tuple[Tensor, Tensor],
    rng: random.Random,
    sample_policy: PolicySampler,
    config: SandwichConfig,
) -> float:
    """One optimizer step over the largest (full precision), the smallest and random subnets;
    returns the summed loss."""
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    teacher = supernet(x, supernet.largest(rng), FLOAT_POLICY)
    loss = F.cross_entropy(teacher, y)
    loss.backward()
    total = loss.item()
    soft = teacher.detach().softmax(1)
    children = [supernet.smallest(rng)] + [
        supernet.sample(rng) for _ in range(config.random_subnets)
    ]
    for arch in children:
        policy = sample_policy(rng) if config.sample_quantization else FLOAT_POLICY
        out = supernet(x, arch, policy)
        child_loss = soft_cross_entropy(out, soft) if config.distill else F.cross_entropy(out, y)
        child_loss.backward()
        total += child_loss.item()
    if config.weight_regularization:
        weights = supernet.quantized_weights()
        reg = sum(weight_distribution_loss(w) for w in weights) / len(weights)
        (config.weight_regularization * reg).backward()
        total += config.weight_regularization * reg.item()
    optimizer.step()
    return total


def state_dict(
    supernet: ElasticSupernet,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: SandwichConfig,
    seconds: float = 0.0,
) -> dict[str, Any]:
    """A checkpoint: what resuming needs (the rest is a function of the step); ``seconds``:
    the training time so far, resumes included (a time budget is the run's, not a call's)."""
    return {
        "supernet": supernet.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "config": asdict(config),
        "seconds": float(seconds),
    }


def load_state(
    supernet: ElasticSupernet,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    config: SandwichConfig,
) -> int:
    """Restore a checkpoint of a run with the same settings; returns its step."""
    if state["config"] != asdict(config):
        raise ValueError(
            f"checkpoint settings {state['config']} differ from this run's {asdict(config)}"
        )
    supernet.load_state_dict(state["supernet"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically (a temporary file renamed): a kill mid-write leaves the last one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def train(
    supernet: ElasticSupernet,
    dataset: Dataset,
    config: SandwichConfig,
    sample_policy: PolicySampler,
    *,
    max_steps: int | None = None,
    minutes: float | None = None,
    checkpoint: Path | None = None,
    checkpoint_every: int = 250,
    on_progress: ProgressCallback | None = None,
    progress_every: int = 100,
) -> TrainReport:
    """Train ``supernet`` on ``dataset``'s training split until ``config.steps`` in all, or
    ``max_steps`` in this call, or ``minutes`` of training in all (a resumed run's earlier
    seconds count), whichever comes first. With ``checkpoint``, a run resumes from the file if
    it exists and writes it every ``checkpoint_every`` steps and at the end."""
    device = next(iter(supernet.parameters())).device
    optimizer = make_optimizer(supernet, config)
    step, before = 0, 0.0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        step = load_state(supernet, optimizer, state, config)
        before = float(state.get("seconds", 0.0))
    start = time.perf_counter()
    deadline = start + minutes * 60 - before if minutes is not None else math.inf
    last = config.steps if max_steps is None else min(config.steps, step + max_steps)
    loss, window = math.nan, []  # the losses since the last report

    def save() -> None:
        assert checkpoint is not None
        seconds = before + time.perf_counter() - start
        save_checkpoint(checkpoint, state_dict(supernet, optimizer, step, config, seconds))

    supernet.train()
    while step < last and time.perf_counter() < deadline:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        rng = random.Random(f"{config.seed}:{step}")
        with torch.random.fork_rng(devices=[]):  # dropout's draws: the step's own
            torch.manual_seed(config.seed * 1_000_003 + step)
            batch = step_batch(dataset, config, step, device)
            loss = sandwich_step(supernet, optimizer, batch, rng, sample_policy, config)
        step += 1
        window.append(loss)
        if not math.isfinite(loss):
            raise ArithmeticError(f"supernet loss became {loss} at step {step}")
        # saved before the step is reported: a caller killed in its report resumes after it
        if checkpoint is not None and step % checkpoint_every == 0:
            save()
        if on_progress is not None and (step % progress_every == 0 or step == last):
            on_progress(step, config.steps, sum(window) / len(window), time.perf_counter() - start)
            window = []
    if checkpoint is not None:
        save()
    supernet.eval()
    return TrainReport(step, time.perf_counter() - start, loss)
