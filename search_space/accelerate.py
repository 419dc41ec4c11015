"""What a CUDA device gets beyond the CPU path: bf16 mixed precision, ``channels_last`` for
convolutional networks, and pinned-memory host-to-device copies. On the CPU every function
here is the identity, so the CPU path (and every CPU test) is unchanged.

- Mixed precision: forward and loss under ``torch.autocast(dtype=bfloat16)`` where the GPU
  supports bf16 (Ampere and newer); weights, gradients and optimizer state stay float32, and
  bf16 needs no loss scaling. Quantized candidates train in float32: their fake quantization
  computes scales and rounding that bf16's 8 mantissa bits would change.
- ``channels_last``: convolutions on tensor cores read NHWC without transposes; applied to
  models with a ``Conv2d`` and to their 4-D inputs.
- Pinned memory: a batch is gathered into page-locked memory and copied with
  ``non_blocking=True``, so the copy overlaps the previous step's kernels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # datasets import this module, and candidates import much of the package
    from winnow.search_space.candidate import Candidate


def mixed_precision(device: torch.device, candidate: Candidate) -> bool:
    """True when training ``candidate`` on ``device`` runs under bf16 autocast."""
    if device.type != "cuda" or not candidate.quantization.is_float:
        return False
    return torch.cuda.is_bf16_supported(including_emulation=False)  # emulated bf16 is slow


@contextlib.contextmanager
def autocast(device: torch.device, candidate: Candidate) -> Iterator[None]:
    if mixed_precision(device, candidate):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def uses_channels_last(model: nn.Module, device: torch.device) -> bool:
    return device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move the model to ``device``, in ``channels_last`` where that helps."""
    model = model.to(device)
    if uses_channels_last(model, device):
        model = model.to(memory_format=torch.channels_last)
    return model


def prepare_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch in the memory format the prepared model expects (``uses_channels_last``)."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def to_device(raw: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Host-to-device copy; through pinned memory and asynchronous on CUDA."""
    if torch.device(device).type == "cuda" and not raw.is_cuda:
        return raw.pin_memory().to(device, non_blocking=True)
    return raw.to(device)
