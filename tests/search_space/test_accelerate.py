"""The CUDA extras (bf16 autocast, channels_last, pinned copies): identity on the CPU; on a
GPU (skipped without one) they engage and a network still trains to a finite, useful result."""

from __future__ import annotations

import pytest
import torch

from winnow.search_space import Candidate, Status, TrialSpec
from winnow.search_space.accelerate import (
    mixed_precision,
    prepare_input,
    prepare_model,
    to_device,
    uses_channels_last,
)
from winnow.search_space.training import evaluate

CPU = torch.device("cpu")
CELL = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+"
    "|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"
)
NB201 = Candidate(
    architecture={"family": "nb201", "cell": CELL, "channels": 8, "cells_per_stage": 1},
    optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 64},
)
QUANTIZED = Candidate.model_validate(
    NB201.model_dump() | {"quantization": {"weight_bits": {"*": 8}}}
)
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_on_the_cpu_nothing_changes():
    model = NB201.build_model(10, (3, 32, 32))
    assert not mixed_precision(CPU, NB201) and not QUANTIZED.quantization.is_float
    assert not uses_channels_last(model, CPU)
    assert prepare_model(model, CPU) is model
    x = torch.randn(2, 3, 8, 8)
    assert prepare_input(x, False) is x and to_device(x, CPU) is x


def test_channels_last_is_for_convolutional_networks_only():
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 4))
    cuda = torch.device("cuda")
    assert not uses_channels_last(mlp, cuda)
    assert uses_channels_last(NB201.build_model(10, (3, 32, 32)), cuda)
    x = prepare_input(torch.randn(2, 3, 8, 8), True)
    assert x.is_contiguous(memory_format=torch.channels_last)


@needs_gpu
def test_cuda_training_uses_bf16_and_channels_last():
    cuda = torch.device("cuda")
    model = prepare_model(NB201.build_model(10, (3, 32, 32)), cuda)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert mixed_precision(cuda, NB201) == torch.cuda.is_bf16_supported()
    assert not mixed_precision(cuda, QUANTIZED)  # fake quantization trains in float32
    pinned = to_device(torch.ones(4), cuda)
    assert pinned.is_cuda and pinned.sum().item() == 4


@needs_gpu
@pytest.mark.parametrize("candidate", [NB201, QUANTIZED], ids=["bf16", "quantized-fp32"])
def test_a_cell_trains_on_the_gpu(candidate):
    result = evaluate(TrialSpec(candidate, "synthetic:3x32x32", epochs=2, device="cuda"))
    assert result.status == Status.OK, result.error
    assert result.device.startswith("cuda") and all(
        map(torch.isfinite, map(torch.tensor, result.loss_curve))
    )
    assert result.metrics["accuracy"] > 0.3 and result.metrics["peak_memory_bytes"] > 0
