"""``macro``: an elastic ConvNet of inverted-residual (MBConv) stages, the supernet's space.

As in MobileNetV2 / Once-for-All: a 3x3 stem, stages of MBConv blocks (1x1 expand -> kxk
depthwise -> 1x1 project, residual when the shape allows), a 1x1 head conv, global pool and a
linear classifier. Per stage the candidate picks a depth, a kernel size (3/5/7) and an expand
ratio (3/4/6); a global width multiplier scales every stage's channels; the input resolution is
elastic too (the network resizes its input, bilinear).

Slots for quantization: ``stem``, ``stage{s}.block{b}`` (all three convs of a block), ``head``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from torch import nn

from winnow.search_space.activations import make_activation
from winnow.search_space.archs.base import ArchitectureView, image_probe_shape
from winnow.search_space.norms import conv2d, make_norm
from winnow.search_space.params import (
    MAX_STAGES,
    MAX_WIDTH,
    Channels,
    Chooser,
    Depth,
    Param,
    Resolution,
    Strides,
    WidthMult,
    decide,
    param_values,
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without losing more than 10% (MobileNetV2)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_norm_act(c_in, c_out, kernel, stride, norm, act, slot, groups=1) -> nn.Sequential:
    conv = conv2d(c_in, c_out, kernel, stride, kernel // 2, norm=norm, groups=groups)
    conv.winnow_slot = slot
    layers = [conv, make_norm(norm, c_out)]
    if act is not None:
        layers.append(make_activation(act))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual block (Sandler et al. 2018)."""

    def __init__(self, c_in, c_out, kernel, expand, stride, norm, act, slot):
        super().__init__()
        hidden = c_in * expand
        self.expand = conv_norm_act(c_in, hidden, 1, 1, norm, act, slot)
        self.depthwise = conv_norm_act(hidden, hidden, kernel, stride, norm, act, slot, hidden)
        self.project = conv_norm_act(hidden, c_out, 1, 1, norm, None, slot)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class MacroNetwork(nn.Module):
    def __init__(self, arch: dict[str, Any], norm: str, num_classes: int, in_channels: int):
        super().__init__()
        act = arch["activation"]
        self.resolution = arch.get("resolution")
        c = arch["stem_channels"]
        self.stem = conv_norm_act(in_channels, c, 3, 1, norm, act, "stem")
        blocks = []
        for s, base in enumerate(arch["base_channels"]):
            c_out = make_divisible(base * arch["width_mult"])
            for b in range(arch["depths"][s]):
                stride = arch["strides"][s] if b == 0 else 1
                blocks.append(
                    MBConv(
                        c,
                        c_out,
                        arch["kernel_sizes"][s],
                        arch["expand_ratios"][s],
                        stride,
                        norm,
                        act,
                        f"stage{s}.block{b}",
                    )
                )
                c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_norm_act(c, arch["head_channels"], 1, 1, norm, act, "head")
        self.classifier = nn.Linear(arch["head_channels"], num_classes)
        self.classifier.winnow_slot = "head"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resolution and x.shape[-1] != self.resolution:
            x = F.interpolate(
                x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False
            )
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(x.mean((2, 3)))


class MacroSpace(BaseModel):
    """Spec section for ``family: macro``; per-stage Params apply to each stage separately."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    family: Literal["macro"] = "macro"
    base_channels: Channels = Field([16, 24, 40, 80], min_length=1, max_length=MAX_STAGES)
    """Output channels of each stage before ``width_mult`` (one entry per stage)."""
    strides: Strides = [1, 2, 2, 2]
    """The stride of each stage's first block (one entry per stage)."""
    stem_channels: int = Field(16, ge=1, le=MAX_WIDTH)
    """Channels of the 3x3 stem."""
    head_channels: int = Field(128, ge=1, le=MAX_WIDTH)
    """Channels of the 1x1 conv before pooling and the classifier."""
    depth: Depth = [1, 2, 3]
    """MBConv blocks per stage (decided per stage)."""
    kernel_size: Param = [3, 5, 7]
    """Depthwise kernel size, a choice among 3, 5, 7 (decided per stage)."""
    expand_ratio: Param = [3, 4, 6]
    """MBConv expansion, a choice among 3, 4, 6 (decided per stage)."""
    width_mult: WidthMult = [0.75, 1.0]
    """Channel multiplier of every stage."""
    resolution: Resolution = None
    """Input resolution the images are resized to (none: as the dataset gives them)."""
    activation: Param = "relu"
    """The activation of every block."""

    @field_validator("kernel_size", "expand_ratio")
    @classmethod
    def _allowed(cls, param: Any, info: ValidationInfo) -> Any:
        allowed = {"kernel_size": [3, 5, 7], "expand_ratio": [3, 4, 6]}[info.field_name]
        values = param_values(param)
        bad = [v for v in values or [] if v not in allowed]
        if values is None or bad:
            what = "a range" if values is None else ", ".join(map(repr, bad))
            raise ValueError(f"{what} not allowed; allowed: {', '.join(map(str, allowed))}")
        return param

    @model_validator(mode="after")
    def _check(self) -> MacroSpace:
        if len(self.base_channels) != len(self.strides):
            raise ValueError("base_channels and strides need one entry per stage")
        return self

    @property
    def num_stages(self) -> int:
        return len(self.base_channels)

    @property
    def max_depth(self) -> int:
        values = param_values(self.depth)
        return max(values) if values else self.depth.high


