"""The channel norms and BatchNorm statistics of kernels/norms.py: the Triton kernels (triton's
interpreter on CPU, compiled on CUDA) against their torch fallbacks, and the winnow modules that
run them (RMSNorm2d, LayerNorm2d, the supernet's BatchNorm re-estimation)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from winnow.kernels import backend
from winnow.kernels.backend import use_kernels
from winnow.kernels.norms import batch_norm_statistics, layer_norm_channels, rms_norm_channels
from winnow.search_space.archs.nb201 import NB201Network, parse_arch
from winnow.search_space.norms import LayerNorm2d, RMSNorm2d
from winnow.supernet.batchnorm import batchnorm_layers, recalibrate_batchnorm

pytestmark = pytest.mark.usefixtures("one_thread")

needs_triton = pytest.mark.skipif(not backend.triton_available(), reason="triton not installed")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}

# odd channel counts, H*W of 21 and 25 (no power of two), N = 1, 1x1 maps, one channel, and
# the mlp family's [N, C] (one row too)
SHAPES = [(2, 5, 7, 3), (1, 3, 5, 5), (3, 16, 4, 4), (2, 9, 1, 1), (2, 1, 3, 3), (6, 7), (1, 9)]
# (function, affine parameters it takes, eps): eps=None and affine off as the modules allow
CASES = [
    ("rms", ("weight",), 1e-6),
    ("rms", (), None),
    ("layer", ("weight", "bias"), 1e-5),
    ("layer", ("weight",), 1e-5),
    ("layer", (), 1e-5),
]


@pytest.fixture(params=["one tile", "many tiles"])
def tiles(request, monkeypatch):
    """One program per sample (the interpreter's default), or small tiles: many programs, masked
    tails and partial dweight / dbias sums to reduce."""
    if request.param == "many tiles":
        from winnow.kernels import norms_triton

        monkeypatch.setattr(norms_triton, "TILE", 32)
        monkeypatch.setattr(norms_triton, "INTERPRETER_TILE", 32)
    return request.param


def _norm(kind, x, params, eps):
    if kind == "rms":
        return rms_norm_channels(x, params.get("weight"), eps)
    return layer_norm_channels(x, params.get("weight"), params.get("bias"), eps)


def _outputs(mode, kind, x, params, eps, dy):
    """``{"y", "dx", "weight", "bias"}``: the norm and its gradients under kernel mode ``mode``
    (only the parameters in ``params``)."""
    x = x.detach().requires_grad_()
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    with use_kernels(mode):
        y = _norm(kind, x, params, eps)
        grads = torch.autograd.grad(y, [x, *params.values()], dy)
    return dict(zip(["y", "dx", *params], (y, *grads), strict=True))


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize(("kind", "affine", "eps"), CASES)
def test_the_kernel_forward_and_backward_match_torch(device, shape, kind, affine, eps, tiles):
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=g) * 2 + 0.5).to(device)
    dy = torch.randn(shape, generator=g).to(device)
    params = {name: torch.randn(shape[1], generator=g).to(device) for name in affine}

    kernel = _outputs("triton", kind, x, params, eps, dy)
    fallback = _outputs("torch", kind, x, params, eps, dy)

    if kind == "layer" and shape[1] == 1:
        # one channel: x - mean is exactly 0, so are dx and dweight; torch's are rounding noise
        # times rstd = 1/sqrt(eps) (up to 3e-5, measured): the kernel's are checked exactly
        for name in {"dx", "weight"} & set(kernel):
            assert torch.equal(kernel.pop(name), torch.zeros_like(fallback.pop(name))), name
    for name, want in fallback.items():
        got = kernel[name]
        torch.testing.assert_close(got, want, **TOLERANCE, msg=lambda m, name=name: f"{name}: {m}")


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("memory", ["channels_last", "strided"])
def test_the_kernel_reads_channels_last_and_strided_inputs(device, memory):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(2, 6, 5, 10, generator=g).to(device)
    x = base.to(memory_format=torch.channels_last) if memory == "channels_last" else base[..., ::2]
    dy = torch.randn(x.shape, generator=g).to(device)
    params = {"weight": torch.randn(6, generator=g).to(device)}
    kernel = _outputs("triton", "layer", x, params, 1e-5, dy)
    fallback = _outputs("torch", "layer", x, params, 1e-5, dy)
    for name, want in fallback.items():
        torch.testing.assert_close(kernel[name], want, **TOLERANCE)


def _old_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The modules' forward before winnow.kernels: torch's norm on the channels-last view."""
    parent = nn.RMSNorm if isinstance(module, RMSNorm2d) else nn.LayerNorm
    return parent.forward(module, x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("make", [lambda: RMSNorm2d(6, eps=1e-6), lambda: LayerNorm2d(6)])
def test_the_modules_fallback_is_bit_identical_to_their_old_forward(make):
    torch.manual_seed(0)
    module = make()
    nn.init.normal_(module.weight)
    x = torch.randn(3, 6, 5, 7, requires_grad=True)
    dy = torch.randn(3, 6, 5, 7)
    results = []
    for forward in (module, lambda x: _old_forward(module, x)):
        y = forward(x)  # on CPU the default (auto) runs the fallback
        results.append((y, *torch.autograd.grad(y, [x, module.weight], dy)))
    for new, old in zip(*results, strict=True):
        assert torch.equal(new, old)


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make", [lambda: RMSNorm2d(5), lambda: LayerNorm2d(5, bias=False)])
def test_the_modules_run_the_kernel_when_it_is_forced(device, make, kernel_calls):
    module = make().to(device)
    x = torch.randn(2, 5, 3, 3, device=device) * 3
    with use_kernels("triton"):
        got = module(x)
    assert kernel_calls == {"norm_forward": 1}
    torch.testing.assert_close(got, _old_forward(module, x), **TOLERANCE)


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(4, 5, 7, 3), (1, 3, 5, 5), (9, 7)], ids=str)
@pytest.mark.parametrize("offset", [0.0, 1e3])  # a large mean: sum-of-squares would cancel
def test_batch_statistics_match_the_fallback_and_fp64(device, shape, offset, tiles):
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(shape, generator=g) * 3 + offset).to(device)
    with use_kernels("triton"):
        mean, var = batch_norm_statistics(x)
    with use_kernels("torch"):
        want_mean, want_var = batch_norm_statistics(x)
    dims = (0, *range(2, x.dim()))
    exact_var, exact_mean = torch.var_mean(x.double(), dim=dims, correction=0)
    torch.testing.assert_close(mean, want_mean, **TOLERANCE)
    torch.testing.assert_close(var, want_var, **TOLERANCE)
    torch.testing.assert_close(var.double(), exact_var, **TOLERANCE)
    torch.testing.assert_close(mean.double(), exact_mean, rtol=1e-6, atol=0)


