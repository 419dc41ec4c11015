"""The ``mlp`` family's supernet: elastic width and depth (as OFA's and BigNAS's elastic
layers), with elastic quantization (``supernet.quantization``).

It holds the largest network's weights: ``max_depth`` hidden layers of ``max_width`` units. A
subnet of depth ``d`` and width ``w`` takes the first ``d`` hidden layers and, of each, the first
``w`` units (rows) and the first inputs (columns) the layer below gives it; the head takes the
first ``w`` columns. The activation is shared weights too (a subnet's choice, applied to the
same units); dropout is the subnet's own. One normalization per supernet: normalization is not
shared (``supernet.base``), so a space with several norms gets one supernet each.

``get_active_subnet(candidate)`` builds winnow's own network for the candidate
(``Candidate.build_model``: its norm and its quantization policy applied) and copies the sliced
weights, norm state and activation ranges into it, so it is scored like any winnow network.
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from winnow.search_space.activations import make_activation
from winnow.search_space.archs.mlp import MLPSpace
from winnow.search_space.archs.mlp import suggest as suggest_arch
from winnow.search_space.candidate import Candidate
from winnow.search_space.norms import (
    NORMS,
    BatchChannelNorm,
    SkipInitGain,
    WeightStandardization,
    group_count,
    make_norm,
)
from winnow.search_space.params import RandomChooser, param_values
from winnow.search_space.quantization import ActivationFakeQuant, QuantPolicy, activation_quantizer
from winnow.supernet.quantization import (
    FLOAT_POLICY,
    copy_observer,
    new_observer,
    quantized_linear,
)


def _choices(param: Any) -> tuple[Any, Any]:
    """(least, greatest) value a Param can take."""
    values = param_values(param)
    return (min(values), max(values)) if values else (param.low, param.high)


# --- sliced norms: a norm of the largest width run on its first ``w`` features ----------------


def _sliced_batchnorm(norm: nn.BatchNorm1d, x: Tensor) -> Tensor:
    """``nn.BatchNorm1d.forward`` on the first features; the running statistics' slices are
    views, so training updates the shared buffers in place (as OFA's DynamicBatchNorm2d)."""
    w = x.shape[1]
    factor = 0.0
    if norm.training and norm.track_running_stats:
        norm.num_batches_tracked.add_(1)
        momentum = norm.momentum
        factor = 1.0 / float(norm.num_batches_tracked) if momentum is None else momentum
    use_batch = norm.training or norm.running_mean is None
    return F.batch_norm(
        x,
        norm.running_mean[:w] if norm.running_mean is not None else None,
        norm.running_var[:w] if norm.running_var is not None else None,
        norm.weight[:w],
        norm.bias[:w],
        use_batch,
        factor,
        norm.eps,
    )


def _sliced_norm(norm: nn.Module, x: Tensor) -> Tensor:
    w = x.shape[1]
    if isinstance(norm, BatchChannelNorm):
        return _sliced_norm(norm.channel, _sliced_batchnorm(norm.batch, x))
    if isinstance(norm, nn.BatchNorm1d):
        return _sliced_batchnorm(norm, x)
    if isinstance(norm, nn.LayerNorm):
        return F.layer_norm(x, (w,), norm.weight[:w], norm.bias[:w], norm.eps)
    if isinstance(norm, nn.RMSNorm):
        return F.rms_norm(x, (w,), norm.weight[:w], norm.eps)
    if isinstance(norm, nn.GroupNorm):  # the group count of the subnet's width, as it builds
        return F.group_norm(x, group_count(w), norm.weight[:w], norm.bias[:w], norm.eps)
    if isinstance(norm, SkipInitGain):
        return norm(x)  # a scalar gain: no width to slice
    raise TypeError(f"no sliced form of {type(norm).__name__}")


SLICEABLE_NORMS = ("batchnorm", "layernorm", "rmsnorm", "groupnorm", "bcn_ws", "none")


@torch.no_grad()
def _copy_norm(source: nn.Module, target: nn.Module, width: int, max_width: int) -> None:
    """Copy a norm's parameters and buffers, the per-feature ones sliced to ``width``."""
    target_state = target.state_dict()
    for name, value in source.state_dict().items():
        sliced = value[:width] if value.dim() and value.shape[0] == max_width else value
        target_state[name].copy_(sliced)


@torch.no_grad()
def _copy_weight(layer: nn.Linear, weight: Tensor, bias: Tensor) -> None:
    """Set a built layer's (raw, pre-parametrization) weight and its bias."""
    if parametrize.is_parametrized(layer, "weight"):
        layer.parametrizations.weight.original.copy_(weight)
    else:
        layer.weight.copy_(weight)
    layer.bias.copy_(bias)


class MLPSupernet(nn.Module):
    """Elastic width and depth over an ``MLPSpace``, for one normalization."""

    family = "mlp"

    def __init__(
        self,
        space: MLPSpace,
        normalization: str,
        num_classes: int,
        input_shape: tuple[int, ...],
    ) -> None:
        super().__init__()
        if normalization not in SLICEABLE_NORMS:
            NORMS.get(normalization)  # an unknown name lists the registered ones
            raise ValueError(
                f"no elastic-width form of {normalization!r}; "
                f"supported: {', '.join(SLICEABLE_NORMS)}"
            )
        self.space, self.normalization = space, normalization
        self.num_classes, self.input_shape = num_classes, tuple(input_shape)
        self.min_depth, self.max_depth = _choices(space.depth)
        self.min_width, self.max_width = _choices(space.width)
        features = math.prod(self.input_shape)
        self.hidden = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(self.max_depth):
            layer = nn.Linear(features if i == 0 else self.max_width, self.max_width)
            if NORMS.get(normalization).init_layer is not None:  # ``none`` asks for Kaiming
                NORMS.get(normalization).init_layer(layer)
            self.hidden.append(layer)
            self.norms.append(make_norm(normalization, self.max_width, spatial=False))
        self.head = nn.Linear(self.max_width, num_classes)
        # one input range per layer (hidden.0 .. hidden.{max-1}, then the head)
        self.observers = nn.ModuleList(new_observer() for _ in range(self.max_depth + 1))
        self._standardize = NORMS.get(normalization).weight_standardization
        self._ws = WeightStandardization()

    # --- architectures --------------------------------------------------------------------

    def sample(self, rng: random.Random) -> dict[str, Any]:
        """A random architecture of the space, drawn as a search draws it."""
        return suggest_arch(self.space, RandomChooser(rng))

    def largest(self, rng: random.Random) -> dict[str, Any]:
        return {**self.sample(rng), "depth": self.max_depth, "width": self.max_width}

    def smallest(self, rng: random.Random) -> dict[str, Any]:
        return {**self.sample(rng), "depth": self.min_depth, "width": self.min_width}

    def quantized_weights(self) -> list[Tensor]:
        """The shared weights that fake quantization acts on (raw: before standardization)."""
        return [layer.weight for layer in self.hidden] + [self.head.weight]

    # --- the forward of one subnet ---------------------------------------------------------

    def _weight(self, i: int, width: int, fan_in: int) -> Tensor:
        # contiguous, as the static layer's own weight: the same matmul, the same bits
        weight = self.hidden[i].weight[:width, :fan_in].contiguous()
        return self._ws(weight) if self._standardize else weight

    def forward(self, x: Tensor, arch: dict[str, Any], policy: QuantPolicy | None = None) -> Tensor:
        """The output of subnet ``arch`` under quantization ``policy`` (None: float)."""
        policy = policy or FLOAT_POLICY
        width = arch["width"]
        activation = make_activation(arch["activation"])  # stateless: a fresh one costs nothing
        x = x.flatten(1)
        for i in range(arch["depth"]):
            weight = self._weight(i, width, x.shape[1])
            bias = self.hidden[i].bias[:width]
            x = quantized_linear(x, weight, bias, f"hidden.{i}", policy, self.observers[i])
            x = activation(_sliced_norm(self.norms[i], x))
            if arch["dropout"]:
                x = F.dropout(x, arch["dropout"], self.training)
        head = self.head.weight[:, : x.shape[1]].contiguous()
        return quantized_linear(x, head, self.head.bias, "head", policy, self.observers[-1])

    # --- extraction -------------------------------------------------------------------------

    def get_active_subnet(self, candidate: Candidate) -> nn.Module:
        """winnow's network for ``candidate`` with the inherited weights, norm state and input
        ranges (copies), in the supernet's train/eval mode."""
        if candidate.normalization != self.normalization:
            raise ValueError(
                f"this supernet is for {self.normalization}, the candidate uses "
                f"{candidate.normalization}: normalization is not shared across a supernet"
            )
        arch = candidate.architecture
        with torch.random.fork_rng(devices=[]):  # building initialises weights: not our RNG's
            model = candidate.build_model(self.num_classes, self.input_shape)
        layers = {m.winnow_slot: m for m in model.modules() if hasattr(m, "winnow_slot")}
        norms = _norms_after_layers(model)
        width, fan_in = arch["width"], math.prod(self.input_shape)
        for i in range(arch["depth"]):
            layer = layers[f"hidden.{i}"]
            _copy_weight(layer, self.hidden[i].weight[:width, :fan_in], self.hidden[i].bias[:width])
            _copy_norm(self.norms[i], norms[f"hidden.{i}"], width, self.max_width)
            _copy_range(self.observers[i], layer)
            fan_in = width
        _copy_weight(layers["head"], self.head.weight[:, :fan_in], self.head.bias)
        _copy_range(self.observers[-1], layers["head"])
        return model.train(self.training)


def _norms_after_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The norm that follows each hidden layer of an ``mlp`` network (``archs.mlp.build``)."""
    children = list(model.children())
    return {
        child.winnow_slot: children[i + 1]
        for i, child in enumerate(children)
        if getattr(child, "winnow_slot", "").startswith("hidden.")
    }


def _copy_range(source: ActivationFakeQuant, layer: nn.Module) -> None:
    quantizer = activation_quantizer(layer)
    if quantizer is not None:
        copy_observer(source, quantizer)
