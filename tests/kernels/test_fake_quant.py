"""The fake-quantization kernel (kernels/fake_quant_triton.py) against its torch fallback, which
is torch's own ``fake_quantize_per_{tensor,channel}_affine``: integer codes identical on 10^6
values per configuration (bits 2-8, per tensor and per channel, symmetric and affine), with exact
.5 ties and values at and beyond the range ends; outputs bit-identical and gradients equal;
LSQ's scale and zero-point gradients within 1e-6; winnow's modules unchanged by the routing.

Without a GPU the kernels run in triton's interpreter on CPU tensors (tests/conftest.py); with
one, every test runs again on CUDA tensors, compiled.
"""

from __future__ import annotations

import ast
import contextlib
import functools
from pathlib import Path

import pytest
import torch
from torch import nn

from winnow.kernels import backend
from winnow.kernels import fake_quant as fake_quant_module
from winnow.kernels.backend import use_kernels
from winnow.kernels.fake_quant import (
    fake_quantize,
    fake_quantize_learnable,
    fake_quantize_with_range,
    integer_range,
    lsq_grad_factor,
    quantization_params,
    quantize_codes,
)
from winnow.search_space import quantization as winnow_quantization

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not backend.triton_available(), reason="triton is not installed"),
]

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CONFIGS = [
    (bits, per_channel, symmetric)
    for bits in range(2, 9)
    for per_channel in (False, True)
    for symmetric in (True, False)
]
VALUES = 1_000_000
CHANNELS = 8  # the interpreter costs ~10 ms a program: few channels, long rows
SMALL = 100_000  # values for the forward/backward comparisons


def both(fn):
    """``fn()`` under the kernel and under the fallback: (kernel's, fallback's); checks that the
    kernel ran (every kernel path loads ``fake_quant_triton`` through ``_triton``) and that the
    fallback did not."""
    with use_kernels("triton"), _kernel_loads() as loads:
        kernel = fn()
    assert loads, "the kernel did not run"
    with use_kernels("torch"), _kernel_loads() as loads:
        fallback = fn()
    assert not loads, "the fallback ran the kernel"
    return kernel, fallback


@contextlib.contextmanager
def _kernel_loads():
    """A list that grows by one for each ``fake_quant._triton()`` call in the block."""
    loads, original = [], fake_quant_module._triton

    def counted():
        loads.append(1)
        return original()

    fake_quant_module._triton = counted
    try:
        yield loads
    finally:
        fake_quant_module._triton = original


# ------------------------------------------------------------------------------- test data


def _ranges(generator: torch.Generator, rows: int, bits: int) -> tuple[torch.Tensor, ...]:
    """Per-row [low, high]: mixed signs, all positive and all negative rows among them."""
    low = -torch.rand(rows, generator=generator) * 3 - 0.01
    high = torch.rand(rows, generator=generator) * 3 + 0.01
    low[1::4] = high[1::4] * 0.25  # all positive (affine widens to include 0)
    high[2::4] = low[2::4] * 0.5  # all negative
    return low * bits, high * bits