def _network() -> nn.Module:
    torch.manual_seed(0)
    cell = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
    return NB201Network(parse_arch(cell), 10, channels=4, cells_per_stage=1)


def _statistics(model: nn.Module) -> list[torch.Tensor]:
    return [t for m in batchnorm_layers(model) for t in m.buffers()]


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(4, 3, 8, 8, generator=g) * 2 + 1 for _ in range(3)]


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
def test_recalibration_with_the_kernel_matches_torchs_batchnorm(device, kernel_calls):
    fallback, kernel = _network().to(device), _network().to(device)
    batches = [x.to(device) for x in _batches()]
    with use_kernels("torch"):
        assert recalibrate_batchnorm(fallback, batches, num_batches=2) == 2
    assert not kernel_calls
    with use_kernels("triton"):
        assert recalibrate_batchnorm(kernel, batches, num_batches=2) == 2
    # one statistics pass per BatchNorm layer and batch
    assert kernel_calls == {"channel_moments": 2 * len(batchnorm_layers(kernel))}
    assert not kernel.training
    for layer in batchnorm_layers(kernel):
        assert "forward" not in vars(layer) and layer.momentum == 0.1  # the layers as they were
    for got, want in zip(_statistics(kernel), _statistics(fallback), strict=True):
        torch.testing.assert_close(got, want, **TOLERANCE)
    torch.testing.assert_close(kernel(batches[2]), fallback(batches[2]), **TOLERANCE)


