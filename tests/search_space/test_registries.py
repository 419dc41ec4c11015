"""Every registry entry builds and trains a step on CPU: norms in every family, activations,
optimizers, quantization settings, datasets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from winnow.search_space import Candidate, parse_space
from winnow.search_space.activations import ACTIVATIONS
from winnow.search_space.archs import FAMILIES
from winnow.search_space.norms import NORMS
from winnow.search_space.optimizers import OPTIMIZERS, backward_and_step
from winnow.search_space.quantization import WEIGHT_BITS
from winnow.search_space.registry import Registry, UnknownNameError

SMALL_ARCHS = {
    "nb201": {"family": "nb201", "channels": 4, "cells_per_stage": 1},
    "macro": {
        "family": "macro",
        "base_channels": [8, 16],
        "strides": [1, 2],
        "stem_channels": 8,
        "head_channels": 16,
        "depth": [1, 2],
        "width_mult": 1.0,
    },
    "mlp": {"family": "mlp", "depth": 2, "width": 16},
}
SHAPES = {"nb201": (3, 8, 8), "macro": (3, 8, 8), "mlp": (3, 8, 8)}


def train_one_step(candidate: Candidate, shape) -> float:
    torch.manual_seed(0)
    model = candidate.build_model(num_classes=5, input_shape=shape)
    optimizer = candidate.build_optimizer(model)
    x, y = torch.randn(6, *shape), torch.randint(0, 5, (6,))
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model(x), y)
    backward_and_step(optimizer, loss)
    changed = sum(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert changed > 0, "a training step changed no parameter"
    model.eval()
    assert torch.isfinite(model(x)).all()
    return loss.item()


def candidate_for(family: str, **axes) -> Candidate:
    spec = {"architecture": SMALL_ARCHS[family]} | axes
    return parse_space(spec).sample(1, seed=0)[0]


def test_registries_hold_what_the_design_lists():
    assert set(FAMILIES.names()) == {"nb201", "macro", "mlp", "custom"}
    assert set(NORMS.names()) == {
        "batchnorm",
        "layernorm",
        "groupnorm",
        "rmsnorm",
        "bcn_ws",
        "evonorm_b0",
        "evonorm_s0",
        "none",
    }
    assert set(ACTIVATIONS.names()) == {"relu", "gelu", "silu", "hardswish"}
    assert set(OPTIMIZERS.names()) == {
        "sgd",
        "adam",
        "adamw",
        "lion",
        "adabelief",
        "adamp",
        "lamb",
        "sophia",
        "diffgrad",
    }


def test_a_temporary_registration_ends_with_its_block_even_on_error():
    colours: Registry[int] = Registry("colour")
    colours.register("red", 1)
    with pytest.raises(RuntimeError), colours.registered("blue", 2):
        assert colours.get("blue") == 2 and colours.names() == ["red", "blue"]
        raise RuntimeError
    assert colours.names() == ["red"]
    with pytest.raises(UnknownNameError, match="unknown colour 'blue'; allowed: red"):
        colours.get("blue")
    with pytest.raises(ValueError, match="already registered"), colours.registered("red", 3):
        pass
    assert colours.get("red") == 1  # a refused registration takes nothing away


@pytest.mark.parametrize("family", sorted(SMALL_ARCHS))
@pytest.mark.parametrize("norm", NORMS.names())
def test_every_norm_in_every_family_trains_a_step(family, norm):
    loss = train_one_step(candidate_for(family, normalization=norm), SHAPES[family])
    assert loss == pytest.approx(loss) and loss > 0


@pytest.mark.parametrize("family", ["macro", "mlp"])
@pytest.mark.parametrize("activation", ACTIVATIONS.names())
def test_every_activation_trains_a_step(family, activation):
    arch = SMALL_ARCHS[family] | {"activation": activation}
    candidate = parse_space({"architecture": arch}).sample(1, seed=0)[0]
    train_one_step(candidate, SHAPES[family])


@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
def test_every_optimizer_trains_a_step(optimizer):
    train_one_step(candidate_for("nb201", optimizer={"name": optimizer}), SHAPES["nb201"])


@pytest.mark.parametrize("bits", WEIGHT_BITS)
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_every_quantization_setting_trains_a_step(bits, granularity, symmetric):
    quant = {
        "weight_bits": bits,
        "activation_bits": 8 if bits < 32 else 32,
        "granularity": granularity,
        "symmetric": symmetric,
    }
    train_one_step(candidate_for("macro", quantization=quant), SHAPES["macro"])


def test_macro_elastic_choices_change_the_network():
    space = parse_space({"architecture": SMALL_ARCHS["macro"] | {"resolution": [8, 12]}})
    sizes = set()
    for candidate in space.sample(8, seed=0):
        model = candidate.build_model(5, (3, 8, 8))
        sizes.add(sum(p.numel() for p in model.parameters()))
        assert model(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    assert len(sizes) > 1


def test_image_families_refuse_flat_inputs():
    with pytest.raises(ValueError, match="image inputs"):
        candidate_for("nb201").build_model(5, (20,))


@pytest.mark.parametrize(
    "cell",
    [
        "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
        "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|skip_connect~1|nor_conv_3x3~2|",
    ],
)
def test_no_normalization_trains_stably_where_identity_paths_compound(cell):
    """An all-skip cell computes 4x its input; 15 of them would scale activations by ~4^15.
    The ``none`` norm's init must still let the benchmark's SGD (lr 0.1) train."""
    spec = {
        "architecture": {"family": "nb201", "cell": cell, "channels": 8},
        "normalization": "none",
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
    }
    candidate = parse_space(spec).sample(1)[0]
    torch.manual_seed(0)
    model = candidate.build_model(10, (3, 16, 16))
    optimizer = candidate.build_optimizer(model)
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(model(x), y)
        backward_and_step(optimizer, loss)
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[0] < 10  # logits start at a sane scale
    assert losses[-1] < losses[0]
