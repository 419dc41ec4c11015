"""The fused optimizer step (kernels/fused_optimizers.py) against the eager optimizers winnow
builds: trajectories, the torch fallback, state_dict round trips, parameters without gradients,
a fake-quantized model through winnow's factories.

The kernels run in triton's interpreter on CPU (``use_kernels("triton")``), compiled on CUDA
where a GPU is present. Tolerance: ``max |fused - eager| <= 1e-6 * max |eager|`` per tensor.
The kernel is not bit-identical to eager AdamW on CPU because torch's CPU ``sqrt`` is not
correctly rounded (the kernel's ``sqrt_rn`` is): an ulp in some denominators.
"""

from __future__ import annotations

import importlib
import importlib.abc
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from pytorch_optimizer import Lion
from torch import nn

import winnow.kernels
from winnow.kernels import backend
from winnow.kernels.backend import use_kernels
from winnow.kernels.fused_optimizers import FusedAdamW, FusedLion, FusedSGD
from winnow.search_space import checkpoints
from winnow.search_space.optimizers import backward_and_step, build_optimizer
from winnow.search_space.quantization import QuantPolicy, apply_quantization

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
needs_triton = pytest.mark.skipif(not backend.triton_available(), reason="triton not installed")
MODES = [pytest.param("triton", marks=needs_triton), "torch"]
SHAPES = [(8, 3, 3, 3), (8,), (10, 72), (10,), (1,), (7, 5)]
RTOL = 1e-6  # the "within 1e-6 relative of the eager optimizer", elementwise
PARAM_ULPS = 4  # see assert_close


@dataclass(frozen=True)
class Case:
    """An optimizer as winnow's factory configures it, and two param groups' overrides."""

    name: str
    eager: Callable[..., torch.optim.Optimizer]
    fused: Callable[..., torch.optim.Optimizer]
    options: dict[str, Any]
    groups: tuple[dict[str, Any], dict[str, Any]] = field(default=({}, {}))


