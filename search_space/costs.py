"""Cost measures of a candidate model: parameters, FLOPs, MACs, deployed bytes and BitOPs.

All per-input measures are for ONE sample of shape ``input_shape`` (without the batch dim).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from winnow.search_space.quantization import (
    QUANTIZED_LAYERS,
    layer_bits,
    quantizable_layers,
    weight_quantizer,
)

FLOAT_BYTES = 4  # deployed float parameters and quantization scales/zero points are 32-bit


def parameters_of(candidate, num_classes: int, input_shape: tuple[int, ...]) -> int:
    """Parameters of ``candidate``'s network (a ``Candidate``), counted without building it in
    memory: the network is built on torch's ``meta`` device (shapes, no storage), unquantized
    (quantization adds no parameters, see ``count_parameters``, and its fake-quantization ops
    have no meta kernels). A cap can refuse a huge candidate this way before anything
    allocates it."""
    plain = candidate.model_copy(update={"quantization": type(candidate.quantization)()})
    with torch.device("meta"):
        return count_parameters(plain.build_model(num_classes, input_shape))


def count_parameters(model: nn.Module) -> int:
    """Number of parameters, counted as NAS-Bench-201 does (every parameter tensor, once).

    ``model.parameters()`` yields a parametrized weight's ``original`` tensor once (the
    parametrizations themselves hold no parameters), so quantization does not change the count.
    """
    return sum(p.numel() for p in model.parameters())


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and no grad for one measuring pass; restores every module's own training flag
    (not just the root's, since submodules may differ)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes.items():
            module.training = training


def _sample_input(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """A zero batch of one sample on the model's device and float dtype (costs do not depend
    on the values)."""
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), torch.zeros(()))
    dtype = tensor.dtype if tensor.is_floating_point() else torch.float32
    return torch.zeros((1, *input_shape), dtype=dtype, device=tensor.device)


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass of one sample, by ``torch.utils.flop_counter.FlopCounterMode``
    (torch's convention: a multiply-add counts 2; elementwise ops, norms and fake quantization
    count 0). Runs in eval mode without grad and restores the training mode afterwards."""
    x = _sample_input(model, input_shape)
    counter = FlopCounterMode(display=False)
    with _inference(model), counter:
        model(x)
    return int(counter.get_total_flops())


def _macs_of_call(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulates of one call of a Conv2d (output elements * in/groups * kh * kw) or a
    Linear (output elements * in_features); the batch is one sample."""
    if isinstance(module, nn.Conv2d):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
    else:
        per_output = module.in_features
    return output.numel() * per_output


def layer_macs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-accumulates of every Conv2d/Linear for one sample, keyed by qualified module
    name, measured with forward hooks (a layer called twice counts twice, one never called 0)."""
    layers = quantizable_layers(model)
    macs = dict.fromkeys((name for name, _ in layers), 0)

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            macs[name] += _macs_of_call(module, output)

        return hook

    handles = [m.register_forward_hook(hook_for(name)) for name, m in layers]
    try:
        with _inference(model):
            model(_sample_input(model, input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return macs


def _quantized_weight_bytes(module: nn.Module) -> tuple[torch.Tensor, int] | None:
    """(stored weight tensor, its deployed bytes) of a layer with a quantized weight, or None.

    Deployed bytes: ceil(numel * bits / 8) for the packed integers, plus one float32 scale per
    output channel (per-channel) or per tensor, plus as many 4-byte zero points when affine.
    """
    quantizer = weight_quantizer(module)
    if quantizer is None:
        return None
    weight = module.parametrizations.weight.original
    n_params = weight.shape[0] if quantizer.per_channel else 1
    qparam_bytes = n_params * FLOAT_BYTES * (1 if quantizer.symmetric else 2)
    return weight, math.ceil(weight.numel() * quantizer.bits / 8) + qparam_bytes


def model_bytes(model: nn.Module) -> int:
    """Storage of the deployed model: quantized weights at their bits plus their quantization
    parameters; every other parameter (biases, norms, float weights) at 4 bytes. Buffers (BN
    running stats, activation observers' ranges) are not counted."""
    total = 0
    quantized_ids: set[int] = set()
    for module in model.modules():
        if not isinstance(module, QUANTIZED_LAYERS):
            continue
        found = _quantized_weight_bytes(module)
        if found is not None and id(found[0]) not in quantized_ids:  # shared weights count once
            quantized_ids.add(id(found[0]))
            total += found[1]
    floats = sum(p.numel() for p in model.parameters() if id(p) not in quantized_ids)
    return total + floats * FLOAT_BYTES


def bitops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """BitOPs of one sample: the sum over Conv2d/Linear of MACs * weight bits * activation bits
    (32 x 32 for float layers), the measure of the mixed-precision papers (APQ, Wang et al.
    2020, CVPR; EQ-Net, Xu et al. 2023, ICCV)."""
    macs = layer_macs(model, input_shape)
    modules = dict(model.named_modules())
    total = 0
    for name, count in macs.items():
        weight_bits, activation_bits = layer_bits(modules[name])
        total += count * weight_bits * activation_bits
    return total