def _ties(low: torch.Tensor, high: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Per row, values x with float32 x * inv_scale == k + 0.5 exactly (inv_scale = 1 / scale of
    the row's [low, high]), for every k from 2 below the code range to 2 above it."""
    qmin, qmax = integer_range(bits, symmetric)
    scale, zero_point = quantization_params(low, high, bits, symmetric)
    inv_scale = (1.0 / scale)[:, None]
    ks = torch.arange(qmin - 2, qmax + 2, dtype=torch.float32)[None, :] - zero_point[:, None]
    targets = ks + 0.5
    guess = targets / inv_scale
    found = torch.full_like(guess, float("nan"))
    for step in range(-3, 4):  # the neighbours of the guess, a few float32 ulps either way
        candidate = guess
        direction = torch.full_like(guess, float("inf") if step > 0 else float("-inf"))
        for _ in range(abs(step)):
            candidate = torch.nextafter(candidate, direction)
        hit = (candidate * inv_scale == targets) & found.isnan()
        found = torch.where(hit, candidate, found)
    return found


def _rows(low, high, bits, symmetric, columns, generator, beyond: bool) -> torch.Tensor:
    """[rows, columns]: each row starts with its range ends and its exact ties, the rest uniform
    in [low, high]; ``beyond`` adds values just and far beyond the ends (a given range), else
    only values inside the row's own [low, high] (its observed range stays [low, high])."""
    ties = _ties(low, high, bits, symmetric)
    lo, hi = low[:, None], high[:, None]
    if not beyond:
        ties = torch.where((ties >= lo) & (ties <= hi), ties, hi)
    ends = [lo, hi]
    if beyond:
        up, down = torch.tensor(float("inf")), torch.tensor(float("-inf"))
        ends += [torch.nextafter(lo, down), torch.nextafter(hi, up), lo * 3 - 1, hi * 3 + 1]
    ties = torch.where(ties.isnan(), hi, ties)
    head = torch.cat([*ends, ties], dim=1)
    fill = torch.rand(len(low), columns - head.shape[1], generator=generator)
    return torch.cat([head, lo + fill * (hi - lo)], dim=1)


def _tie_count(x, low, high, bits, symmetric) -> int:
    scale, _ = quantization_params(low, high, bits, symmetric)
    v = x * (1.0 / scale)[:, None]
    return int((v - v.floor() == 0.5).sum())


def config_data(bits, per_channel, symmetric, device, beyond, values=VALUES):
    """(x, low, high, axis): x of ``values`` values, per channel along axis 0 of [8, n] or one
    flat row; low/high the range that the rows were built in (x's own when not ``beyond``)."""
    generator = torch.Generator().manual_seed(bits * 4 + 2 * per_channel + symmetric)
    rows = CHANNELS if per_channel else 1
    low, high = _ranges(generator, rows, bits)
    x = _rows(low, high, bits, symmetric, values // rows, generator, beyond)
    assert _tie_count(x, low, high, bits, symmetric) >= rows  # the ties did land on .5
    if not per_channel:
        return x.reshape(-1).to(device), low[0].to(device), high[0].to(device), None
    return x.to(device), low.to(device), high.to(device), 0


# ---------------------------------------------------------------- codes, outputs, gradients


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("bits", "per_channel", "symmetric"), CONFIGS)
def test_codes_are_the_fallbacks_over_the_observed_range(device, bits, per_channel, symmetric):
    x, low, high, axis = config_data(bits, per_channel, symmetric, device, beyond=False)
    kernel, fallback = both(lambda: quantize_codes(x, bits, symmetric, axis))
    assert kernel.dtype == torch.int32 and torch.equal(kernel, fallback)
    qmin, qmax = integer_range(bits, symmetric)
    assert int(kernel.min()) >= qmin and int(kernel.max()) <= qmax


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("bits", "per_channel", "symmetric"), CONFIGS)
def test_codes_are_the_fallbacks_for_a_given_range(device, bits, per_channel, symmetric):
    x, low, high, axis = config_data(bits, per_channel, symmetric, device, beyond=True)
    kernel, fallback = both(lambda: quantize_codes(x, bits, symmetric, axis, low, high))
    assert torch.equal(kernel, fallback)
    qmin, qmax = integer_range(bits, symmetric)
    assert int((kernel == qmin).sum()) > 0 and int((kernel == qmax).sum()) > 0  # clipped ends


def _forward_backward(fn, x, seed=1):
    x = x.clone().requires_grad_()
    y = fn(x)
    upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    y.backward(upstream.to(y.device))
    return y.detach(), x.grad


def _both_forward_backward(fn, x):
    """(output, input gradient) under the kernel and under the fallback."""
    return both(lambda: _forward_backward(fn, x))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("bits", "per_channel", "symmetric"), CONFIGS)
