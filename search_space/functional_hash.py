"""Functional hashing (Gillard, Real et al., "Unified Functional Hashing in Automatic Machine
Learning"): run the candidate on fixed probes and hash what it computes (milliseconds).

1. Build the candidate (quantization included) -- or its family's smaller stand-in, which
   computes equal functions exactly when the candidate does (``Family.probe_architecture``: one
   nb201 cell per stage; the fields it changed are hashed as given) -- and initialise it *by
   position*: every weight's values come from a generator seeded by the tensor's canonical
   place (``Family.positions``, e.g. ``stage0.cell2/conv_3x3#0@(x)``), never from module
   registration order, so modules of
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
structural hash (``structural_fallback``), as the engine does for a hash trial that failed.

The network built for the probe is freed before ``functional_signature`` returns, cycles
included (``release``): a 50M-parameter candidate takes ~0.7 GB in float64 with its gradients
and optimizer state.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from winnow.search_space.archs import FAMILIES
from winnow.search_space.candidate import Candidate
from winnow.search_space.canonical import HASH_CHARS, structural_hash
from winnow.search_space.costs import count_parameters
from winnow.search_space.datasets import dataset_shape
from winnow.search_space.optimizers import backward_and_step
from winnow.search_space.schedules import build_scheduler

# Measured on all 15,625 nb201 cells (winnow bench hashing): at 20 bits float rounding of sums
# taken in different orders (linear pooling) split 13 structural classes; at 12 and below the
# classes are exactly the structural ones.
DEFAULT_MANTISSA_BITS = 12
# Bumped whenever the same candidate would hash differently, so stored hashes are not mixed.
# 2: numpy PCG64 initialisation; nb201 probed with one cell per stage.
HASH_VERSION = 2
# Networks at least this large are collected at once after use (see ``release``): 80 MB of
# float64 values. At 1M, the proxies of 13 in 47 nb201 proposals collected, 0.23 s each in the
# benchmark's heap (winnow bench search: 70% more wall time).
COLLECT_ABOVE_PARAMETERS = 10_000_000


@dataclass(frozen=True)
class Probe:
    """The fixed inputs of functional hashing. Each family picks its input shape
    (``Family.probe_shape``): image families see ``channels x size x size`` (convolutional
    networks compute the same function at any resolution), flat families ``features`` inputs,
    and a family that ``probes_task_shape`` (``custom``) the task's own ``task_shape``
    (``for_task``). ``task_shape`` is left out of the probe's text, which keys memoised
    hashes: the engine keys those of such a family by task (``evidence.StoreHashMemo``)."""

    batch: int = 2
    channels: int = 3
    size: int = 8
    features: int = 16
    num_classes: int = 10
    steps: int = 2
    seed: int = 0
    task_shape: tuple[int, ...] | None = dataclasses.field(default=None, repr=False)

    def input_shape(self, family: str) -> tuple[int, ...]:
        return FAMILIES.get(family).probe_shape(self)

    @classmethod
    def for_task(cls, candidate: Candidate, dataset: str) -> Probe:
        """The probe for ``candidate`` on dataset spec ``dataset``: the default one, or for a
        family that probes the task's shape, one of that shape and class count (which may
        load the dataset: in a worker, where it is cached)."""
        if not FAMILIES.get(candidate.architecture["family"]).probes_task_shape:
            return cls()
        input_shape, num_classes = dataset_shape(dataset)
        return cls(num_classes=num_classes, task_shape=tuple(input_shape))


def _generator(position: str) -> np.random.Generator:
    # numpy's PCG64 rather than torch.Generator: seeding and drawing a few thousand values is
    # several times cheaper, and initialisation was ~15% of an nb201 cell's hashing time.
    seed = int.from_bytes(hashlib.sha256(position.encode()).digest()[:8], "little")
    return np.random.Generator(np.random.PCG64(seed))


def _place(name: str, positions: dict[str, str]) -> str:
    """The canonical place of a module: its longest mapped name prefix, plus the rest."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in positions:
            return positions[prefix] + "/" + ".".join(parts[end:])
    return name


@torch.no_grad()
def _init_tensor(place: str, name: str, tensor: torch.Tensor) -> None:
    if name == "running_mean" or name.endswith("bias") or name == "num_batches_tracked":
        tensor.zero_()
    elif name == "running_var":
        tensor.fill_(1.0)
    elif not tensor.is_floating_point() or name in ("scale", "running_min", "running_max"):
        return  # flags and observers keep their built state (deterministic)
    elif tensor.dim() >= 2:
        fan_in = tensor[0].numel()
        values = _generator(f"{place}.{name}").standard_normal(tuple(tensor.shape))
        tensor.copy_(torch.from_numpy(values * (2.0 / fan_in) ** 0.5))
    else:  # np.asarray: a 0-d draw comes back as a numpy scalar
        values = np.asarray(_generator(f"{place}.{name}").random(tuple(tensor.shape)) + 0.5)
        tensor.copy_(torch.from_numpy(values))


def position_init(model: nn.Module, positions: dict[str, str]) -> None:
    """Initialise every parameter and buffer from its canonical place (see the module doc)."""
    for module_name, module in model.named_modules():
        place = _place(module_name, positions)
        tensors = itertools.chain(
            module.named_parameters(recurse=False), module.named_buffers(recurse=False)
        )
        for name, tensor in tensors:
            _init_tensor(place, name, tensor)


