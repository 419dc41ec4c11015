"""Learning-rate schedules: a linear warmup, then cosine decay or a constant rate."""

from __future__ import annotations

import functools
import math

import torch

SCHEDULES: tuple[str, ...] = ("cosine", "constant")


def _check_schedule(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Factor on the base learning rate at (0-based) ``step``.

    Linear warmup ``(step + 1) / warmup_steps`` for ``step < warmup_steps`` (the first step
    trains at a small, non-zero rate and step ``warmup_steps - 1`` at the full one); then
    ``"constant"`` stays at 1 and ``"cosine"`` follows ``(1 + cos(pi * s)) / 2`` with ``s`` the
    fraction of the post-warmup steps done, reaching 0 at ``total_steps`` (Loshchilov & Hutter
    2017, SGDR, without restarts; warmup as Goyal et al. 2017). Written here rather than taken
    from ``transformers`` (not a dependency), whose warmup starts at exactly 0.
    """
    _check_schedule(schedule)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, schedule: str
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying ``lr_multiplier``; call ``scheduler.step()`` once per optimizer step."""
    _check_schedule(schedule)
    multiplier = functools.partial(
        lr_multiplier, warmup_steps=warmup_steps, total_steps=total_steps, schedule=schedule
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