def test_outputs_and_gradients_are_the_fallbacks(device, bits, per_channel, symmetric):
    x, _, _, _ = config_data(bits, per_channel, symmetric, device, False, values=SMALL)
    observed = _both_forward_backward(lambda t: fake_quantize(t, bits, per_channel, symmetric), x)
    x, low, high, axis = config_data(bits, per_channel, symmetric, device, True, values=SMALL)
    ranged = _both_forward_backward(
        lambda t: fake_quantize_with_range(t, low, high, bits, symmetric, axis), x
    )
    for (y_kernel, grad_kernel), (y_fallback, grad_fallback) in (observed, ranged):
        assert torch.equal(y_kernel, y_fallback)  # bit for bit: same codes, same scale
        assert torch.equal(grad_kernel, grad_fallback)  # upstream * the same 0/1 mask
    (_, grad_ranged), _ = ranged
    assert 0 < int((grad_ranged == 0).sum()) < grad_ranged.numel()  # some clipped, most not


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("shape", "axis"), [((50, 8, 25), 1), ((6, 5, 7), -1), ((16, 3, 3, 3), 0)])
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("symmetric", [True, False])
def test_any_channel_axis(device, shape, axis, per_channel, symmetric):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(device)
    (y_k, g_k), (y_f, g_f) = _both_forward_backward(
        lambda t: fake_quantize(t, 3, per_channel, symmetric, axis=axis), x
    )
    assert torch.equal(y_k, y_f) and torch.equal(g_k, g_f)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_channel", [True, False])
def test_constant_and_zero_tensors_use_the_minimum_scale(device, per_channel):
    x = torch.zeros(4, 64, device=device)
    x[1] = 0.25  # a constant channel beside zero ones
    for symmetric in (True, False):
        kernel, fallback = both(functools.partial(fake_quantize, x, 4, per_channel, symmetric))
        assert torch.equal(kernel, fallback) and torch.isfinite(kernel).all()


def test_bits_32_is_the_identity_and_has_no_codes():
    x = torch.randn(10)
    with use_kernels("triton"):
        assert fake_quantize(x, 32, True, True) is x
        assert fake_quantize_with_range(x, x.min(), x.max(), 32, True) is x
        with pytest.raises(ValueError, match="32 bits"):
            quantize_codes(x, 32, True)


def test_the_module_imports_triton_only_inside_the_kernel_path():
    """``import winnow.kernels.fake_quant`` must not import triton (a second at least): no
    module-level import of it or of the Triton module (a subprocess would cost seconds)."""
    tree = ast.parse(Path(fake_quant_module.__file__).read_text())
    modules = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules += [f"{node.module}.{alias.name}" for alias in node.names]
    parts = {part for module in modules for part in module.split(".")}
    assert "torch" in parts and not parts & {"triton", "fake_quant_triton"}, modules


# ------------------------------------------------------------------------------- LSQ


