"""Costs of a hand-made tiny model, computed by hand in the test: params, MACs, FLOPs, BitOPs."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from winnow.search_space.costs import (
    bitops,
    count_flops,
    count_parameters,
    layer_macs,
    model_bytes,
)
from winnow.search_space.quantization import QuantPolicy, apply_quantization

INPUT = (2, 5, 5)


def tiny_model() -> nn.Sequential:
    """conv1 2->4 3x3 pad 1 (out 4x5x5); depthwise conv2 3x3 stride 2 pad 1, no bias (out 4x3x3);
    BN; ReLU; flatten (36); fc 36->3."""
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(2, 4, 3, padding=1),
            conv2=nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False),
            bn=nn.BatchNorm2d(4),
            act=nn.ReLU(),
            flat=nn.Flatten(),
            fc=nn.Linear(36, 3),
        )
    )


# By hand. Parameters: conv1 4*2*3*3 + 4 bias; conv2 4*1*3*3; BN 4 weight + 4 bias; fc 36*3 + 3.
CONV1_W, CONV1_B, CONV2_W, BN, FC_W, FC_B = 72, 4, 36, 8, 108, 3
PARAMS = CONV1_W + CONV1_B + CONV2_W + BN + FC_W + FC_B  # 231
# MACs: output elements * (in/groups * kh * kw) for conv, output elements * in_features for fc.
MACS = {"conv1": (4 * 5 * 5) * (2 * 3 * 3), "conv2": (4 * 3 * 3) * (1 * 3 * 3), "fc": 3 * 36}


def test_count_parameters_by_hand():
    assert PARAMS == 231
    assert count_parameters(tiny_model()) == PARAMS


def test_count_parameters_unchanged_by_quantization():
    model = apply_quantization(tiny_model(), QuantPolicy(weight_bits={"*": 4}, activation_bits=8))
    assert count_parameters(model) == PARAMS


def test_layer_macs_by_hand():
    assert MACS == {"conv1": 1800, "conv2": 324, "fc": 108}
    assert layer_macs(tiny_model(), INPUT) == MACS


def test_flops_are_twice_the_macs():
    # torch's FlopCounterMode: a multiply-add is 2 FLOPs; BN, ReLU and biases count nothing.
    assert count_flops(tiny_model(), INPUT) == 2 * sum(MACS.values())


def test_flops_and_macs_are_per_sample_and_unchanged_by_quantization():
    model = apply_quantization(tiny_model(), QuantPolicy(weight_bits={"*": 2}, activation_bits=4))
    assert count_flops(model, INPUT) == 2 * sum(MACS.values())
    assert layer_macs(model, INPUT) == MACS


def test_measuring_restores_training_flags_and_leaves_statistics_alone():
    model = apply_quantization(tiny_model(), QuantPolicy(activation_bits=8))
    model.train()
    model.fc.eval()  # a submodule in its own mode must keep it
    bn_mean = model.bn.running_mean.clone()
    count_flops(model, INPUT)
    layer_macs(model, INPUT)
    assert model.training and model.conv1.training and not model.fc.training
    assert torch.equal(model.bn.running_mean, bn_mean)  # ran in eval mode
    assert not bool(model.conv1.input_quantizer.initialized)  # the observer saw nothing


def test_a_layer_called_twice_counts_twice():
    fc = nn.Linear(4, 4)
    model = nn.Sequential(OrderedDict(fc=fc, again=fc))  # one module under two names
    assert layer_macs(model, (4,)) == {"fc": 32}


def test_model_bytes_float_is_four_bytes_a_parameter():
    model = tiny_model()
    assert model_bytes(model) == 4 * PARAMS
    # buffers (BN running stats) do not count
    assert sum(b.numel() for b in model.buffers()) > 0


def test_model_bytes_4bit_per_channel_symmetric_by_hand():
    model = apply_quantization(tiny_model(), QuantPolicy(weight_bits={"*": 4}, activation_bits=8))
    weights = CONV1_W * 4 / 8 + CONV2_W * 4 / 8 + FC_W * 4 / 8  # packed 4-bit integers
    scales = 4 * (4 + 4 + 3)  # one float32 scale per output channel, no zero points
    floats = 4 * (CONV1_B + BN + FC_B)
    assert model_bytes(model) == weights + scales + floats  # 36 + 18 + 54 + 44 + 60 = 212


def test_model_bytes_3bit_per_tensor_affine_rounds_up_each_tensor():
    policy = QuantPolicy(weight_bits={"*": 3}, granularity="per_tensor", symmetric=False)
    model = apply_quantization(tiny_model(), policy)
    # 72*3/8 = 27, 36*3/8 = 13.5 -> 14, 108*3/8 = 40.5 -> 41 bytes
    weights = 27 + 14 + 41
    qparams = 3 * (4 + 4)  # one scale and one 4-byte zero point per tensor
    assert model_bytes(model) == weights + qparams + 4 * (CONV1_B + BN + FC_B)  # 166


def test_model_bytes_mixed_precision_counts_float_weights_at_four_bytes():
    model = tiny_model()
    model.fc.winnow_slot = "head"
    apply_quantization(model, QuantPolicy(weight_bits={"head": 8}))
    fc_bytes = FC_W + 4 * 3  # 8-bit integers + 3 per-channel scales
    assert model_bytes(model) == fc_bytes + 4 * (PARAMS - FC_W)


def test_model_bytes_8bit_is_about_a_quarter_for_a_big_layer():
    float_bytes = model_bytes(nn.Linear(1024, 1024))
    quantized = apply_quantization(nn.Linear(1024, 1024), QuantPolicy(weight_bits={"*": 8}))
    assert model_bytes(quantized) / float_bytes == pytest.approx(0.25, abs=0.005)


def test_bitops_float_is_macs_times_32_by_32():
    assert bitops(tiny_model(), INPUT) == sum(MACS.values()) * 32 * 32


def test_bitops_8_by_8_is_a_sixteenth_of_float():
    quantized = apply_quantization(
        tiny_model(), QuantPolicy(weight_bits={"*": 8}, activation_bits=8)
    )
    assert 16 * bitops(quantized, INPUT) == bitops(tiny_model(), INPUT)


def test_bitops_mixed_precision_by_hand():
    model = tiny_model()
    model.conv1.winnow_slot = "stem"
    apply_quantization(model, QuantPolicy(weight_bits={"stem": 2, "*": 32}, activation_bits=4))
    # conv1 2x4, conv2 and fc keep float weights (32) but quantized inputs (4)
    expected = MACS["conv1"] * 2 * 4 + (MACS["conv2"] + MACS["fc"]) * 32 * 4
    assert bitops(model, INPUT) == expected


def test_model_bytes_ceil_is_per_tensor():
    # 3 weights of 3 bits: ceil(9/8) = 2 bytes, plus one scale (4 bytes) and the 1 bias (4 bytes)
    model = apply_quantization(
        nn.Linear(3, 1), QuantPolicy(weight_bits={"*": 3}, granularity="per_tensor")
    )
    assert model_bytes(model) == math.ceil(3 * 3 / 8) + 4 + 4


def test_parameters_of_a_candidate_are_counted_on_the_meta_device_quantized_or_not():
    from winnow.search_space import Candidate
    from winnow.search_space.costs import parameters_of

    cell = "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
    arch = {"family": "nb201", "cell": cell, "channels": 8, "cells_per_stage": 1}
    for quantization in ({}, {"weight_bits": {"*": 4}}):
        candidate = Candidate(architecture=arch, quantization=quantization)
        built = count_parameters(candidate.build_model(10, (3, 32, 32)))
        assert parameters_of(candidate, 10, (3, 32, 32)) == built
