"""Tests of the normalization and activation registries against reference formulas written here."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from winnow.search_space.activations import ACTIVATIONS, make_activation
from winnow.search_space.norms import (
    NORMS,
    SKIPINIT_GAIN,
    SkipInitGain,
    conv2d,
    linear,
    make_norm,
)
from winnow.search_space.registry import UnknownNameError

C = 24  # not a multiple of 32: exercises the group rule (24 channels -> 12 groups of 2)
EPS = 1e-5
ALL_NORMS = [
    "batchnorm",
    "layernorm",
    "groupnorm",
    "rmsnorm",
    "bcn_ws",
    "evonorm_b0",
    "evonorm_s0",
    "none",
]
# Norms whose training-mode output uses batch statistics (running statistics in eval).
BATCH_STATISTICS = {"batchnorm", "bcn_ws", "evonorm_b0"}
RUNNING_BUFFER = {"batchnorm": "running_var", "bcn_ws": "batch.running_var"}


def sample(spatial: bool, n: int = 6, c: int = C, seed: int = 0) -> torch.Tensor:
    """Inputs with a non-zero mean and non-unit scale, so that normalization has work to do."""
    gen = torch.Generator().manual_seed(seed)
    shape = (n, c, 5, 4) if spatial else (n, c)
    return torch.randn(shape, generator=gen) * 3.0 + 1.5


def channel_view(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel vector shaped to broadcast against x (N, C, ...)."""
    return t.view(1, -1, *([1] * (x.dim() - 2)))


def randomize_parameters(module: nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=gen) + 0.5)


# --- registry --------------------------------------------------------------------------------


def test_registry_lists_the_norms_with_references():
    assert NORMS.names() == ALL_NORMS
    for name in ALL_NORMS:
        entry = NORMS.get(name)
        assert entry.name == name
        assert entry.reference
        assert entry.weight_standardization == (name == "bcn_ws")


def test_unknown_names_list_the_allowed_ones():
    with pytest.raises(UnknownNameError) as err:
        make_norm("batchnrom", 8)
    assert all(name in str(err.value) for name in ALL_NORMS)
    with pytest.raises(UnknownNameError):
        conv2d(3, 8, 3, norm="batchnrom")
    with pytest.raises(UnknownNameError) as err:
        make_activation("rleu")
    assert all(name in str(err.value) for name in ("relu", "gelu", "silu", "hardswish"))


# --- every entry: shape, finiteness, gradients, train / eval ---------------------------------


