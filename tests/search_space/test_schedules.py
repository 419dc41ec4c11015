"""Learning-rate schedules: linear warmup, then cosine decay or a constant rate."""

from __future__ import annotations

import math

import pytest
import torch

from winnow.search_space.optimizers import build_optimizer
from winnow.search_space.schedules import SCHEDULES, build_scheduler, lr_multiplier


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_no_warmup_starts_at_full_rate(schedule):
    assert lr_multiplier(0, 0, 100, schedule) == 1.0


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_warmup_ramps_linearly_to_one(schedule):
    ramp = [lr_multiplier(step, 10, 100, schedule) for step in range(10)]
    assert ramp == pytest.approx([(step + 1) / 10 for step in range(10)])
    assert 0 < ramp[0] <= 0.1


def test_cosine_decays_to_zero():
    values = [lr_multiplier(step, 10, 110, "cosine") for step in range(9, 111)]
    assert values[1] == 1.0  # first step after warmup
    assert all(a >= b for a, b in zip(values[1:], values[2:], strict=False))
    assert lr_multiplier(60, 10, 110, "cosine") == pytest.approx(0.5)  # half way: cos(pi/2)
    assert lr_multiplier(109, 10, 110, "cosine") < 1e-3
    assert lr_multiplier(110, 10, 110, "cosine") == pytest.approx(0.0, abs=1e-12)


def test_constant_stays_at_one_after_warmup():
    assert all(lr_multiplier(step, 5, 50, "constant") == 1.0 for step in range(5, 60))


def test_unknown_schedule_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="cosine, constant"):
        lr_multiplier(0, 0, 10, "linear")


def test_scheduler_scales_the_learning_rate():
    p = torch.nn.Parameter(torch.zeros(2))
    optimizer = build_optimizer("sgd", [p], {"lr": 0.2})
    scheduler = build_scheduler(optimizer, warmup_steps=2, total_steps=6, schedule="cosine")
    seen = []
    for _ in range(6):
        seen.append(optimizer.param_groups[0]["lr"])
        p.grad = torch.ones(2)
        optimizer.step()
        scheduler.step()
    # Warmup 1/2, 2/2; then cosine over the 4 remaining steps at fractions 0, 1/4, 2/4, 3/4.
    cosine = [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert seen == pytest.approx([0.2 * m for m in (0.5, 1.0, *cosine)])
