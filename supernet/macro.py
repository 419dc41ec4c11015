"""``macro``'s elastic supernet: Once-for-All (Cai et al. 2020, arXiv:1908.09791) and BigNAS
(Yu et al. 2020, arXiv:2003.11142) weight sharing over the MBConv space of
``search_space/archs/macro.py``.

The supernet holds the largest network of the space (deepest stages, widest ``width_mult``,
largest expand ratio and kernel). A subnet uses, as OFA's elastic layers do:

- depth: the first ``depths[s]`` blocks of stage ``s``;
- width (``width_mult``) and expand ratio: the first output channels of every convolution,
  and so the first input channels of the next one;
- kernel size: the centre of the largest depthwise kernel, or with ``kernel_transform`` OFA's
  kernel transformation matrices (one learnt ``k*k x k*k`` matrix per layer and step
  7 -> 5 -> 3, starting at the identity) applied to that centre;
- BatchNorm: the first channels' affine weights and running statistics (OFA's
  ``DynamicBatchNorm2d``); a subnet's statistics are re-estimated before it is scored
  (``winnow.supernet.batchnorm``).

``get_active_subnet`` builds winnow's own ``MacroNetwork`` for the candidate
(``Candidate.build_model``) and copies the slices in, then applies the candidate's quantization,
so the subnet is scored, quantized and hashed like any network winnow builds. Its float output
equals ``forward(x, arch)``. The supernet has one normalization (BatchNorm: the one OFA and
BigNAS slice); a candidate's own normalization is not what it ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from winnow.search_space.activations import make_activation
from winnow.search_space.archs.macro import MacroNetwork, MacroSpace, make_divisible, suggest
from winnow.search_space.candidate import Candidate
from winnow.search_space.params import LeastChooser, RandomChooser, param_values
from winnow.search_space.quantization import QuantPolicy, apply_quantization

SUPPORTED_NORMS = ("batchnorm",)
FIXED_FIELDS = ("base_channels", "strides", "stem_channels", "head_channels")


class GreatestChooser:
    """Every range at its high end, every choice of numbers at its greatest and any other
    choice at its first: the largest network of a space (``LeastChooser``'s mirror)."""

    def categorical(self, name: str, choices: Sequence[Any], path: str) -> Any:
        numbers = all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices)
        return max(choices) if numbers else choices[0]

    def float(self, name: str, low: float, high: float, log: bool, path: str) -> float:
        return high

    def int(self, name: str, low: int, high: int, step: int, log: bool, path: str) -> int:
        return low + (high - low) // step * step


def _assign(target: torch.Tensor, source: torch.Tensor, what: str) -> None:
    """``target.copy_(source)`` without broadcasting: a slice of the wrong shape is a bug."""
    if target.shape != source.shape:
        need, got = tuple(target.shape), tuple(source.shape)
        raise ValueError(f"{what}: the subnet needs {need}, the supernet gives {got}")
    target.copy_(source)