def _lsq_case(per_channel, symmetric, bits, device):
    generator = torch.Generator().manual_seed(bits + 2 * per_channel + symmetric)
    channels = 4 if per_channel else 1
    x = torch.randn(channels, SMALL // channels, generator=generator) * 2 + 0.3
    qmin, qmax = integer_range(bits, symmetric)
    # codes reach from about -5 to 5 (2.5 standard deviations of x): about 1% clipped
    scale = 5 / ((qmax - qmin) / 2 + 0.5) * (1 + torch.rand(channels, generator=generator) / 4)
    if symmetric:
        zero_point = torch.zeros(channels)
    else:  # non-integer, and an exact .5 (the forward rounds it to even, torch's backward up)
        zero_point = qmax // 2 - 1 + torch.tensor([0.5, 0.7, 1.3, 1.2])[:channels]
    if not per_channel:
        return x.reshape(-1).to(device), scale[0].to(device), zero_point[0].to(device), None
    return x.to(device), scale.to(device), zero_point.to(device), 0


def _lsq_run(x, scale, zero_point, bits, symmetric, axis):
    x = x.clone().requires_grad_()
    scale, zero_point = scale.clone().requires_grad_(), zero_point.clone().requires_grad_()
    factor = lsq_grad_factor(x.numel(), bits, symmetric)
    y = fake_quantize_learnable(x, scale, zero_point, bits, symmetric, axis, factor)
    upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(5)).to(y.device)
    y.backward(upstream)
    return y.detach(), x.grad, scale.grad, zero_point.grad, upstream, factor


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("symmetric", [True, False])
def test_lsq_matches_torchs_learnable_fake_quantize(device, bits, per_channel, symmetric):
    x, scale, zero_point, axis = _lsq_case(per_channel, symmetric, bits, device)
    kernel, fallback = both(lambda: _lsq_run(x, scale, zero_point, bits, symmetric, axis))
    (y_k, dx_k, ds_k, dz_k, upstream, factor), (y_f, dx_f, ds_f, dz_f, _, _) = kernel, fallback
    assert torch.equal(y_k, y_f) and torch.equal(dx_k, dx_f)
    assert ds_k.shape == scale.shape and dz_k.shape == zero_point.shape
    # The sums' float32 order differs: 1e-6 of the terms' magnitudes (inside the range a scale
    # term is at most |upstream| / 2; where clipped |upstream| * max |q_end - zp|).
    qmin, qmax = integer_range(bits, symmetric)
    clipped = (dx_k == 0).reshape(len(scale.reshape(-1)), -1)
    size = upstream.abs().reshape(clipped.shape)
    widest = max(abs(qmin - float(zero_point.min())), abs(qmax - float(zero_point.max())))
    magnitude = torch.where(clipped, size * widest, size * 0.5).sum(dim=1) * factor
    assert bool(clipped.any()) and float(clipped.float().mean()) < 0.1
    assert ((ds_k.reshape(-1) - ds_f.reshape(-1)).abs() <= 1e-6 * magnitude).all(), (ds_k, ds_f)
    zp_magnitude = (size * clipped).sum(dim=1) * scale.reshape(-1) * factor
    assert ((dz_k.reshape(-1) - dz_f.reshape(-1)).abs() <= 1e-6 * zp_magnitude + 1e-12).all()


def _fma_rounding_differs(scale: float, zero_point: float) -> torch.Tensor:
    """Values x for which nearbyint(zp + x * inv_scale) depends on whether the product is
    rounded before the add (two roundings) or fused with it (one): x within a few ulps of
    (k + 0.5 - zp) / inv_scale, where the rounded product lands on the tie and the exact one not.
    """
    inv = torch.tensor(1.0) / torch.tensor(scale)
    guess = (torch.arange(20, 120, dtype=torch.float32) + 0.5 - zero_point) / inv
    near = [guess]
    for direction in (float("inf"), float("-inf")):
        step = guess
        for _ in range(3):
            step = torch.nextafter(step, torch.tensor(direction))
            near.append(step)
    x = torch.cat(near)
    twice = torch.round(x * inv + zero_point)
    once = torch.round((x.double() * inv.double() + zero_point).float())
    return x[twice != once][:CHANNELS]


@pytest.mark.parametrize("device", DEVICES)
def test_lsq_backward_rounds_with_a_fused_multiply_add_as_torch_does(device):
    """torch's compiled learnable kernel contracts zp + x * inv_scale into an FMA; the kernel
    asks for one (tl.fma), so the values where that changes the rounding agree too."""
    scale, zero_point, bits = 0.0123, 7.0, 8
    x = _fma_rounding_differs(scale, zero_point)
    assert len(x) > 0
    channels = x[:, None].repeat(1, 2).to(device)  # one value per channel: its own gradient
    scales = torch.full((len(x),), scale, device=device)
    zero_points = torch.full((len(x),), zero_point, device=device)
    kernel, fallback = both(lambda: _lsq_run(channels, scales, zero_points, bits, False, 0))
    torch.testing.assert_close(kernel[2], fallback[2], rtol=1e-6, atol=0)


