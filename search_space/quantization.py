"""The quantization axis of a training recipe: fake quantization (quantization-aware training).

Quantization-aware training simulates integer inference in float arithmetic: each tensor is
quantized to ``bits``-bit integers and dequantized straight back ("fake quantization"), and the
rounding is skipped in the backward pass by the straight-through estimator (Bengio et al. 2013,
"Estimating or Propagating Gradients Through Stochastic Neurons"; Jacob et al. 2018, "Quantization
and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR).

What gets quantized is chosen by a :class:`QuantPolicy`: per-layer weight bits (looked up by the
layer's slot name) and one activation bit width for the inputs of every quantized Conv2d/Linear.
The fake quantization itself is ``winnow.kernels.fake_quant`` (a fused Triton kernel on CUDA,
torch's fake-quantize ops elsewhere, bit-identical).

Weights are quantized through ``torch.nn.utils.parametrize`` so that quantization composes with
other weight parametrizations (weight standardization is registered first by the model builders)
and acts on their output. Activations are quantized by an :class:`ActivationFakeQuant` submodule
(``input_quantizer``) run from a forward pre-hook on the layer.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict, field_validator
from torch import Tensor, nn
from torch.nn.utils import parametrize

# The fake quantization itself is winnow.kernels.fake_quant's; its names stay importable from
# here, where winnow's quantization has always had them (the ONNX export and the supernet use them).
from winnow.kernels.fake_quant import (  # noqa: F401
    _MIN_SCALE,
    FLOAT_BITS,
    _channel_range,
    fake_quantize,
    fake_quantize_with_range,
    quantization_params,
)
from winnow.kernels.fake_quant import integer_range as _integer_range  # noqa: F401

WEIGHT_BITS = (2, 3, 4, 6, 8, 32)  # 32 = not quantized
ACTIVATION_BITS = (4, 8, 32)
Granularity = Literal["per_channel", "per_tensor"]
GRANULARITIES: tuple[str, ...] = get_args(Granularity)

QUANTIZED_LAYERS = (nn.Conv2d, nn.Linear)


class AlreadyQuantizedError(ValueError):
    """``apply_quantization`` was called on a model that already has quantized layers."""


# ----------------------------------------------------------------------------------- the policy


def _allowed(values: tuple[int, ...]) -> str:
    return ", ".join(str(v) for v in values)


class QuantPolicy(BaseModel):
    """Which layers are quantized, and how.

    ``weight_bits`` maps a slot name or a dotted slot prefix to bits ("*" = every other layer);
    ``activation_bits`` applies to the input of every quantized Conv2d/Linear (per-tensor);
    ``granularity`` and ``symmetric`` apply to weights (``symmetric`` to activations as well).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    weight_bits: dict[str, int] = {"*": FLOAT_BITS}
    activation_bits: int = FLOAT_BITS
    granularity: Granularity = "per_channel"
    symmetric: bool = True

    @field_validator("weight_bits")
    @classmethod
    def _check_weight_bits(cls, value: dict[str, int]) -> dict[str, int]:
        for slot, bits in value.items():
            if bits not in WEIGHT_BITS:
                raise ValueError(
                    f"weight_bits[{slot!r}] = {bits} is not allowed; "
                    f"weight_bits values must be one of {_allowed(WEIGHT_BITS)}"
                )
        return value

    @field_validator("activation_bits")
    @classmethod
    def _check_activation_bits(cls, value: int) -> int:
        if value not in ACTIVATION_BITS:
            raise ValueError(
                f"activation_bits = {value} is not allowed; "
                f"activation_bits must be one of {_allowed(ACTIVATION_BITS)}"
            )
        return value

    def bits_for(self, slot: str) -> int:
        """Weight bits of ``slot``: the exact slot, then its dotted prefixes longest first
        ("stage1.cell2.edge3" -> "stage1.cell2" -> "stage1"), then "*", else 32."""
        parts = slot.split(".")
        for end in range(len(parts), 0, -1):
            key = ".".join(parts[:end])
            if key in self.weight_bits:
                return self.weight_bits[key]
        return self.weight_bits.get("*", FLOAT_BITS)

    @property
    def is_float(self) -> bool:
        """True when the policy quantizes nothing."""
        weights_float = all(bits == FLOAT_BITS for bits in self.weight_bits.values())
        return weights_float and self.activation_bits == FLOAT_BITS


# ------------------------------------------------------------------------ the quantizers


class WeightFakeQuant(nn.Module):
    """A parametrization (``torch.nn.utils.parametrize``) that fake-quantizes a weight.

    The output channel is dim 0 for both Conv2d ([out, in/groups, kh, kw]) and Linear
    ([out, in]) weights, which is the per-channel axis.
    """

    def __init__(self, bits: int, per_channel: bool = True, symmetric: bool = True) -> None:
        super().__init__()
        if bits not in WEIGHT_BITS:
            raise ValueError(f"weight bits must be one of {_allowed(WEIGHT_BITS)}, got {bits}")
        self.bits = bits
        self.per_channel = per_channel
        self.symmetric = symmetric

    def forward(self, weight: Tensor) -> Tensor:
        return fake_quantize(weight, self.bits, self.per_channel, self.symmetric, axis=0)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}, symmetric={self.symmetric}"


