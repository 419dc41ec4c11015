"""The normalization axis of a training recipe: one registry entry per normalization scheme.

The chosen norm is used at every norm position of a network (the stem BN, the BN of each
ReLU->Conv->BN op and the BN before the classifier of a NAS-Bench-201 network; the norms of an
MLP). ``make_norm(name, C, spatial)`` builds it for NCHW inputs (``spatial=True``) or for
(N, C) inputs (``spatial=False``). Convolutions and linear layers feeding a norm are built with
``conv2d`` / ``linear`` so that a norm that needs Weight Standardization (BCN+WS) gets it.

torch.nn provides BatchNorm, LayerNorm, GroupNorm and RMSNorm, and they are used directly. timm
(which has LayerNorm2d and EvoNorm) cannot be installed beside this torch build, so the few
modules torch lacks are written here, each following its paper; they are small.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from winnow.kernels.norms import layer_norm_channels, rms_norm_channels
from winnow.search_space.registry import Registry

# Largest group count of GroupNorm (Wu & He 2018, the paper's default G = 32) and the fewest
# channels a group may hold: with one channel per group GN degenerates into InstanceNorm.
MAX_GROUPS = 32
MIN_CHANNELS_PER_GROUP = 2

# Initial gain of the ``none`` norm (SkipInit). Chosen by measurement, see ``SkipInitGain``.
SKIPINIT_GAIN = 0.73


@dataclass(frozen=True)
class NormEntry:
    """One normalization scheme.

    ``make(num_features, spatial)`` builds the module: ``spatial=True`` for NCHW inputs, False for
    (N, C) inputs. ``weight_standardization``: the convolutions / linear layers feeding this norm
    standardize their weights (BCN+WS). ``reference``: the paper it follows. ``init_layer``: an
    initialisation for the layers feeding this norm (``none`` needs Kaiming-normal weights).
    """

    name: str
    make: Callable[[int, bool], nn.Module]
    weight_standardization: bool = False
    reference: str = ""
    init_layer: Callable[[nn.Module], None] | None = None  # re-initialises feeding layers


NORMS: Registry[NormEntry] = Registry("normalization")


def make_norm(name: str, num_features: int, spatial: bool = True) -> nn.Module:
    """Build the norm ``name`` for ``num_features`` channels (NCHW if ``spatial`` else (N, C))."""
    return NORMS.get(name).make(num_features, spatial)


def group_count(num_channels: int) -> int:
    """Number of groups for GroupNorm-style norms on ``num_channels`` channels.

    Rule: 32 groups (the default of Wu & He 2018) when C allows, otherwise the largest divisor of
    C that is <= 32 and leaves >= 2 channels per group (C = 16 -> 8, 24 -> 12, 64 -> 32,
    96 -> 32). When no divisor leaves two channels (C = 1) there is one group.
    """
    for groups in range(min(MAX_GROUPS, num_channels), 0, -1):
        if num_channels % groups == 0 and num_channels // groups >= MIN_CHANNELS_PER_GROUP:
            return groups
    return 1


# --- Weight Standardization ------------------------------------------------------------------


class WeightStandardization(nn.Module):
    """Weight Standardization (Qiao et al. 2019, arXiv:1903.10520), as a parametrization.

    Per output channel ``o``: ``W[o] = (W[o] - mean(W[o])) / (std(W[o]) + eps)``, with mean and
    std over the fan-in (all dimensions but the first). The std is the population std (as
    timm's StdConv2d), so the standardized rows have std exactly 1 and a fan-in of 1 is defined.
    Used through ``torch.nn.utils.parametrize`` so that quantization can stack its own
    parametrization on top of it.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        fan_in_dims = tuple(range(1, weight.dim()))
        mean = weight.mean(dim=fan_in_dims, keepdim=True)
        std = weight.std(dim=fan_in_dims, keepdim=True, correction=0)
        return (weight - mean) / (std + self.eps)


def prepare_layer(layer: nn.Module, norm: str) -> nn.Module:
    """Apply what the norm asks of the layers that feed it: an init, weight standardization
    (the builders' ``conv2d``/``linear``, and the layers feeding a custom network's norms)."""
    entry = NORMS.get(norm)
    if entry.init_layer is not None:
        entry.init_layer(layer)
        # Recorded (not in the state_dict) so that the pytorch export re-applies the same init
        # and a fresh ``build_model()`` of model.py starts where winnow's network starts.
        layer.winnow_init = entry.init_layer
    if entry.weight_standardization:
        parametrize.register_parametrization(layer, "weight", WeightStandardization())
    return layer


def kaiming_normal_init(layer: nn.Module) -> None:
    """He et al. 2015 fan-in init for ReLU networks; what the ``none`` gain is calibrated for."""
    nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    *,
    bias: bool = False,
    norm: str = "batchnorm",
    groups: int = 1,
) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` feeding the norm ``norm``, weight-standardized if that norm needs."""
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias
    )
    return prepare_layer(conv, norm)


def linear(
    in_features: int, out_features: int, *, bias: bool = True, norm: str = "batchnorm"
) -> nn.Linear:
    """A plain ``nn.Linear`` feeding the norm ``norm``, weight-standardized if that norm needs."""
    return prepare_layer(nn.Linear(in_features, out_features, bias=bias), norm)


# --- Channels-last norms applied to NCHW ------------------------------------------------------


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels at each spatial position of an NCHW tensor.

    As ConvNeXt's LayerNorm (Liu et al. 2022) and timm's LayerNorm2d: ``nn.LayerNorm`` (Ba et al.
    2016) on the channels-last view, moved back; or, where ``winnow.kernels`` chooses it, a
    Triton kernel that reads the NCHW memory in place (``kernels.norms.layer_norm_channels``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm_channels(x, self.weight, self.bias, self.eps)


class RMSNorm2d(nn.RMSNorm):
    """RMSNorm (Zhang & Sennrich 2019) over the channels at each position of an NCHW tensor:
    ``y = x / sqrt(mean_c(x^2) + eps) * g``, by ``nn.RMSNorm`` on the channels-last view (or the
    Triton kernel of ``kernels.norms.rms_norm_channels`` where ``winnow.kernels`` chooses it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm_channels(x, self.weight, self.eps)


# --- Batch-Channel Normalization --------------------------------------------------------------


class BatchChannelNorm(nn.Module):
    """Batch-Channel Normalization (Qiao et al. 2019, arXiv:1903.10520, Sec. 4).

    BCN first normalises each channel with batch statistics, then each channel group of each
    sample with its own statistics: ``y = GN(BN(x))``, each with its affine parameters. The paper
    (and its official code, ``BCNorm(estimate=False)``) uses BatchNorm's batch statistics in the
    large-batch setting and running estimates (EstBN) only for micro-batches of 1-2 samples; the
    batches here are ordinary, so the batch stage is ``nn.BatchNorm`` (batch statistics while
    training, running statistics in eval). The channel stage is ``nn.GroupNorm`` with per-channel
    affine parameters; the official code's per-group affine is its special case.
    """

    def __init__(self, num_features: int, spatial: bool = True) -> None:
        super().__init__()
        self.batch = nn.BatchNorm2d(num_features) if spatial else nn.BatchNorm1d(num_features)
        self.channel = nn.GroupNorm(group_count(num_features), num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel(self.batch(x))


# --- EvoNorms ---------------------------------------------------------------------------------


def _as_spatial(x: torch.Tensor) -> torch.Tensor:
    """View an (N, C) tensor as (N, C, 1): each feature is a channel with a 1-pixel extent."""
    return x if x.dim() > 2 else x.unsqueeze(-1)


def _channel_shape(x: torch.Tensor) -> tuple[int, ...]:
    return (1, -1) + (1,) * (x.dim() - 2)


class EvoNormB0(nn.Module):
    """EvoNorm-B0 (Liu et al. 2020, "Evolving Normalization-Activation Layers", arXiv:2004.02967).

    ``y = x / max(sqrt(var_b(x) + eps), v * x + sqrt(var_i(x) + eps)) * gamma + beta``, with
    ``var_b`` the per-channel variance over (N, H, W) (a running average of it in eval, as
    BatchNorm) and ``var_i`` the per-sample, per-channel variance over (H, W). It replaces a
    norm *and* an activation; v = gamma = 1 and beta = 0 at init, as in the paper.

    For (N, C) inputs each feature is a channel with a 1x1 extent: the batch variance is over N
    and the instance variance, over a single value, is 0 (denominator
    ``max(sqrt(var_b + eps), v * x + sqrt(eps))``).
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))  # gamma
        self.bias = nn.Parameter(torch.zeros(num_features))  # beta
        self.v = nn.Parameter(torch.ones(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _batch_var(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.running_var.view(_channel_shape(x))
        dims = (0, *range(2, x.dim()))
        var = x.var(dim=dims, keepdim=True, correction=0)
        n = x.numel() // x.shape[1]
        with torch.no_grad():  # running estimate is unbiased, as BatchNorm's
            unbiased = var.flatten() * (n / max(n - 1, 1))
            self.running_var.lerp_(unbiased, self.momentum)
        return var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = _as_spatial(x)
        shape = _channel_shape(xs)
        batch_std = (self._batch_var(xs) + self.eps).sqrt()
        instance_var = xs.var(dim=tuple(range(2, xs.dim())), keepdim=True, correction=0)
        right = self.v.view(shape) * xs + (instance_var + self.eps).sqrt()
        y = xs / torch.maximum(batch_std, right) * self.weight.view(shape) + self.bias.view(shape)
        return y.view_as(x)


class EvoNormS0(nn.Module):
    """EvoNorm-S0 (Liu et al. 2020, arXiv:2004.02967): batch-independent.

    ``y = x * sigmoid(v * x) / sqrt(var_g(x) + eps) * gamma + beta``, with ``var_g`` the
    per-sample variance over each group of channels and (H, W), groups by ``group_count``
    (the paper uses 32). v = gamma = 1, beta = 0 at init.

    For (N, C) inputs a group is a run of C / G consecutive features of one sample.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups = group_count(num_features)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.v = nn.Parameter(torch.ones(num_features))

    def _group_std(self, x: torch.Tensor) -> torch.Tensor:
        grouped = x.reshape(x.shape[0], self.groups, -1)
        var = grouped.var(dim=-1, keepdim=True, correction=0)
        return (var + self.eps).sqrt().expand_as(grouped).reshape(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = _channel_shape(x)
        numerator = x * torch.sigmoid(self.v.view(shape) * x)
        return numerator / self._group_std(x) * self.weight.view(shape) + self.bias.view(shape)


# --- No normalization ------------------------------------------------------------------------


class SkipInitGain(nn.Module):
    """No normalization: identity times a learnable scalar gain (SkipInit, De & Smith 2020).

    De & Smith put a scalar gain (initialised at or near 0) at the end of each residual branch
    so that a network without normalization trains stably. At 0, a NAS-Bench-201 cell whose
    edges are all convolutions would output exactly 0 (activations vanish), and at 1 the sums
    of branches explode: in a cell (node1 = op(x), node2 = op(x) + op(node1), node3 = op(x) +
    op(node1) + op(node2)) with uncorrelated branches the output variance is ``a (1 + a)^2``
    times the input's (``a = gain^2``), i.e. 4x per cell at gain 1. The gain that keeps the
    scale was measured on 15 such cells of ReLU -> Conv3x3 (Kaiming-normal, fan-in) -> ``none``
    on N(0, 1) inputs (8x8; 20 seeds, 10 at gains 0.5 and 1); geometric mean of output std /
    input std:

    ======  ===========  ===================  ===================  ===========
    gain    C=16, N=16   C=16 (seed range)    C=32, N=8            C=64, N=4
    ======  ===========  ===================  ===================  ===========
    0.50    1.6e-4       --                   --                   --
    0.72    0.56         0.12 - 3.2           0.80                 0.90
    0.73    0.78         0.17 - 4.8           1.11                 1.27
    0.74    1.09         0.23 - 6.9           1.56                 1.78
    1.00    3.2e3        --                   --                   --
    ======  ===========  ===================  ===================  ===========

    At C=16 on 16x16 (32x32) maps, 0.72 gives 0.62 (0.71), 0.73 gives 0.86 (0.99). The measured
    fixed point, 0.72-0.74, lies above the uncorrelated estimate (0.68); 0.73 keeps the scale
    over these widths and resolutions. It assumes Kaiming-normal convs:
    torch's default conv init has 1/6 of that weight variance, and the activations then vanish.
    The test re-measures the property.

    That fixed gain cannot hold for every topology: a NAS-Bench-201 cell of identity edges
    computes 4x its input, so 15 of them scale activations by ~4^15 whatever the convs do, and
    SGD at the benchmark's lr 0.1 then diverges on its second step (measured). So by default
    (``data_init``) the output is ``x * scale * gain``: a fixed ``scale`` buffer initialised from
    data, as in LSUV (Mishkin & Matas 2016) and weight normalization's data-dependent init
    (Salimans & Kingma 2016) -- the first forward pass in training mode sets ``scale = 1 /
    std(x)`` over that batch -- and a learnable scalar ``gain`` starting at 1. Keeping the
    data-dependent factor out of the parameter keeps the gain's gradient O(1); a learnable gain
    of 4^-15 on inputs of 4^15 gets gradients so large that one SGD step explodes (measured).
    Before the first training batch (e.g. a model evaluated at init) ``scale`` is
    ``SKIPINIT_GAIN``. With ``data_init=False`` the module is ``x * gain``, ``gain`` as given.
    """

    def __init__(self, gain: float = SKIPINIT_GAIN, data_init: bool = True) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(1.0 if data_init else float(gain)))
        self.register_buffer("scale", torch.tensor(float(gain) if data_init else 1.0))
        self.register_buffer("initialized", torch.tensor(not data_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.initialized:
            with torch.no_grad():
                self.scale.copy_(1.0 / x.detach().float().std().clamp_min(1e-12))
                self.initialized.fill_(True)
        return x * (self.scale * self.gain)


# --- Registry entries -------------------------------------------------------------------------


def _batchnorm(num_features: int, spatial: bool) -> nn.Module:
    return nn.BatchNorm2d(num_features) if spatial else nn.BatchNorm1d(num_features)


def _layernorm(num_features: int, spatial: bool) -> nn.Module:
    return LayerNorm2d(num_features) if spatial else nn.LayerNorm(num_features)


def _groupnorm(num_features: int, spatial: bool) -> nn.Module:
    # nn.GroupNorm accepts (N, C) as well as (N, C, H, W): no spatial switch needed.
    return nn.GroupNorm(group_count(num_features), num_features)


# eps 1e-6 as T5/LLaMA; the paper's 1e-8 is below what fp16 activations can resolve.
def _rmsnorm(num_features: int, spatial: bool) -> nn.Module:
    return RMSNorm2d(num_features, eps=1e-6) if spatial else nn.RMSNorm(num_features, eps=1e-6)


NORMS.register(
    "batchnorm",
    NormEntry("batchnorm", _batchnorm, reference="Ioffe & Szegedy 2015, arXiv:1502.03167"),
)
NORMS.register(
    "layernorm",
    NormEntry("layernorm", _layernorm, reference="Ba et al. 2016, arXiv:1607.06450"),
)
NORMS.register(
    "groupnorm",
    NormEntry("groupnorm", _groupnorm, reference="Wu & He 2018, arXiv:1803.08494"),
)
NORMS.register(
    "rmsnorm",
    NormEntry("rmsnorm", _rmsnorm, reference="Zhang & Sennrich 2019, arXiv:1910.07467"),
)
NORMS.register(
    "bcn_ws",
    NormEntry(
        "bcn_ws",
        BatchChannelNorm,
        weight_standardization=True,
        reference="Qiao et al. 2019, arXiv:1903.10520",
    ),
)
NORMS.register(
    "evonorm_b0",
    NormEntry(
        "evonorm_b0", lambda c, spatial: EvoNormB0(c), reference="Liu et al. 2020, arXiv:2004.02967"
    ),
)
NORMS.register(
    "evonorm_s0",
    NormEntry(
        "evonorm_s0", lambda c, spatial: EvoNormS0(c), reference="Liu et al. 2020, arXiv:2004.02967"
    ),
)
NORMS.register(
    "none",
    NormEntry(
        "none",
        lambda c, spatial: SkipInitGain(),
        reference="De & Smith 2020, arXiv:2002.10444",
        init_layer=kaiming_normal_init,
    ),
)