# ------------------------------------------------------------------ winnow's modules through it


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("symmetric", [True, False])
def test_activation_observer_is_the_same_with_kernels_on_and_off(device, symmetric):
    batches = [torch.randn(8, 4, 6, 6, generator=torch.Generator().manual_seed(s)) * (1 + s)
               for s in range(3)]  # fmt: skip
    results = []
    for mode in ("triton", "torch"):
        quantizer = winnow_quantization.ActivationFakeQuant(4, symmetric).to(device)
        outputs = []
        with use_kernels(mode):
            for train, batch in [(True, b) for b in batches] + [(False, batches[2] * 3)]:
                quantizer.train(train)
                outputs += list(_forward_backward(quantizer, batch.to(device)))
        results.append((outputs, quantizer.running_min.clone(), quantizer.running_max.clone()))
    (out_k, min_k, max_k), (out_f, min_f, max_f) = results
    assert torch.equal(min_k, min_f) and torch.equal(max_k, max_f)
    for kernel, fallback in zip(out_k, out_f, strict=True):
        assert torch.equal(kernel, fallback)
    assert bool((out_k[-1] == 0).any())  # eval mode clipped values beyond the frozen range


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("symmetric", [True, False])
def test_the_fallback_is_what_winnow_computed_before(per_channel, symmetric):
    """The torch path is torch's ops on winnow's parameters, as search_space computed them."""
    x = torch.randn(16, 3, 3, 3, generator=torch.Generator().manual_seed(7)).requires_grad_()
    with use_kernels("auto"):  # auto on CPU: the fallback
        y = winnow_quantization.WeightFakeQuant(4, per_channel, symmetric)(x)
    flat = x.detach().reshape(16, -1)
    low, high = flat.aminmax(dim=1) if per_channel else x.detach().aminmax()
    scale, zero_point = quantization_params(low, high, 4, symmetric)
    qmin, qmax = integer_range(4, symmetric)
    if per_channel:
        expected = torch.fake_quantize_per_channel_affine(x, scale, zero_point, 0, qmin, qmax)
    else:
        expected = torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)
    assert torch.equal(y, expected)


def _quantized_net(granularity: str, symmetric: bool) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, groups=2), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
    )  # fmt: skip
    policy = winnow_quantization.QuantPolicy(
        weight_bits={"*": 4}, activation_bits=8, granularity=granularity, symmetric=symmetric
    )
    return winnow_quantization.apply_quantization(net, policy)


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_a_quantized_network_trains_the_same_with_kernels_on_and_off(granularity, symmetric):
    """Weights through parametrize, inputs through the observers: a training step's outputs and
    every parameter gradient, then an eval forward, bit-identical."""
    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    results = []
    for mode in ("triton", "torch"):
        net = _quantized_net(granularity, symmetric)
        with use_kernels(mode):
            y = net(x)
            y.square().sum().backward()
            net.eval()
            results.append([y.detach(), *(p.grad for p in net.parameters()), net(x * 2).detach()])
    for kernel, fallback in zip(*results, strict=True):
        assert torch.equal(kernel, fallback)


def _second_order(fn, device):
    """d/dw of sum(d loss/dw) through ``fn`` (a backward with ``create_graph=True``, then one
    more: what Sophia's and GraSP's Hessian products take)."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4, 50, generator=g).to(device)
    w = torch.randn(4, 50, generator=g).to(device).requires_grad_()
    target = torch.randn(4, 50, generator=g).to(device)
    loss = ((fn(x * w) - target) ** 2 * target).sum()
    (grad,) = torch.autograd.grad(loss, w, create_graph=True)
    return torch.autograd.grad((grad * target).sum(), w)[0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_channel", [True, False])
def test_a_double_backward_through_the_straight_through_estimator_is_torchs(device, per_channel):
    low, high = torch.tensor([-1.5] * 4).to(device), torch.tensor([1.2] * 4).to(device)
    axis = 0 if per_channel else None
    low, high = (low, high) if per_channel else (low[0], high[0])
    kernel, fallback = both(
        lambda: _second_order(
            lambda t: fake_quantize_with_range(t, low, high, 4, False, axis), device
        )
    )
    assert fallback.abs().max() > 0.1  # torch's backward, grad * mask, is linear in grad
    torch.testing.assert_close(kernel, fallback, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_lsqs_double_backward_raises_as_torchs_does(device):
    scale, zero_point = torch.tensor([0.2]).to(device), torch.tensor([1.0]).to(device)
    for mode in ("triton", "torch"):
        with use_kernels(mode), pytest.raises(RuntimeError, match="not implemented"):
            _second_order(lambda t: fake_quantize_learnable(t, scale, zero_point, 4, False), device)
