"""A trial's peak memory (the ``peak_memory_bytes`` objective): reset when the trial starts,
read when it ends, with the passes that only watch the training left out.

The counters are the process's: on CUDA torch's allocator statistics
(``torch.cuda.max_memory_allocated``, reset by ``reset_peak_memory_stats``); on Linux the
resident high-water mark ``VmHWM`` of ``/proc/self/status``, which writing ``5`` to
``/proc/self/clear_refs`` resets to the current resident size (proc(5)); elsewhere (macOS)
the lifetime peak ``ru_maxrss``, which nothing resets (an upper bound).

:func:`left_out` keeps a pass out of the peak: the per-epoch test accuracy
(``accuracy.epoch_accuracy``) runs the test split at batch 512 while the optimizer's state is
alive, which the final accuracy (measured after it is freed) never does, so counting it would
make the objective depend on ``task.eval_every_epoch``. It reads the peak so far before the
pass, resets the counter after it, and :func:`peak_memory_bytes` takes the larger. On CUDA
this is exact (what the pass allocated is freed when it ends); on Linux the reset lands on the
resident size after the pass, which still holds the pages the allocator kept from it, so the
pass counts there at most as far as memory it did not give back.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

CLEAR_REFS = Path("/proc/self/clear_refs")
PROC_STATUS = Path("/proc/self/status")

# the peak read before each pass left out, by device; the counters are the process's, so is this
_held: dict[str, int] = {}


def reset_peak_memory(device: torch.device) -> None:
    """Start measuring this trial's peak memory (see :func:`peak_memory_bytes`).

    A long-lived worker must not report its lifetime peak: a digits trial after a CIFAR one
    would report the CIFAR trial's 3.7 GB; the baseline is what the process holds now (the
    interpreter, torch and the datasets loaded so far: reset after the trial's dataset is
    loaded, so a first load's spike is not counted)."""
    _held[str(device)] = 0
    _restart(device)


def peak_memory_bytes(device: torch.device) -> int:
    """The trial's peak since :func:`reset_peak_memory`, the passes :func:`left_out` kept out
    of it excepted."""
    return max(_held.get(str(device), 0), _counter(device))


@contextlib.contextmanager
def left_out(device: torch.device) -> Iterator[None]:
    """Run a pass that only watches the training without it counting in the peak."""
    _held[str(device)] = peak_memory_bytes(device)
    try:
        yield
    finally:
        _restart(device)


def _restart(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):  # not Linux, or a kernel that refuses: see _counter
        CLEAR_REFS.write_text("5")


def _counter(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    with contextlib.suppress(OSError):
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024