class ActivationFakeQuant(nn.Module):
    """Per-tensor fake quantization of an activation with an EMA min/max observer.

    In training mode each batch's min and max update ``running_min``/``running_max`` by an
    exponential moving average (``momentum`` 0.1; the first batch initialises them), as in
    Jacob et al. 2018 and torch's ``MovingAverageMinMaxObserver``; the batch is then quantized
    with the updated range. In eval mode the range is frozen: values outside it are clipped and
    get zero gradient. An observer that has never seen a training batch quantizes with the
    batch's own range in eval mode (without recording it), so an uncalibrated model still runs.
    """

    running_min: Tensor
    running_max: Tensor
    initialized: Tensor

    def __init__(self, bits: int, symmetric: bool = True, momentum: float = 0.1) -> None:
        super().__init__()
        if bits not in ACTIVATION_BITS:
            raise ValueError(
                f"activation bits must be one of {_allowed(ACTIVATION_BITS)}, got {bits}"
            )
        self.bits = bits
        self.symmetric = symmetric
        self.momentum = momentum
        self.register_buffer("running_min", torch.zeros(()))
        self.register_buffer("running_max", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def _observe(self, x: Tensor) -> None:
        low, high = torch.aminmax(x.detach().to(self.running_min.dtype))
        if bool(self.initialized):
            self.running_min.lerp_(low, self.momentum)
            self.running_max.lerp_(high, self.momentum)
        else:
            self.running_min.copy_(low)
            self.running_max.copy_(high)
            self.initialized.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        if self.bits == FLOAT_BITS:
            return x
        if self.training:
            self._observe(x)
        elif not bool(self.initialized):
            low, high = torch.aminmax(x.detach())
            return fake_quantize_with_range(x, low, high, self.bits, self.symmetric)
        return fake_quantize_with_range(
            x, self.running_min, self.running_max, self.bits, self.symmetric
        )

    def extra_repr(self) -> str:
        return f"bits={self.bits}, symmetric={self.symmetric}, momentum={self.momentum}"


# ------------------------------------------------------------------------ applying a policy


def _quantize_input(module: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Forward pre-hook: fake-quantize the layer's input with its ``input_quantizer``."""
    return (module.input_quantizer(inputs[0]), *inputs[1:])


def weight_quantizer(module: nn.Module) -> WeightFakeQuant | None:
    """The layer's :class:`WeightFakeQuant` parametrization, or None."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations.weight:
        if isinstance(p, WeightFakeQuant):
            return p
    return None


def activation_quantizer(module: nn.Module) -> ActivationFakeQuant | None:
    """The layer's input :class:`ActivationFakeQuant`, or None."""
    quantizer = getattr(module, "input_quantizer", None)
    return quantizer if isinstance(quantizer, ActivationFakeQuant) else None


def is_quantized(module: nn.Module) -> bool:
    """Whether a layer carries a weight or input quantizer from :func:`apply_quantization`."""
    return weight_quantizer(module) is not None or activation_quantizer(module) is not None


def slot_of(module: nn.Module, qualified_name: str) -> str:
    """The layer's slot: its ``winnow_slot`` attribute (set by model builders), else its
    qualified module name."""
    return getattr(module, "winnow_slot", qualified_name)


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, layer) of every Conv2d/Linear in ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANTIZED_LAYERS)]


def quantize_layer(
    module: nn.Module, weight_bits: int, activation_bits: int, per_channel: bool, symmetric: bool
) -> None:
    """Attach weight and input fake quantization to one Conv2d/Linear (in place).

    The weight quantizer is appended to the weight's parametrization list, so it acts on the
    output of any parametrization already there (e.g. weight standardization).
    """
    if weight_bits != FLOAT_BITS:
        quantizer = WeightFakeQuant(weight_bits, per_channel, symmetric)
        parametrize.register_parametrization(module, "weight", quantizer)
    if activation_bits != FLOAT_BITS:
        quantizer = ActivationFakeQuant(activation_bits, symmetric)
        module.input_quantizer = quantizer.to(module.weight.device)
        module.register_forward_pre_hook(_quantize_input)


def apply_quantization(model: nn.Module, policy: QuantPolicy) -> nn.Module:
    """Fake-quantize ``model``'s Conv2d/Linear layers as ``policy`` says, in place; returns it.

    Layers whose weight and activation bits are both 32 are left untouched, so an all-float
    policy changes nothing. Raises :class:`AlreadyQuantizedError` on an already-quantized model.
    """
    layers = quantizable_layers(model)  # a snapshot: parametrizing adds modules to the tree
    already = [name for name, m in layers if is_quantized(m)]
    if already:
        raise AlreadyQuantizedError(
            f"model is already quantized (layers {', '.join(already[:5])}"
            f"{', ...' if len(already) > 5 else ''}); build a fresh model to apply a new policy"
        )
    if policy.is_float:
        return model
    per_channel = policy.granularity == "per_channel"
    for name, module in layers:
        weight_bits = policy.bits_for(slot_of(module, name))
        quantize_layer(module, weight_bits, policy.activation_bits, per_channel, policy.symmetric)
    return model


def layer_bits(module: nn.Module) -> tuple[int, int]:
    """(weight bits, activation bits) of a Conv2d/Linear; (32, 32) if it is not quantized."""
    weight = weight_quantizer(module)
    activation = activation_quantizer(module)
    return (
        weight.bits if weight is not None else FLOAT_BITS,
        activation.bits if activation is not None else FLOAT_BITS,
    )
