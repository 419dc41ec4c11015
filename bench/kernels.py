"""``winnow bench kernels``: each Triton kernel against its eager torch fallback, and one
training epoch of a quantized nb201 candidate with the kernels on and off.

Timings are medians of ``torch.utils.benchmark.Timer.blocked_autorange`` (it synchronizes CUDA
and repeats until ``min_run_time``), on the device the kernels run on: CUDA when there is one.
Without a GPU the kernels run in triton's interpreter (``TRITON_INTERPRET=1``, numpy on the
CPU), which checks what they compute but says nothing about their speed on a GPU: the JSON says
``"interpreter": true`` and the shapes are scaled down so the run stays short. ``ratio`` is the
eager time over the kernel's (above 1: the kernel is faster); ``max_abs_diff`` is the largest
difference between the kernel's outputs (and gradients) and the fallback's on that case,
``max_rel_diff`` the same over each tensor's largest magnitude.

The fallbacks are what winnow runs without the kernels: fake quantization as torch's
``aminmax`` + scale / zero point + ``fake_quantize_per_*_affine`` ops, the optimizers
``torch.optim`` / pytorch-optimizer's (foreach on CUDA, torch's default there), RMSNorm and
LayerNorm as ``nn.RMSNorm`` / ``nn.LayerNorm`` on a channels-last view, BatchNorm statistics as
``torch.var_mean``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.benchmark import Timer

from winnow.kernels import backend
from winnow.kernels.backend import use_kernels

EAGER, KERNEL = "torch", "triton"


def prepare_interpreter() -> bool:
    """Without CUDA, choose triton's interpreter; it must be chosen before triton is first
    imported, which this bench does not do before it runs. Returns whether it interprets."""
    if torch.cuda.is_available():
        return backend.interpreting()
    if "triton" not in sys.modules:
        os.environ["TRITON_INTERPRET"] = "1"
    return backend.interpreting()


def median_seconds(fn: Callable[[], Any], min_run_time: float) -> float:
    fn()  # compile / warm up outside the measurement
    return (
        Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median
    )


@dataclass(frozen=True)
class Case:
    """One kernel on one shape: ``make()``, called under a kernel mode, returns a callable that
    does the work once and returns the tensors compared between the modes."""

    kernel: str
    shape: str
    make: Callable[[], Callable[[], tuple[Tensor, ...]]]


def run_case(case: Case, min_run_time: float) -> dict[str, Any]:
    timings, outputs = {}, {}
    for mode in (EAGER, KERNEL):
        with use_kernels(mode):
            work = case.make()
            outputs[mode] = [t.detach().clone() for t in work()]
            timings[mode] = median_seconds(work, min_run_time)
    pairs = list(zip(outputs[EAGER], outputs[KERNEL], strict=True))
    diff = max((a.double() - b.double()).abs().max().item() for a, b in pairs)
    # relative to each tensor's largest value: a weight gradient sums over every position
    relative = max(
        (a.double() - b.double()).abs().max().item() / max(a.double().abs().max().item(), 1e-30)
        for a, b in pairs
    )
    return {
        "kernel": case.kernel,
        "shape": case.shape,
        "kernel_ms": round(timings[KERNEL] * 1e3, 4),
        "eager_ms": round(timings[EAGER] * 1e3, 4),
        "ratio": float(f"{timings[EAGER] / timings[KERNEL]:.4g}"),
        "max_abs_diff": diff,
        "max_rel_diff": relative,
    }


# --- the cases ----------------------------------------------------------------------------------


def _forward_backward(
    forward: Callable[..., Tensor], inputs: list[Tensor]
) -> Callable[[], tuple[Tensor, ...]]:
    """Forward and backward of ``forward(*inputs)`` against a fixed upstream gradient."""
    upstream: list[Tensor] = []

    def work() -> tuple[Tensor, ...]:
        for t in inputs:
            t.grad = None
        out = forward(*inputs)
        if not upstream:
            upstream.append(_seeded(out.shape, out.device, seed=99))
        out.backward(upstream[0])
        return (out, *(t.grad for t in inputs if t.grad is not None))

    return work


def fake_quant_cases(device: torch.device, small: bool) -> Iterator[Case]:
    from winnow.kernels.fake_quant import fake_quantize, fake_quantize_with_range

    weight = (64, 64, 3, 3) if small else (256, 256, 3, 3)
    activation = (16, 16, 16, 16) if small else (128, 64, 32, 32)
    for bits, per_channel, symmetric in ((4, True, True), (8, False, False)):
        name = f"fake_quant weight w{bits} {'per_channel' if per_channel else 'per_tensor'}"
        name += " symmetric" if symmetric else " affine"

        def make(bits=bits, per_channel=per_channel, symmetric=symmetric):
            x = _seeded(weight, device).requires_grad_()
            return _forward_backward(lambda t: fake_quantize(t, bits, per_channel, symmetric), [x])

        yield Case(name, "x".join(map(str, weight)), make)

    def make_activation():
        x = _seeded(activation, device).requires_grad_()
        low, high = torch.tensor(-2.0, device=device), torch.tensor(2.5, device=device)
        return _forward_backward(lambda t: fake_quantize_with_range(t, low, high, 8, False), [x])

    yield Case(
        "fake_quant activation a8 affine (running range)",
        "x".join(map(str, activation)),
        make_activation,
    )


def norm_cases(device: torch.device, small: bool) -> Iterator[Case]:
    from winnow.kernels.norms import batch_norm_statistics, layer_norm_channels, rms_norm_channels

    shape = (8, 16, 16, 16) if small else (128, 64, 32, 32)
    channels = shape[1]

    def make_rms():
        x, w = (
            _seeded(shape, device).requires_grad_(),
            _seeded((channels,), device).requires_grad_(),
        )
        return _forward_backward(lambda t, g: rms_norm_channels(t, g, 1e-6), [x, w])

    def make_layer():
        x = _seeded(shape, device).requires_grad_()
        w, b = _seeded((channels,), device).requires_grad_(), _seeded((channels,), device)
        b.requires_grad_()
        return _forward_backward(lambda t, g, c: layer_norm_channels(t, g, c, 1e-5), [x, w, b])

    def make_statistics():
        x = _seeded(shape, device)
        return lambda: tuple(batch_norm_statistics(x))

    size = "x".join(map(str, shape))
    yield Case("rms_norm channels (forward+backward)", size, make_rms)
    yield Case("layer_norm channels (forward+backward)", size, make_layer)
    yield Case("batch_norm statistics", size, make_statistics)


def optimizer_cases(device: torch.device, small: bool) -> Iterator[Case]:
    """One step of winnow's AdamW, Lion and SGD (its factories choose the fused class when the
    kernels are on) over the parameters of nb201 networks: many small tensors, the launch-bound
    case. Two sizes, both under 1 M parameters."""
    for channels in (8,) if small else (8, 16):
        shapes = [p.shape for p in _nb201_network(channels).parameters()]
        count = sum(math.prod(s) for s in shapes)
        for name in ("adamw", "lion", "sgd"):
            yield Case(
                f"optimizer step {name}",
                f"{len(shapes)} tensors, {count} params",
                lambda name=name, shapes=shapes: _stepping(name, shapes, device),
            )


def _stepping(name: str, shapes: list[torch.Size], device: torch.device):
    from winnow.search_space.optimizers import build_optimizer

    params = [nn.Parameter(_seeded(s, device, seed=i)) for i, s in enumerate(shapes)]
    for i, p in enumerate(params):
        p.grad = _seeded(p.shape, device, seed=1000 + i) * 1e-2
    hp = {"momentum": 0.9} if name == "sgd" else {}
    optimizer = build_optimizer(name, params, hp)

    def work() -> tuple[Tensor, ...]:
        optimizer.step()
        return tuple(params)

    return work


def _seeded(shape: tuple[int, ...] | torch.Size, device: torch.device, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator).to(device)


def _nb201_network(channels: int) -> nn.Module:
    from winnow.search_space.candidate import Candidate

    return Candidate(architecture=_nb201_arch(channels)).build_model(10, (3, 32, 32))


def _nb201_arch(channels: int, cells_per_stage: int = 5) -> dict[str, Any]:
    cell = (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|"
        "+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"
    )
    return {
        "family": "nb201",
        "cell": cell,
        "channels": channels,
        "cells_per_stage": cells_per_stage,
    }


# --- the end-to-end epoch -----------------------------------------------------------------------


def quantized_candidate(channels: int, cells_per_stage: int) -> Any:
    """An nb201 candidate with 4-bit per-channel weights and 8-bit activations, LayerNorm (the
    norm axis' fused kernel) and AdamW (a fused step)."""
    from winnow.search_space.candidate import Candidate
    from winnow.search_space.quantization import QuantPolicy

    return Candidate(
        architecture=_nb201_arch(channels, cells_per_stage),
        normalization="layernorm",
        optimizer={"name": "adamw", "lr": 1e-3, "batch_size": 128},
        quantization=QuantPolicy(weight_bits={"*": 4}, activation_bits=8),
    )


def epoch_seconds(
    mode: str, dataset_spec: str, device: torch.device, arch: tuple[int, int], steps: int | None
) -> float:
    from winnow.records import Fidelity
    from winnow.search_space.datasets import load_dataset
    from winnow.search_space.training import seed_everything, synchronize, train

    candidate, dataset = quantized_candidate(*arch), load_dataset(dataset_spec)
    with use_kernels(mode):
        generator = seed_everything(0)
        model = candidate.build_model(dataset.num_classes, dataset.input_shape).to(device)
        fidelity = Fidelity(epochs=1, steps=steps)
        synchronize(device)
        start = time.perf_counter()
        train(model, candidate, dataset, fidelity, device, generator)
        synchronize(device)
    return time.perf_counter() - start


def run(
    dataset_spec: str,
    min_run_time: float = 0.5,
    epoch_steps: int | None = None,
    channels: int = 16,
    cells_per_stage: int = 5,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every case and the epoch; ``epoch_steps`` bounds the epoch (default: a whole one on a
    GPU, one step in the interpreter, where a step of the default candidate takes minutes)."""
    interpreter = prepare_interpreter()
    if not backend.triton_available():
        raise RuntimeError("winnow bench kernels needs triton, which is not installed")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    small = device.type != "cuda"
    if small and epoch_steps is None:
        epoch_steps = 1
    results = []
    cases = (
        *fake_quant_cases(device, small),
        *optimizer_cases(device, small),
        *norm_cases(device, small),
    )
    for case in cases:
        results.append(run_case(case, min_run_time))
        if progress is not None:
            progress(f"{case.kernel} [{case.shape}]: ratio {results[-1]['ratio']}")
    arch = (channels, cells_per_stage)
    off = epoch_seconds(EAGER, dataset_spec, device, arch, epoch_steps)
    on = epoch_seconds(KERNEL, dataset_spec, device, arch, epoch_steps)
    import triton

    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "interpreter": interpreter,
        "triton": triton.__version__,
        "torch": torch.__version__,
        "kernels": results,
        "epoch": {
            "candidate": quantized_candidate(*arch).describe(),
            "dataset": dataset_spec,
            "steps": epoch_steps,
            "kernels_on_seconds": round(on, 3),
            "kernels_off_seconds": round(off, 3),
            "ratio": float(f"{off / on:.4g}"),
        },
    }