def test_the_fallback_recalibration_is_torchs_train_mode_batchnorm_bit_for_bit():
    ours, reference = _network(), _network()
    recalibrate_batchnorm(ours, _batches(), num_batches=2)  # CPU default: the fallback
    layers = batchnorm_layers(reference)
    with torch.no_grad():  # the re-estimation as it was written before winnow.kernels
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None
        reference.train()
        for x in _batches()[:2]:
            reference(x)
    for got, want in zip(_statistics(ours), _statistics(reference), strict=True):
        assert torch.equal(got, want)


def test_importing_the_norms_does_not_import_triton():
    code = (
        "import sys, winnow.kernels.norms, winnow.search_space.norms, winnow.supernet.batchnorm;"
        "assert 'triton' not in sys.modules, 'triton imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture
def kernel_calls(monkeypatch):
    """``{name: calls}`` of ``norms_triton``'s launchers: proof that the kernel, not the
    fallback, ran."""
    from winnow.kernels import norms_triton

    calls = {}
    for name in ("norm_forward", "norm_backward", "channel_moments"):
        original = getattr(norms_triton, name)

        def counted(*args, name=name, original=original, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(norms_triton, name, counted)
    return calls


def _hessian_vector_product(mode, kind, device):
    """H v of a conv + channel norm's loss over (conv weight, norm weight), as Sophia and
    GraSP take it: a backward with ``create_graph=True``, then a second one."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 5, 5, generator=g).to(device)
    conv = torch.randn(4, 3, 3, 3, generator=g).to(device).requires_grad_()
    weight = (torch.randn(4, generator=g) + 1).to(device).requires_grad_()
    target = torch.randn(2, 4, 3, 3, generator=g).to(device)
    v = [torch.randn(t.shape, generator=g).to(device) for t in (conv, weight)]
    with use_kernels(mode):
        y = nn.functional.conv2d(x, conv)
        y = _norm(kind, y, {"weight": weight, "bias": weight * 0.5}, 1e-5)
        loss = ((y - target) ** 2 * target).sum()
        grads = torch.autograd.grad(loss, [conv, weight], create_graph=True)
        dot = sum((gr * u).sum() for gr, u in zip(grads, v, strict=True))
        return torch.autograd.grad(dot, [conv, weight])


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_a_hessian_vector_product_through_the_kernel_matches_the_fallbacks(
    device, kind, kernel_calls
):
    kernel = _hessian_vector_product("triton", kind, device)
    assert kernel_calls["norm_forward"] == 1  # the kernel's forward, the fallback's backward
    fallback = _hessian_vector_product("torch", kind, device)
    for got, want in zip(kernel, fallback, strict=True):
        assert want.abs().max() > 0.1
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


class _Launches:
    """Stands in for a ``@triton.jit`` kernel: records each launch's keyword options."""

    def __init__(self, kernel, options: list[dict]):
        self.kernel, self.options = kernel, options

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.options.append(kwargs)
            return self.kernel[grid](*args, **kwargs)

        return launch


@needs_triton
def test_every_launch_sets_fp_fusion_explicitly(monkeypatch):
    """Triton 3.9 warns when a launch leaves it to the default (3.10 changes it)."""
    from winnow.kernels import norms_triton

    options: list[dict] = []
    for name in ("_norm_forward", "_norm_backward", "_channel_moments"):
        monkeypatch.setattr(norms_triton, name, _Launches(getattr(norms_triton, name), options))
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    with use_kernels("triton"):
        layer_norm_channels(x, torch.ones(3), torch.zeros(3)).sum().backward()
        batch_norm_statistics(x.detach())
    assert len(options) == 3
    assert all(o.get("enable_fp_fusion") is norms_triton.FP_FUSION for o in options), options


@needs_triton
@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_more_channels_than_the_kernel_holds_fall_back(kind, kernel_calls):
    from winnow.kernels.norms import MAX_CHANNELS

    x = torch.randn(2, MAX_CHANNELS + 1)
    weight = torch.randn(MAX_CHANNELS + 1)
    with use_kernels("triton"):
        got = _norm(kind, x, {"weight": weight}, 1e-5)
    with use_kernels("torch"):
        want = _norm(kind, x, {"weight": weight}, 1e-5)
    assert torch.equal(got, want) and not kernel_calls


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_batch_statistics_are_fp32_from_kernel_and_fallback(device, dtype):
    x = (torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(5)) * 3 + 2).to(device)
    x = x.to(dtype)
    exact_var, exact_mean = torch.var_mean(x.double(), dim=(0, 2, 3), correction=0)
    for mode in ("triton", "torch"):
        with use_kernels(mode):
            mean, var = batch_norm_statistics(x)
        assert mean.dtype == var.dtype == torch.float32, mode
        torch.testing.assert_close(mean.double(), exact_mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(var.double(), exact_var, rtol=1e-5, atol=1e-5)


def _under_autocast(mode, kind, x, device):
    weight = torch.linspace(0.5, 1.5, x.shape[1], device=device)
    with use_kernels(mode), torch.autocast(device, dtype=torch.bfloat16):
        return _norm(kind, x, {"weight": weight, "bias": weight - 1}, 1e-5)


@needs_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["rms", "layer"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_under_autocast_the_kernel_returns_the_fallbacks_dtype(device, kind, dtype):
    """Measured on the device itself: CPU's autocast runs the norms in the input's dtype,
    CUDA's in fp32 (its fp32 list)."""
    x = torch.randn(2, 6, 3, 3, generator=torch.Generator().manual_seed(6)).to(device, dtype)
    kernel, fallback = (_under_autocast(mode, kind, x, device) for mode in ("triton", "torch"))
    assert kernel.dtype == fallback.dtype
    torch.testing.assert_close(kernel, fallback, rtol=1e-2, atol=1e-2)


@needs_triton
@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_where_autocast_runs_the_norms_in_fp32_the_kernel_casts_first(
    kind, monkeypatch, kernel_calls
):
    """CUDA's rule, tried on CPU: bf16 in, fp32 out, the fallback's values on the fp32 input."""
    from winnow.kernels import norms

    monkeypatch.setattr(norms, "FP32_UNDER_AUTOCAST", ("cpu",))
    x = torch.randn(2, 6, 3, 3, generator=torch.Generator().manual_seed(7))
    x = x.bfloat16().requires_grad_()
    got = _under_autocast("triton", kind, x, "cpu")
    assert got.dtype == torch.float32 and kernel_calls["norm_forward"] == 1
    with use_kernels("torch"):
        weight = torch.linspace(0.5, 1.5, 6)
        want = _norm(kind, x.float(), {"weight": weight, "bias": weight - 1}, 1e-5)
    torch.testing.assert_close(got, want, **TOLERANCE)
    got.sum().backward()
    assert x.grad.dtype == torch.bfloat16  # back through the cast, as autocast's


@pytest.mark.parametrize("make", [lambda: RMSNorm2d(4), lambda: LayerNorm2d(4)])
def test_the_modules_compile_with_fullgraph_to_the_fallback(make):
    """dynamo traces the fallback (``use_triton`` is False while compiling), even when the
    kernel is forced outside."""
    module = make()
    x = torch.randn(2, 4, 3, 3)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    with use_kernels("triton" if backend.triton_available() else "auto"):
        got = compiled(x)
    with use_kernels("torch"):
        assert torch.equal(got, module(x))