@pytest.mark.parametrize("spatial", [True, False], ids=["nchw", "nc"])
@pytest.mark.parametrize("name", ALL_NORMS)
def test_forward_backward_is_finite(name, spatial):
    norm = make_norm(name, C, spatial)
    x = sample(spatial).requires_grad_()
    y = norm(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    # A random projection: y.sum() would have zero gradient through a mean-subtracting norm.
    (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in norm.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def first_sample_output(norm: nn.Module, x: torch.Tensor, others_seed: int) -> torch.Tensor:
    """The output for x[0] when the rest of the batch is replaced by other samples."""
    others = sample(x.dim() > 2, n=x.shape[0] - 1, seed=others_seed) * 2.0
    with torch.no_grad():
        return norm(torch.cat([x[:1], others]))[0]


@pytest.mark.parametrize("spatial", [True, False], ids=["nchw", "nc"])
@pytest.mark.parametrize("name", sorted(BATCH_STATISTICS))
def test_batch_statistics_in_training_running_statistics_in_eval(name, spatial):
    norm = make_norm(name, C, spatial)
    x = sample(spatial)
    buffer = norm.get_buffer(RUNNING_BUFFER.get(name, "running_var"))
    before = buffer.clone()
    norm.train()
    a, b = first_sample_output(norm, x, 10), first_sample_output(norm, x, 11)
    assert not torch.allclose(a, b, atol=1e-4)  # depends on the rest of the batch
    assert not torch.allclose(buffer, before)  # running statistics were updated

    norm.eval()
    after_training = buffer.clone()
    a, b = first_sample_output(norm, x, 10), first_sample_output(norm, x, 11)
    torch.testing.assert_close(a, b)  # eval uses running statistics only
    torch.testing.assert_close(buffer, after_training)  # and does not update them


@pytest.mark.parametrize("spatial", [True, False], ids=["nchw", "nc"])
@pytest.mark.parametrize("name", sorted(set(ALL_NORMS) - BATCH_STATISTICS))
def test_batch_independent_norms(name, spatial):
    norm = make_norm(name, C, spatial)
    x = sample(spatial)
    for train in (True, False):
        norm.train(train)
        a, b = first_sample_output(norm, x, 10), first_sample_output(norm, x, 11)
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        torch.testing.assert_close(norm.train()(x), norm.eval()(x))


def test_evonorm_b0_running_variance_is_the_unbiased_batch_variance_average():
    norm = make_norm("evonorm_b0", C).train()
    x = sample(True)
    norm(x)
    flat = x.transpose(0, 1).reshape(C, -1)
    n = flat.shape[1]
    unbiased = ((flat - flat.mean(1, keepdim=True)) ** 2).sum(1) / (n - 1)
    torch.testing.assert_close(norm.running_var, 0.9 * torch.ones(C) + 0.1 * unbiased)


# --- numerics against reference formulas -----------------------------------------------------


def reference_layernorm(x, weight, bias):
    """Per sample and position, over the channels (dim 1)."""
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS) * channel_view(weight, x) + channel_view(bias, x)


def reference_group_normalize(x, groups, eps=EPS):
    """(x - mean) / sqrt(var + eps) per sample over each run of C/groups channels (and H, W)."""
    g = x.reshape(x.shape[0], groups, -1)
    mean = g.mean(-1, keepdim=True)
    var = ((g - mean) ** 2).mean(-1, keepdim=True)
    return ((g - mean) / torch.sqrt(var + eps)).reshape(x.shape)


def reference_group_var(x, groups):
    g = x.reshape(x.shape[0], groups, -1)
    var = ((g - g.mean(-1, keepdim=True)) ** 2).mean(-1, keepdim=True)
    return var.expand_as(g).reshape(x.shape)


@pytest.mark.parametrize("spatial", [True, False], ids=["nchw", "nc"])
def test_layernorm_normalizes_channels_at_each_position(spatial):
    norm = make_norm("layernorm", C, spatial)
    randomize_parameters(norm)
    x = sample(spatial)
    torch.testing.assert_close(norm(x), reference_layernorm(x, norm.weight, norm.bias))


@pytest.mark.parametrize(
    ("channels", "groups"),
    [(16, 8), (24, 12), (32, 16), (48, 24), (64, 32), (96, 32), (33, 11), (3, 1), (2, 1), (1, 1)],
)
def test_group_rule(channels, groups):
    # Expected: 32 groups when possible, else the largest divisor <= 32 leaving >= 2 channels.
    assert make_norm("groupnorm", channels).num_groups == groups
    assert make_norm("evonorm_s0", channels).groups == groups
    assert make_norm("bcn_ws", channels).channel.num_groups == groups


@pytest.mark.parametrize("spatial", [True, False], ids=["nchw", "nc"])
def test_groupnorm_numerics(spatial):
    norm = make_norm("groupnorm", C, spatial)
    randomize_parameters(norm)
    x = sample(spatial)
    expected = reference_group_normalize(x, 12) * channel_view(norm.weight, x)
    torch.testing.assert_close(norm(x), expected + channel_view(norm.bias, x))


@pytest.mark.parametrize("spatial", [True, False], ids=["nchw", "nc"])
def test_rmsnorm_numerics(spatial):
    norm = make_norm("rmsnorm", C, spatial)
    randomize_parameters(norm)
    x = sample(spatial)
    rms = torch.sqrt((x**2).mean(dim=1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x), x / rms * channel_view(norm.weight, x))


@pytest.mark.parametrize("random_params", [False, True], ids=["fresh", "random"])
@pytest.mark.parametrize("spatial", [True, False], ids=["nchw", "nc"])
def test_evonorm_b0_numerics_in_training(spatial, random_params):
    norm = make_norm("evonorm_b0", C, spatial).train()
    if random_params:
        randomize_parameters(norm)
    x = sample(spatial)
    batch_dims = [0, *range(2, x.dim())]
    batch_var = ((x - x.mean(batch_dims, keepdim=True)) ** 2).mean(batch_dims, keepdim=True)
    if spatial:  # per sample and channel, over (H, W)
        inst_mean = x.mean((2, 3), keepdim=True)
        inst_var = ((x - inst_mean) ** 2).mean((2, 3), keepdim=True)
    else:  # a feature is one value: its instance variance is 0
        inst_var = torch.zeros_like(x)
    v = channel_view(norm.v, x)
    den = torch.maximum(torch.sqrt(batch_var + EPS), v * x + torch.sqrt(inst_var + EPS))
    expected = x / den * channel_view(norm.weight, x) + channel_view(norm.bias, x)
    torch.testing.assert_close(norm(x), expected)


@pytest.mark.parametrize("random_params", [False, True], ids=["fresh", "random"])
@pytest.mark.parametrize("spatial", [True, False], ids=["nchw", "nc"])
def test_evonorm_s0_numerics(spatial, random_params):
    norm = make_norm("evonorm_s0", C, spatial).train()
    if random_params:
        randomize_parameters(norm)
    x = sample(spatial)
    v = channel_view(norm.v, x)
    numerator = x * torch.sigmoid(v * x)
    expected = numerator / torch.sqrt(reference_group_var(x, 12) + EPS)
    expected = expected * channel_view(norm.weight, x) + channel_view(norm.bias, x)
    torch.testing.assert_close(norm(x), expected)


@pytest.mark.parametrize("spatial", [True, False], ids=["nchw", "nc"])
def test_bcn_is_batch_normalization_then_group_normalization(spatial):
    norm = make_norm("bcn_ws", C, spatial).train()
    x = sample(spatial)
    batch_dims = [0, *range(2, x.dim())]
    mean = x.mean(batch_dims, keepdim=True)
    var = ((x - mean) ** 2).mean(batch_dims, keepdim=True)
    batch_normalized = (x - mean) / torch.sqrt(var + EPS)
    # Two normalizations in float32: a group of 2 close values amplifies rounding, hence atol.
    expected = reference_group_normalize(batch_normalized, 12)
    torch.testing.assert_close(norm(x), expected, atol=1e-4, rtol=1e-4)


# --- weight standardization ------------------------------------------------------------------


def reference_standardize(w: torch.Tensor) -> torch.Tensor:
    rows = w.reshape(w.shape[0], -1)
    mean = rows.mean(1, keepdim=True)
    std = ((rows - mean) ** 2).mean(1, keepdim=True).sqrt()
    return ((rows - mean) / (std + EPS)).reshape(w.shape)


def test_only_bcn_ws_layers_are_weight_standardized():
    for name in ALL_NORMS:
        conv, fc = conv2d(8, 16, 3, padding=1, norm=name), linear(8, 16, norm=name)
        assert isinstance(conv, nn.Conv2d)
        assert isinstance(fc, nn.Linear)
        assert parametrize.is_parametrized(conv, "weight") == (name == "bcn_ws")
        assert parametrize.is_parametrized(fc, "weight") == (name == "bcn_ws")
        assert conv.bias is None and fc.bias is not None


@pytest.mark.parametrize("layer", ["conv", "linear"])
def test_standardized_weight_has_zero_mean_unit_std_per_output_channel(layer):
    torch.manual_seed(0)
    if layer == "conv":
        module = conv2d(8, 16, 3, padding=1, norm="bcn_ws", groups=2)
        x = torch.randn(2, 8, 6, 6)
    else:
        module = linear(8, 16, norm="bcn_ws")
        x = torch.randn(2, 8)
    original = module.parametrizations.weight.original
    with torch.no_grad():  # shift and scale the raw weights so that WS has something to undo
        original.mul_(torch.linspace(0.5, 3.0, 16).view(-1, *[1] * (original.dim() - 1))).add_(2)
    rows = module.weight.reshape(16, -1)
    torch.testing.assert_close(rows.mean(1), torch.zeros(16), atol=1e-4, rtol=0)
    torch.testing.assert_close(rows.std(1, correction=0), torch.ones(16), atol=1e-3, rtol=0)
    torch.testing.assert_close(module.weight, reference_standardize(original))
    plain = nn.Conv2d(8, 16, 3, padding=1, groups=2) if layer == "conv" else nn.Linear(8, 16)
    with torch.no_grad():
        plain.weight.copy_(reference_standardize(original))
        if module.bias is not None:
            plain.bias.copy_(module.bias)
        else:
            plain.bias.zero_()
    torch.testing.assert_close(module(x), plain(x))


class _Double(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


def test_a_later_parametrization_stacks_on_weight_standardization():
    conv = conv2d(4, 6, 3, norm="bcn_ws")
    parametrize.register_parametrization(conv, "weight", _Double())  # e.g. fake quantization
    original = conv.parametrizations.weight.original
    torch.testing.assert_close(conv.weight, 2 * reference_standardize(original))
    conv(torch.randn(1, 4, 5, 5)).sum().backward()
    assert original.grad is not None and torch.isfinite(original.grad).all()


# --- `none`: SkipInit gain keeps a deep branch-summing stack at scale ------------------------


def test_none_is_identity_times_a_learnable_scalar():
    norm = make_norm("none", C)
    gains = list(norm.parameters())
    assert len(gains) == 1 and gains[0].numel() == 1 and gains[0].requires_grad
    x = sample(True)
    out = norm(x)  # the first training batch sets the data-dependent scale to 1 / std(x)
    torch.testing.assert_close(norm.scale, 1 / x.std())
    torch.testing.assert_close(out, x * (norm.scale * gains[0]).item())
    torch.testing.assert_close(out.std(), torch.tensor(1.0))
    scale = norm.scale.clone()
    norm(3 * x)  # later batches leave the scale alone: it is an init, not a normalization
    torch.testing.assert_close(norm.scale, scale)


def relu_conv_none(channels: int, gain: float | None) -> nn.Sequential:
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    norm = make_norm("none", channels) if gain is None else SkipInitGain(gain, data_init=False)
    return nn.Sequential(nn.ReLU(), conv, norm)


class SumCell(nn.Module):
    """A NAS-Bench-201-like DAG whose six edges are all ReLU -> Conv3x3 -> norm."""

    def __init__(self, channels: int, gain: float | None) -> None:
        super().__init__()
        self.edges = nn.ModuleList(relu_conv_none(channels, gain) for _ in range(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.edges
        node1 = e[0](x)
        node2 = e[1](x) + e[2](node1)
        return e[3](x) + e[4](node1) + e[5](node2)


def stack_output_scale(gain: float | None, seeds=range(4), channels=32, cells=15) -> float:
    """Geometric mean over seeds of std(output) / std(input) of a stack of SumCells at init."""
    logs = []
    for seed in seeds:
        torch.manual_seed(seed)
        net = nn.Sequential(*(SumCell(channels, gain) for _ in range(cells)))
        x = torch.randn(8, channels, 8, 8)
        with torch.no_grad():
            logs.append(math.log(net(x).std().item() / x.std().item()))
    return math.exp(sum(logs) / len(logs))


def test_none_default_gain_keeps_a_deep_stack_at_scale(one_thread):
    scale = stack_output_scale(gain=None)  # the default (data-dependent) init of make_norm("none")
    assert 1 / 3 < scale < 3, scale
    assert 1 / 3 < stack_output_scale(gain=SKIPINIT_GAIN) < 3  # the fixed gain, before any data
    # The property is not automatic: a plain identity explodes, a smaller gain vanishes.
    assert stack_output_scale(gain=1.0, seeds=[0]) > 100
    assert stack_output_scale(gain=0.5, seeds=[0]) < 1e-2


# --- activations ------------------------------------------------------------------------------

ACTIVATION_REFERENCES = {
    "relu": lambda x: torch.where(x > 0, x, torch.zeros_like(x)),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "silu": lambda x: x / (1 + torch.exp(-x)),
    "hardswish": lambda x: x * torch.clamp(x + 3, 0, 6) / 6,
}


@pytest.mark.parametrize("name", list(ACTIVATION_REFERENCES))
def test_activations_match_reference_formulas(name):
    assert ACTIVATIONS.names() == list(ACTIVATION_REFERENCES)
    act = make_activation(name)
    assert isinstance(act, nn.Module) and act is not make_activation(name)
    x = torch.linspace(-6, 6, 241)
    torch.testing.assert_close(act(x), ACTIVATION_REFERENCES[name](x))