def suggest(space: MacroSpace, chooser: Chooser) -> dict[str, Any]:
    def per_stage(field: str, param: Any) -> list[Any]:
        return [
            decide(chooser, f"architecture.{field}.{s}", param) for s in range(space.num_stages)
        ]

    return {
        "family": "macro",
        "depths": per_stage("depths", space.depth),
        "kernel_sizes": per_stage("kernel_sizes", space.kernel_size),
        "expand_ratios": per_stage("expand_ratios", space.expand_ratio),
        "width_mult": decide(chooser, "architecture.width_mult", space.width_mult),
        "resolution": decide(chooser, "architecture.resolution", space.resolution),
        "activation": decide(chooser, "architecture.activation", space.activation),
        "base_channels": list(space.base_channels),
        "strides": list(space.strides),
        "stem_channels": space.stem_channels,
        "head_channels": space.head_channels,
    }


def decisions(arch: dict[str, Any]) -> dict[str, Any]:
    flat = {f"architecture.{k}": arch[k] for k in ("width_mult", "resolution", "activation")}
    for field in ("depths", "kernel_sizes", "expand_ratios"):
        flat.update({f"architecture.{field}.{s}": v for s, v in enumerate(arch[field])})
    return flat


def build(arch: dict[str, Any], norm: str, num_classes: int, input_shape: tuple[int, ...]):
    if len(input_shape) != 3:
        raise ValueError(f"macro needs image inputs (C, H, W), got input shape {input_shape}")
    return MacroNetwork(arch, norm, num_classes, input_shape[0])


def canonical(arch: dict[str, Any], bits_for: Callable[[str], int]) -> tuple[dict, list[int]]:
    """Every decision matters; only the bits of blocks that exist (depth) are kept."""
    blocks = [f"stage{s}.block{b}" for s, depth in enumerate(arch["depths"]) for b in range(depth)]
    bits = {slot: bits_for(slot) for slot in ["stem", *blocks, "head"]}
    return {**arch, "width_mult": float(arch["width_mult"]), "bits": bits}, list(bits.values())


def positions(model: nn.Module, arch: dict[str, Any]) -> dict[str, str]:
    return {}  # module names are already canonical places: stages and blocks are positional


def probe_architecture(arch: dict[str, Any], bits_for: Callable[[str], int]) -> None:
    return None  # no repeated unit to drop: functional hashing probes the network itself


probe_shape = image_probe_shape


def describe(arch: dict[str, Any]) -> ArchitectureView:
    """Depths and kernels, and the stages (depth, kernel, expand ratio, channels, stride) as a
    table."""
    depths, width = arch["depths"], arch.get("width_mult", 1.0)
    stages = {
        "stage": list(range(len(depths))),
        "blocks": depths,
        "kernel": arch["kernel_sizes"],
        "expand": arch["expand_ratios"],
        "channels": [round(c * width) for c in arch.get("base_channels", [])]
        or [None] * len(depths),
        "stride": arch.get("strides") or [None] * len(depths),
    }
    summary = f"macro depths {depths} kernels {arch.get('kernel_sizes')}"
    return ArchitectureView(summary, dict(arch), table=stages)


def quant_slots(space: MacroSpace, scope: str) -> list[str]:
    stages = range(space.num_stages)
    if scope == "group":
        return ["stem", *(f"stage{s}" for s in stages), "head"]
    blocks = [f"stage{s}.block{b}" for s in stages for b in range(space.max_depth)]
    return ["stem", *blocks, "head"]