class ElasticConv2d(nn.Conv2d):
    """A convolution (no bias) holding the largest layer's weight; an active layer takes the
    first output and input channels and the centre of the kernel. Depthwise when ``depthwise``:
    then the active channels are the input's, in and out."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        depthwise: bool = False,
        kernel_sizes: Sequence[int] = (),
    ) -> None:
        groups = in_channels if depthwise else 1
        super().__init__(in_channels, out_channels, kernel_size, stride, bias=False, groups=groups)
        self.depthwise = depthwise
        # OFA's transformation matrices, one per step down the kernel sizes (7->5, 5->3)
        self.kernel_steps = sorted({k for k in kernel_sizes if k < kernel_size}, reverse=True)
        self.kernel_transform = nn.ParameterDict(
            {f"{k}": nn.Parameter(torch.eye(k * k)) for k in self.kernel_steps}
        )

    def active_weight(self, out_channels: int, in_channels: int, kernel: int) -> torch.Tensor:
        """The weight of the active layer, ``[out, in / groups, kernel, kernel]``."""
        weight = self.weight[:out_channels, :in_channels]
        size = self.kernel_size[0]
        for step in self.kernel_steps:  # descending: 7 -> 5 -> 3 stops at ``kernel``
            if step < kernel:
                break
            weight, size = self._transform(weight, size, step), step
        start = (size - kernel) // 2
        return weight[:, :, start : start + kernel, start : start + kernel].contiguous()

    def _transform(self, weight: torch.Tensor, size: int, kernel: int) -> torch.Tensor:
        start = (size - kernel) // 2
        centre = weight[:, :, start : start + kernel, start : start + kernel]
        flat = F.linear(centre.reshape(-1, kernel * kernel), self.kernel_transform[f"{kernel}"])
        return flat.reshape(centre.shape)

    def forward(self, x: torch.Tensor, out_channels: int | None = None, kernel: int | None = None):
        channels = x.shape[1]
        kernel = kernel or self.kernel_size[0]
        if self.depthwise:
            weight = self.active_weight(channels, 1, kernel)
            groups = channels
        else:
            weight = self.active_weight(out_channels or self.out_channels, channels, kernel)
            groups = 1
        return F.conv2d(x, weight, None, self.stride, kernel // 2, 1, groups)

    def copy_to(self, conv: nn.Conv2d) -> None:
        out_channels, in_channels, kernel, _ = conv.weight.shape
        _assign(conv.weight, self.active_weight(out_channels, in_channels, kernel), "conv weight")


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first ``C`` channels of the largest layer's (``C`` = the input's), its
    running statistics updated in place on that slice, as ``nn.BatchNorm2d`` updates its own
    (an EMA with ``momentum``, a cumulative average with ``momentum=None``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        factor = self.momentum if self.momentum is not None else 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(
            x,
            self.running_mean[:c],
            self.running_var[:c],
            self.weight[:c],
            self.bias[:c],
            self.training,
            factor,
            self.eps,
        )

    def copy_to(self, norm: nn.BatchNorm2d) -> None:
        c = norm.num_features
        for name in ("weight", "bias", "running_mean", "running_var"):
            _assign(getattr(norm, name), getattr(self, name)[:c], f"batchnorm {name}")
        norm.num_batches_tracked.copy_(self.num_batches_tracked)


class ElasticConvNorm(nn.Module):
    """Conv -> BatchNorm (-> the arch's activation), as ``archs.macro.conv_norm_act``."""

    def __init__(self, c_in, c_out, kernel, stride=1, depthwise=False, kernel_sizes=()) -> None:
        super().__init__()
        self.conv = ElasticConv2d(c_in, c_out, kernel, stride, depthwise, kernel_sizes)
        self.norm = ElasticBatchNorm2d(c_out)

    def forward(self, x, out_channels=None, kernel=None, act: nn.Module | None = None):
        y = self.norm(self.conv(x, out_channels, kernel))
        return act(y) if act is not None else y

    def copy_to(self, layers: nn.Sequential) -> None:
        self.conv.copy_to(layers[0])
        self.norm.copy_to(layers[1])


class ElasticMBConv(nn.Module):
    """``archs.macro.MBConv`` with elastic input, output and hidden channels and kernel."""

    def __init__(self, c_in, c_out, kernel, expand, stride, kernel_sizes) -> None:
        super().__init__()
        hidden = c_in * expand
        self.stride = stride
        self.expand = ElasticConvNorm(c_in, hidden, 1)
        self.depthwise = ElasticConvNorm(hidden, hidden, kernel, stride, True, kernel_sizes)
        self.project = ElasticConvNorm(hidden, c_out, 1)

    def forward(self, x, c_out: int, kernel: int, expand: int, act: nn.Module) -> torch.Tensor:
        c_in = x.shape[1]
        y = self.expand(x, c_in * expand, 1, act)
        y = self.project(self.depthwise(y, None, kernel, act), c_out, 1)
        return x + y if self.stride == 1 and c_in == c_out else y  # as MBConv.residual

    def copy_to(self, block: nn.Module) -> None:
        for name in ("expand", "depthwise", "project"):
            getattr(self, name).copy_to(getattr(block, name))


class MacroSupernet(nn.Module):
    """The elastic supernet of one ``macro`` space (see the module docstring).

    Args:
        space: the family's spec section; every architecture ``suggest`` draws from it is a
            subnet (its fixed fields, ``base_channels`` ... ``head_channels``, must match).
        num_classes, input_shape: the task's, as ``Candidate.build_model`` takes them.
        norm: the supernet's normalization (BatchNorm only).
        kernel_transform: OFA's kernel transformation matrices instead of plain centre crops.

    Example::

        supernet = MacroSupernet(MacroSpace(), 10, (3, 32, 32))
        arch = supernet.sample(random.Random(0))
        logits = supernet(x, arch)
        subnet = supernet.get_active_subnet(Candidate(architecture=arch))
    """

    family = "macro"

    def __init__(
        self,
        space: MacroSpace,
        num_classes: int,
        input_shape: tuple[int, ...],
        norm: str = "batchnorm",
        kernel_transform: bool = False,
    ) -> None:
        super().__init__()
        if norm not in SUPPORTED_NORMS:
            raise ValueError(
                f"the macro supernet slices BatchNorm statistics per width; normalization "
                f"{norm!r} is not supported (allowed: {', '.join(SUPPORTED_NORMS)})"
            )
        if len(input_shape) != 3:
            raise ValueError(f"macro needs image inputs (C, H, W), got input shape {input_shape}")
        self.space, self.norm = space, norm
        self.num_classes, self.input_shape = num_classes, tuple(input_shape)
        self.largest_arch = suggest(space, GreatestChooser())
        self.smallest_arch = suggest(space, LeastChooser())
        kernels = param_values(space.kernel_size) if kernel_transform else ()
        self.stem = ElasticConvNorm(input_shape[0], space.stem_channels, 3)
        self.stages = nn.ModuleList(self._stage(s, kernels) for s in range(space.num_stages))
        self.head = ElasticConvNorm(self._stage_channels(-1), space.head_channels, 1)
        self.classifier = nn.Linear(space.head_channels, num_classes)
        self._activations: dict[str, nn.Module] = {}

    def _stage_channels(self, s: int, arch: dict[str, Any] | None = None) -> int:
        arch = arch or self.largest_arch
        if s < 0:
            s += self.space.num_stages
        return make_divisible(arch["base_channels"][s] * arch["width_mult"])

    def _stage(self, s: int, kernel_sizes: Sequence[int]) -> nn.ModuleList:
        big = self.largest_arch
        c_in = self._stage_channels(s - 1) if s else self.space.stem_channels
        c_out = self._stage_channels(s)
        blocks = []
        for b in range(big["depths"][s]):
            stride = big["strides"][s] if b == 0 else 1
            kernel, expand = big["kernel_sizes"][s], big["expand_ratios"][s]
            blocks.append(ElasticMBConv(c_in, c_out, kernel, expand, stride, kernel_sizes))
            c_in = c_out
        return nn.ModuleList(blocks)

    # --- the architectures ---------------------------------------------------------------

    def sample(self, rng) -> dict[str, Any]:
        """A uniformly drawn architecture of the space (the family's own ``suggest``)."""
        return suggest(self.space, RandomChooser(rng))

    def largest(self) -> dict[str, Any]:
        return dict(self.largest_arch)

    def smallest(self) -> dict[str, Any]:
        return dict(self.smallest_arch)

    def check(self, arch: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the first field of ``arch`` that is not a subnet."""
        big = self.largest_arch
        for field in FIXED_FIELDS:
            if arch.get(field) != big[field]:
                given = arch.get(field)
                raise ValueError(f"{field} {given!r} is not the supernet's {big[field]!r}")
        if arch["width_mult"] > big["width_mult"]:
            raise ValueError(f"width_mult {arch['width_mult']} is over the largest's")
        for field in ("depths", "kernel_sizes", "expand_ratios"):
            if len(arch[field]) != len(big[field]) or any(
                v > m for v, m in zip(arch[field], big[field], strict=True)
            ):
                raise ValueError(f"{field} {arch[field]} is not within the largest's {big[field]}")

    def _activation(self, name: str) -> nn.Module:
        """The stateless activation module of ``name``, made once. Kept in a plain dict, not
        registered, so the supernet's modules and ``state_dict`` do not depend on which
        activations a run happened to meet; hence refused when it has parameters or buffers
        (they would be missed by the optimizer, ``state_dict`` and ``.to``)."""
        if name not in self._activations:
            activation = make_activation(name)
            if any(True for _ in activation.parameters()) or any(
                True for _ in activation.buffers()
            ):
                raise ValueError(
                    f"activation {name!r} has state; the supernet shares only stateless ones"
                )
            self._activations[name] = activation
        return self._activations[name]

    # --- forward and extraction ------------------------------------------------------------

    def forward(self, x: torch.Tensor, arch: dict[str, Any]) -> torch.Tensor:
        self.check(arch)
        act = self._activation(arch["activation"])
        resolution = arch.get("resolution")
        if resolution and x.shape[-1] != resolution:  # as MacroNetwork.forward
            size = (resolution, resolution)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = self.stem(x, self.space.stem_channels, 3, act)
        for s, blocks in enumerate(self.stages):
            c_out = self._stage_channels(s, arch)
            kernel, expand = arch["kernel_sizes"][s], arch["expand_ratios"][s]
            for block in blocks[: arch["depths"][s]]:
                x = block(x, c_out, kernel, expand, act)
        x = self.head(x, self.space.head_channels, 1, act)
        return self.classifier(x.mean((2, 3)))

    def get_active_subnet(self, candidate: Candidate) -> nn.Module:
        """winnow's network for ``candidate`` with the supernet's norm, the inherited weights
        and statistics copied in, and the candidate's quantization applied; in the supernet's
        mode (train or eval). Float policies compute ``forward(x, candidate.architecture)``."""
        arch = candidate.architecture
        self.check(arch)
        float_candidate = candidate.model_copy(
            update={"normalization": self.norm, "quantization": QuantPolicy()}
        )
        model = float_candidate.build_model(self.num_classes, self.input_shape)
        with torch.no_grad():
            self._copy_to(model, arch)
        model.train(self.training)
        return apply_quantization(model, candidate.quantization)

    def _copy_to(self, model: MacroNetwork, arch: dict[str, Any]) -> None:
        self.stem.copy_to(model.stem)
        static_blocks = iter(model.blocks)
        for s, blocks in enumerate(self.stages):
            for block in blocks[: arch["depths"][s]]:
                block.copy_to(next(static_blocks))
        self.head.copy_to(model.head)
        _assign(model.classifier.weight, self.classifier.weight, "classifier weight")
        _assign(model.classifier.bias, self.classifier.bias, "classifier bias")
