"""A trial's peak memory leaves out the passes that only watch the training (the per-epoch
test accuracy), so ``peak_memory_bytes`` does not depend on ``task.eval_every_epoch``."""

from __future__ import annotations

import pytest
import torch

from winnow.search_space import accuracy, peak_memory
from winnow.search_space.datasets import load_dataset


class HighWaterMark:
    """The process's counter as the kernel keeps it: the peak of what is held, reset to what
    is held now."""

    def __init__(self) -> None:
        self.held = self.peak = 0

    def hold(self, amount: int) -> None:
        self.held += amount
        self.peak = max(self.peak, self.held)

    def restart(self, device: torch.device) -> None:
        self.peak = self.held

    def read(self, device: torch.device) -> int:
        return self.peak


@pytest.fixture
def counter(monkeypatch) -> HighWaterMark:
    mark = HighWaterMark()
    monkeypatch.setattr(peak_memory, "_restart", mark.restart)
    monkeypatch.setattr(peak_memory, "_counter", mark.read)
    return mark


CPU = torch.device("cpu")


def test_a_pass_left_out_does_not_raise_the_peak_but_what_came_before_counts(counter):
    counter.hold(100)
    peak_memory.reset_peak_memory(CPU)
    counter.hold(300)  # training
    counter.hold(-300)
    with peak_memory.left_out(CPU):
        counter.hold(900)  # the pass, beside the optimizer's state
        counter.hold(-900)
    counter.hold(50)  # training again, below its earlier peak
    assert peak_memory.peak_memory_bytes(CPU) == 400
    counter.hold(500)  # and above it: still counted
    assert peak_memory.peak_memory_bytes(CPU) == 650


def test_a_new_trial_forgets_the_last_ones_held_peak(counter):
    peak_memory.reset_peak_memory(CPU)
    counter.hold(1000)
    with peak_memory.left_out(CPU):
        pass
    counter.hold(-1000)
    peak_memory.reset_peak_memory(CPU)
    assert peak_memory.peak_memory_bytes(CPU) == 0


def test_the_per_epoch_accuracy_is_left_out_of_the_peak(counter, monkeypatch):
    measure = accuracy.test_accuracy

    def heavy(*args):
        counter.hold(10_000)  # what batch 512 of the test split would take
        try:
            return measure(*args)
        finally:
            counter.hold(-10_000)

    monkeypatch.setattr(accuracy, "test_accuracy", heavy)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    peak_memory.reset_peak_memory(CPU)
    counter.hold(200)
    accuracy.epoch_accuracy(model, load_dataset("digits"), CPU)
    assert peak_memory.peak_memory_bytes(CPU) == 200