def _probe_batches(probe: Probe, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(probe.seed)
    x = torch.randn(probe.batch, *shape, generator=generator, dtype=torch.float64)
    y = torch.randint(0, probe.num_classes, (probe.batch,), generator=generator)
    return x, y


def probe_stand_in(candidate: Candidate) -> tuple[Candidate, dict[str, Any]]:
    """The candidate that is probed -- its family's smaller stand-in (``Family.probe_architecture``,
    e.g. one nb201 cell per stage) when it has one, else the candidate itself -- and the
    effective architecture values the stand-in replaced (hashed as given)."""
    family = FAMILIES.get(candidate.architecture["family"])
    smaller = family.probe_architecture(candidate.architecture, candidate.quantization.bits_for)
    if smaller is None:
        return candidate, {}
    arch, replaced = smaller
    return candidate.model_copy(update={"architecture": arch}), replaced


def functional_signature(candidate: Candidate, probe: Probe = Probe()) -> np.ndarray | None:
    """Probe outputs at the position-determined init and after the probe steps (float64), or
    None when they are not finite."""
    candidate, _ = probe_stand_in(candidate)
    shape = probe.input_shape(candidate.architecture["family"])
    model = candidate.build_model(probe.num_classes, shape).double()
    try:
        return _probe(candidate, model, shape, probe)
    finally:
        parameters = count_parameters(model)
        del model  # the caller keeps only the outputs
        release(parameters)


def release(parameters: int) -> None:
    """Collect reference cycles after a network of ``parameters`` parameters was dropped.

    A dropped network is freed at once unless it sits in a reference cycle, which torch's
    first optimizer of a process makes (and any module holding itself would): then its
    tensors wait for Python's collector, whose next full pass may be long coming. A full
    ``gc.collect()`` costs 0.05-0.25 s in a server's heap, more than hashing a small cell, so
    only networks of at least ``COLLECT_ABOVE_PARAMETERS`` parameters (80 MB of float64
    values and as much again in gradients) are worth it."""
    if parameters >= COLLECT_ABOVE_PARAMETERS:
        gc.collect()


def _probe(
    candidate: Candidate, model: nn.Module, shape: tuple[int, ...], probe: Probe
) -> np.ndarray | None:
    family = candidate.architecture["family"]
    position_init(model, FAMILIES.get(family).positions(model, candidate.architecture))
    _freeze_shifts(model)
    x, y = _probe_batches(probe, shape)
    modules = list(model.modules())
    outputs = [_evaluate(model, modules, x)]
    optimizer = candidate.build_optimizer(model)
    warmup = round(candidate.optimizer.get("warmup_epochs", 0))
    scheduler = build_scheduler(
        optimizer, warmup, probe.steps, candidate.optimizer.get("schedule", "cosine")
    )
    _set_training(modules, True)
    for _ in range(probe.steps):
        backward_and_step(optimizer, F.cross_entropy(model(x), y))
        scheduler.step()
    outputs.append(_evaluate(model, modules, x))
    values = torch.cat([o.flatten() for o in outputs]).numpy()
    return values if np.isfinite(values).all() else None


def _freeze_shifts(model: nn.Module) -> None:
    """Hold biases and norm shifts at 0 during the probe steps. A train-mode norm maps a zero
    input to its shift, which one step moves away from 0; holding it keeps ops on zero nodes at
    zero, as the structural rules assume, so both hashes mean the same thing."""
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):
            parameter.requires_grad_(False)


def _set_training(modules: list[nn.Module], mode: bool) -> None:
    """``model.train(mode)`` without its recursive walk, which cost ~8% of an nb201 cell's
    hashing; no module in winnow overrides ``train``, so setting the flags is the same."""
    for module in modules:
        module.training = mode


def _evaluate(model: nn.Module, modules: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    _set_training(modules, False)
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


def structural_fallback(structural: str) -> str:
    """The functional hash of a candidate whose probe gave no answer: its structural hash,
    marked (``s``) so that it never equals a computed one."""
    return "s" + structural[1:]


def hash_signature(
    candidate: Candidate, signature: np.ndarray | None, mantissa_bits: int = DEFAULT_MANTISSA_BITS
) -> str:
    """The functional hash of a computed signature (see ``functional_signature``)."""
    if signature is None:
        return structural_fallback(structural_hash(candidate))
    digest = hashlib.sha256(round_mantissa(signature, mantissa_bits).tobytes())
    # What the probe cannot observe is hashed as given: the batch size, and the architecture
    # fields that a smaller stand-in changed (e.g. nb201's cells per stage).
    digest.update(f"batch_size={candidate.batch_size}".encode())
    _, replaced = probe_stand_in(candidate)
    for field, value in sorted(replaced.items()):
        digest.update(f"{field}={value}".encode())
    return digest.hexdigest()[:HASH_CHARS]


def functional_hash(
    candidate: Candidate, mantissa_bits: int = DEFAULT_MANTISSA_BITS, probe: Probe = Probe()
) -> str:
    return hash_signature(candidate, functional_signature(candidate, probe), mantissa_bits)
