"""Functional hashing (Gillard, Real et al., "Unified Functional Hashing in Automatic Machine
Learning"): run the candidate on fixed probes and hash what it computes (milliseconds).

1. Build the candidate (quantization included) and initialise it *by position*: every weight's
   values come from a generator seeded by the tensor's canonical place (``Family.positions``,
   e.g. ``stage0.cell2/conv_3x3#0@(x)``), never from module registration order, so modules of
   equivalent candidates get equal weights. Biases and norm shifts start at 0 (so ops on a zero
   input stay zero, as the structural rules assume), norm scales at U(0.5, 1.5), weights at
   He-normal, running statistics at mean 0 / variance 1.
2. Evaluate on a fixed probe batch in eval mode; take a few optimizer steps (the candidate's own
   optimizer, hyperparameters, warmup and schedule, one probe step standing for one epoch) on a
   fixed labelled probe batch, with biases and norm shifts held at 0; evaluate again.
   Quantization acts in every forward pass.
3. Round the outputs (float64) to ``mantissa_bits`` and hash them together with what the probe
   cannot observe (the batch size).

Guarantees and likelihoods: candidates whose computation is identical (the same canonical
structure, same effective hyperparameters) hash equal unless float rounding of differently
ordered sums straddles a rounding boundary (float64 arithmetic rounded to 12 of its 52 mantissa
bits; at 20 bits this happened for 40 of the 15,625 nb201 cells, at 12 for none). Candidates
that differ only where the probe cannot tell them apart hash equal: AdamW with zero decay and
Adam, SGD with zero momentum with or without Nesterov, 32-bit "quantization" and none, warmup 0.
Distinct functions could collide only if their outputs agree to 12 bits on every probe value,
which random weights make unlikely; ``winnow bench hashing`` measures class counts per precision.
A candidate whose probe outputs are not finite (diverging in the probe steps) falls back to its
structural hash.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from winnow.search_space.archs import FAMILIES
from winnow.search_space.candidate import Candidate
from winnow.search_space.canonical import HASH_CHARS, structural_hash
from winnow.search_space.optimizers import backward_and_step, build_scheduler

# Measured on all 15,625 nb201 cells (winnow bench hashing): at 20 bits float rounding of sums
# taken in different orders (linear pooling) split 13 structural classes; at 12 and below the
# classes are exactly the structural ones.
DEFAULT_MANTISSA_BITS = 12


@dataclass(frozen=True)
class Probe:
    """The fixed inputs of functional hashing. Image families see ``channels x size x size``
    (convolutional networks compute the same function at any resolution); flat families see
    ``features`` inputs."""

    batch: int = 2
    channels: int = 3
    size: int = 8
    features: int = 16
    num_classes: int = 10
    steps: int = 2
    seed: int = 0

    def input_shape(self, family: str) -> tuple[int, ...]:
        return (self.features,) if family == "mlp" else (self.channels, self.size, self.size)


def _seed(position: str) -> int:
    return int.from_bytes(hashlib.sha256(position.encode()).digest()[:8], "little") >> 1


def _place(name: str, positions: dict[str, str]) -> str:
    """The canonical place of a module: its longest mapped name prefix, plus the rest."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in positions:
            return positions[prefix] + "/" + ".".join(parts[end:])
    return name


@torch.no_grad()
def _init_tensor(name: str, tensor: torch.Tensor, generator: torch.Generator) -> None:
    if name == "running_mean" or name.endswith("bias") or name == "num_batches_tracked":
        tensor.zero_()
    elif name == "running_var":
        tensor.fill_(1.0)
    elif not tensor.is_floating_point() or name in ("scale", "running_min", "running_max"):
        return  # flags and observers keep their built state (deterministic)
    elif tensor.dim() >= 2:
        fan_in = tensor[0].numel()
        values = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
        tensor.copy_(values * (2.0 / fan_in) ** 0.5)
    else:
        tensor.copy_(torch.rand(tensor.shape, generator=generator, dtype=torch.float64) + 0.5)


def position_init(model: nn.Module, positions: dict[str, str]) -> None:
    """Initialise every parameter and buffer from its canonical place (see the module doc)."""
    for module_name, module in model.named_modules():
        place = _place(module_name, positions)
        tensors = itertools.chain(
            module.named_parameters(recurse=False), module.named_buffers(recurse=False)
        )
        for name, tensor in tensors:
            generator = torch.Generator().manual_seed(_seed(f"{place}.{name}"))
            _init_tensor(name, tensor, generator)


def _probe_batches(probe: Probe, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(probe.seed)
    x = torch.randn(probe.batch, *shape, generator=generator, dtype=torch.float64)
    y = torch.randint(0, probe.num_classes, (probe.batch,), generator=generator)
    return x, y


def functional_signature(candidate: Candidate, probe: Probe = Probe()) -> np.ndarray | None:
    """Probe outputs at the position-determined init and after the probe steps (float64), or
    None when they are not finite."""
    family = candidate.architecture["family"]
    shape = probe.input_shape(family)
    model = candidate.build_model(probe.num_classes, shape).double()
    position_init(model, FAMILIES.get(family).positions(model, candidate.architecture))
    _freeze_shifts(model)
    x, y = _probe_batches(probe, shape)
    outputs = [_evaluate(model, x)]
    optimizer = candidate.build_optimizer(model)
    warmup = round(candidate.optimizer.get("warmup_epochs", 0))
    scheduler = build_scheduler(
        optimizer, warmup, probe.steps, candidate.optimizer.get("schedule", "cosine")
    )
    for _ in range(probe.steps):
        model.train()
        backward_and_step(optimizer, F.cross_entropy(model(x), y))
        scheduler.step()
    outputs.append(_evaluate(model, x))
    values = torch.cat([o.flatten() for o in outputs]).numpy()
    return values if np.isfinite(values).all() else None


def _freeze_shifts(model: nn.Module) -> None:
    """Hold biases and norm shifts at 0 during the probe steps. A train-mode norm maps a zero
    input to its shift, which one step moves away from 0; holding it keeps ops on zero nodes at
    zero, as the structural rules assume, so both hashes mean the same thing."""
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):
            parameter.requires_grad_(False)


def _evaluate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x).detach()


def round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """Round float64 values to ``bits`` mantissa bits; returns (mantissa, exponent) integers."""
    mantissa, exponent = np.frexp(values)
    rounded = np.round(mantissa * 2.0**bits).astype(np.int64)
    # A mantissa that rounds up to 2**bits is the next power of two: renormalise it.
    carry = np.abs(rounded) == 2**bits
    rounded = np.where(carry, rounded // 2, rounded)
    exponent = np.where(carry, exponent + 1, exponent)
    exponent = np.where(rounded == 0, 0, exponent)
    return np.stack([rounded, exponent.astype(np.int64)])


def hash_signature(
    candidate: Candidate, signature: np.ndarray | None, mantissa_bits: int = DEFAULT_MANTISSA_BITS
) -> str:
    """The functional hash of a computed signature (see ``functional_signature``)."""
    if signature is None:
        return "s" + structural_hash(candidate)[1:]
    digest = hashlib.sha256(round_mantissa(signature, mantissa_bits).tobytes())
    digest.update(f"batch_size={candidate.batch_size}".encode())
    return digest.hexdigest()[:HASH_CHARS]


def functional_hash(
    candidate: Candidate, mantissa_bits: int = DEFAULT_MANTISSA_BITS, probe: Probe = Probe()
) -> str:
    return hash_signature(candidate, functional_signature(candidate, probe), mantissa_bits)