CASES = [
    Case(
        "adamw",
        torch.optim.AdamW,
        FusedAdamW,
        {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
        ({"lr": 3e-3, "weight_decay": 0.1}, {"weight_decay": 0.0}),
    ),
    Case(
        "lion",
        Lion,
        FusedLion,
        {"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.1, "weight_decouple": True},
        ({"lr": 3e-4}, {"weight_decay": 0.0}),
    ),
    Case(
        "sgd_nesterov",
        torch.optim.SGD,
        FusedSGD,
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        ({"lr": 0.05}, {"weight_decay": 0.0}),
    ),
    Case(
        "sgd",
        torch.optim.SGD,
        FusedSGD,
        {"lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4},
        ({"lr": 0.05}, {"weight_decay": 0.0}),
    ),
]
IDS = [case.name for case in CASES]


def parameters(device: str) -> list[nn.Parameter]:
    generator = torch.Generator().manual_seed(0)
    return [nn.Parameter(torch.randn(shape, generator=generator).to(device)) for shape in SHAPES]


def build(case: Case, params: list[nn.Parameter], fused: bool) -> torch.optim.Optimizer:
    first, second = case.groups
    groups = [{"params": params[:3], **first}, {"params": params[3:], **second}]
    return (case.fused if fused else case.eager)(groups, **case.options)


def train(optimizer, params, steps: int, generator: torch.Generator, without=lambda i, s: False):
    """``steps`` steps on seeded random gradients; ``without(i, step)``: param i has none.
    Returns each parameter's path length: the sum over the steps of ``|update|``, elementwise."""
    path = [torch.zeros_like(p, requires_grad=False) for p in params]
    for step in range(steps):
        for i, p in enumerate(params):
            grad = torch.randn(p.shape, generator=generator).to(p.device)
            p.grad = None if without(i, step) else grad
        before = [p.detach().clone() for p in params]
        optimizer.step()
        for length, p, b in zip(path, params, before, strict=True):
            length += (p.detach() - b).abs()
    return path


def run(case, device, fused, steps, mode="auto", without=lambda i, s: False):
    """(parameters, optimizer, path lengths) after ``steps`` steps."""
    params = parameters(device)
    optimizer = build(case, params, fused)
    with use_kernels(mode):
        path = train(optimizer, params, steps, torch.Generator().manual_seed(1), without)
    return params, optimizer, path


def assert_close(actual, expected, exact: bool = False, start=None, path=None) -> None:
    """Per tensor: equal when ``exact``, else elementwise within ``RTOL`` of ``expected``.

    For parameters (``start``: where they began; ``path``: the eager run's path lengths) it is
    the update ``p - p0`` that is compared, not ``p`` (whose size, ~1, would hide an update's
    error): within ``RTOL`` of the distance the element travelled (``path``; an update that
    cancels over the steps is no smaller in its error than its steps) plus ``PARAM_ULPS``
    roundings of the float32 parameter (``eps * max(|p0|, |p|)``): once a step differs by an
    ulp (AdamW's one-ulp denominators), the two trajectories round the parameter apart by that
    much, however small the update (measured: up to 1.6).
    """
    start = start if start is not None else [None] * len(expected)
    path = path if path is not None else [None] * len(expected)
    for a, e, s, length in zip(actual, expected, start, path, strict=True):
        if exact:
            assert torch.equal(a, e), (a - e).abs().max()
            continue
        slack = torch.zeros_like(e)
        if s is not None:
            slack = PARAM_ULPS * torch.finfo(e.dtype).eps * torch.maximum(s.abs(), e.abs())
            a, e = a - s, e - s
        scale = e.abs() if length is None else torch.maximum(length, e.abs())
        excess = (a - e).abs() - RTOL * scale - slack
        assert (excess <= 0).all(), f"{int((excess > 0).sum())} elements off, {excess.max()}"


def assert_same_state(fused, eager, fused_params, eager_params, exact: bool) -> None:
    """Every state tensor of every parameter (moments, momentum buffer, AdamW's step)."""
    for pf, pe in zip(fused_params, eager_params, strict=True):
        theirs, ours = eager.state[pe], fused.state[pf]
        assert set(ours) == set(theirs)
        keys = sorted(theirs)
        assert_close([ours[k] for k in keys], [theirs[k] for k in keys], exact)
    if "step" in eager.param_groups[0]:  # Lion counts steps in the group
        assert [g["step"] for g in fused.param_groups] == [g["step"] for g in eager.param_groups]


@pytest.fixture
def kernel_steps(monkeypatch):
    """``{name: launches}`` of ``optim_triton``'s steps: proof that the kernel ran."""
    if not backend.triton_available():
        return {}
    from winnow.kernels import optim_triton

    calls: dict[str, int] = {}
    for name in ("adamw_step", "lion_step", "sgd_step"):
        original = getattr(optim_triton, name)

        def counted(*args, name=name, original=original, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(optim_triton, name, counted)
    return calls


def exact_against_eager(case: Case, mode: str, device: str) -> bool:
    """Where fused and eager agree to the bit: the fallback on CPU (the eager ops), and Lion's
    and SGD's kernels in the interpreter (AdamW's not: torch's CPU sqrt is not correctly
    rounded, the kernel's sqrt_rn is). Compiled on CUDA an ulp may differ (optim_triton)."""
    return device == "cpu" and (mode == "torch" or case.name != "adamw")


def saved(state_dict: dict) -> dict:
    """Through a file as a checkpoint goes (``search_space/checkpoints.py``)."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_100_steps_follow_the_eager_optimizer(case, mode, device, kernel_steps):
    expected, eager, path = run(case, device, fused=False, steps=100)
    assert not kernel_steps
    actual, fused, _ = run(case, device, fused=True, steps=100, mode=mode)
    # one launch per group and step in triton mode (no parameter skips a step here)
    assert sum(kernel_steps.values()) == (200 if mode == "triton" else 0)
    exact = exact_against_eager(case, mode, device)
    start = parameters(device)
    assert_close(actual, expected, exact, start=start, path=path)
    assert_same_state(fused, eager, actual, expected, exact)
    assert all(not torch.equal(p, q) for p, q in zip(actual, start, strict=True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_state_dict_moves_eager_to_fused_to_eager_mid_run(case, mode, device):
    straight, _, path = run(case, device, fused=False, steps=15)
    generator = torch.Generator().manual_seed(1)
    params = parameters(device)
    optimizer = build(case, params, fused=False)
    train(optimizer, params, 5, generator)
    for fused in (True, False):
        state = saved(optimizer.state_dict())
        params = [nn.Parameter(p.detach().clone()) for p in params]  # a new process's model
        optimizer = build(case, params, fused)
        optimizer.load_state_dict(state)
        with use_kernels(mode):
            train(optimizer, params, 5, generator)
        if fused:
            assert same_layout(optimizer.state_dict(), state)
    exact = exact_against_eager(case, mode, device)
    assert_close(params, straight, exact, start=parameters(device), path=path)


@pytest.mark.parametrize("mode", MODES)
def test_a_continued_rung_resumes_the_fused_optimizer_from_its_checkpoint(mode, tmp_path):
    """``checkpoints.capture``/``restore`` (continued rungs) with a fused optimizer and a
    schedule: 3 steps, a file, 3 steps resumed equal 6 straight."""
    case = CASES[0]

    def start():
        params = parameters("cpu")
        model = nn.ParameterList(params)
        optimizer = build(case, params, fused=True)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        return params, model, optimizer, scheduler

    def steps(n, params, optimizer, scheduler, generator):
        for _ in range(n):
            with use_kernels(mode):
                train(optimizer, params, 1, generator)
            scheduler.step()

    params, _, optimizer, scheduler = start()
    steps(6, params, optimizer, scheduler, torch.Generator().manual_seed(1))
    straight = [p.detach().clone() for p in params]

    params, model, optimizer, scheduler = start()
    generator = torch.Generator().manual_seed(1)
    steps(3, params, optimizer, scheduler, generator)
    file = checkpoints.Checkpoint(tmp_path / "run.ckpt", "tag")
    assert file.save(checkpoints.capture(model, optimizer, scheduler, generator, 3, []))
    params, model, optimizer, scheduler = start()
    assert checkpoints.restore(file.load(), model, optimizer, scheduler, generator)[0] == 3
    steps(3, params, optimizer, scheduler, generator)
    assert_close(params, straight, exact=True)  # the same class and mode both times


def same_layout(ours: dict, theirs: dict) -> bool:
    """The same group keys and values, the same state keys, dtypes and shapes."""
    groups = [{k: v for k, v in g.items() if k != "step"} for g in ours["param_groups"]]
    their_groups = [{k: v for k, v in g.items() if k != "step"} for g in theirs["param_groups"]]
    states = {i: {k: (v.dtype, v.shape) for k, v in s.items()} for i, s in ours["state"].items()}
    their_states = {
        i: {k: (v.dtype, v.shape) for k, v in s.items()} for i, s in theirs["state"].items()
    }
    return groups == their_groups and states == their_states


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_parameter_without_a_gradient_is_left_alone(case, device, kernel_steps):
    # param 1 never has a gradient, param 4 on every third step only (AdamW: its step count
    # falls behind the others', so its bias correction differs)
    def without(i, step):
        return i == 1 or (i == 4 and step % 3 != 0)

    expected, eager, path = run(case, device, fused=False, steps=7, without=without)
    actual, fused, _ = run(case, device, fused=True, steps=7, mode="triton", without=without)
    assert kernel_steps
    exact = exact_against_eager(case, "triton", device)
    assert_close(actual, expected, exact, start=parameters(device), path=path)
    assert_same_state(fused, eager, actual, expected, exact)
    assert torch.equal(actual[1], parameters(device)[1])
    assert len(fused.state[actual[1]]) == len(eager.state[expected[1]]) == 0
    if case.name == "adamw":
        assert float(fused.state[actual[4]]["step"]) == 3.0


def quantized_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5), nn.LayerNorm(5)
    )
    return apply_quantization(model, QuantPolicy(weight_bits={"*": 4}, activation_bits=8))


@needs_triton
@pytest.mark.parametrize("name", ["adamw", "lion", "sgd"])
def test_winnows_factories_train_a_fake_quantized_model_alike(name, kernel_steps):
    generator = torch.Generator().manual_seed(2)
    x, y = (
        torch.randn(8, 3, 6, 6, generator=generator),
        torch.randint(0, 5, (8,), generator=generator),
    )
    start = [p.detach().clone() for p in quantized_model().parameters()]
    results, path = [], [torch.zeros_like(p) for p in start]
    for mode in ("auto", "triton"):
        model = quantized_model()
        with use_kernels(mode):
            optimizer = build_optimizer(name, model.parameters(), {"lr": 1e-2})
            for _ in range(3):
                before = [p.detach().clone() for p in model.parameters()]
                backward_and_step(optimizer, nn.functional.cross_entropy(model(x), y))
                if mode == "auto":  # the eager run's path lengths
                    for length, p, b in zip(path, model.parameters(), before, strict=True):
                        length += (p.detach() - b).abs()
        results.append((type(optimizer), list(model.parameters())))
    (eager_type, expected), (fused_type, actual) = results
    assert fused_type.__name__.startswith("Fused") and not eager_type.__name__.startswith("Fused")
    assert sum(kernel_steps.values()) == 3
    # not bit-exact even for Lion and SGD: the fake-quantized forward's gradients differ
    # between kernel and fallback in their last bits (their sums' order)
    assert_close(actual, expected, start=start, path=path)


@pytest.mark.parametrize(
    ("name", "eager"), [("adamw", torch.optim.AdamW), ("lion", Lion), ("sgd", torch.optim.SGD)]
)
def test_on_cpu_winnow_builds_the_eager_optimizers_unless_the_kernels_are_forced(name, eager):
    model = nn.Linear(3, 2)
    for mode in ("auto", "torch"):
        with use_kernels(mode):
            optimizer = build_optimizer(name, model.parameters(), {})
        assert type(optimizer) is eager
        assert len(optimizer.param_groups) == 1 and len(optimizer.param_groups[0]["params"]) == 2
    if backend.triton_available():
        with use_kernels("triton"):
            fused = build_optimizer(name, model.parameters(), {})
        assert fused.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]


def test_importing_the_fused_optimizers_does_not_import_triton(monkeypatch):
    """A fresh import of the module with triton unimportable (in this process: a subprocess
    would spend seconds importing torch)."""

    class NoTriton(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "triton":
                raise ImportError(f"{name} imported")
            return None

    for name in list(sys.modules):
        if name.split(".")[0] == "triton" or name.startswith("winnow.kernels.fused_optimizers"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(winnow.kernels, "fused_optimizers", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoTriton(), *sys.meta_path])
    module = importlib.import_module("winnow.kernels.fused_optimizers")
    assert module.FusedAdamW is not FusedAdamW  # imported afresh


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_parameter_left_out_of_a_new_layout_keeps_no_view_of_the_old_buffer(case, mode):
    """Param 1 has a gradient at the first step only: the second step lays the others out
    afresh, and param 1's state must stop viewing (keeping alive, checkpointing) the first
    step's flat buffers."""
    params = parameters("cpu")
    optimizer = build(case, params, fused=True)
    with use_kernels(mode):
        train(optimizer, params, 2, torch.Generator().manual_seed(1), lambda i, s: i == 1 and s)
    left_out = {k: v for k, v in optimizer.state[params[1]].items() if v.dim() > 0}
    assert left_out and set(left_out) == set(optimizer._keys(optimizer.param_groups[0]))
    for tensor in left_out.values():
        assert tensor.untyped_storage().nbytes() == params[1].numel() * 4
    # the others' state: views of the new layout's buffers (group 0's, param 1 not in them)
    group = sum(p.numel() for p in params[:3] if p is not params[1])
    for p in params[:3]:
        if p is not params[1]:
            for tensor in optimizer.state[p].values():
                if tensor.dim() > 0:
                    assert tensor.untyped_storage().nbytes() == group * 4
