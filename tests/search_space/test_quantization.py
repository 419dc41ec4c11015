"""Fake quantization: numerics against hand-computed and numpy references, the straight-through
gradient, the activation observer, and applying a policy to a model."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.nn.utils import parametrize

from winnow.search_space.quantization import (
    ActivationFakeQuant,
    AlreadyQuantizedError,
    QuantPolicy,
    WeightFakeQuant,
    apply_quantization,
    fake_quantize,
    layer_bits,
)

# ------------------------------------------------------------------ an independent reference


def reference_fake_quant(x, bits, per_channel, symmetric, axis=0):
    """Textbook fake quantization in float64 numpy, one channel at a time (Jacob et al. 2018)."""
    x = np.asarray(x, dtype=np.float64)
    if not per_channel:
        return _reference_range(x, bits, symmetric)
    moved = np.moveaxis(x, axis, 0)
    out = np.stack([_reference_range(channel, bits, symmetric) for channel in moved])
    return np.moveaxis(out, 0, axis)


def _reference_range(x, bits, symmetric):
    if symmetric:
        top = 2 ** (bits - 1) - 1
        scale = max(np.abs(x).max() / top, 1e-12)
        return np.clip(np.round(x / scale), -top, top) * scale
    top = 2**bits - 1
    low, high = min(x.min(), 0.0), max(x.max(), 0.0)
    scale = max((high - low) / top, 1e-12)
    zero_point = np.round(-low / scale)
    return (np.clip(np.round(x / scale) + zero_point, 0, top) - zero_point) * scale


def t(values):
    return torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------- numerics, by hand


def test_per_tensor_symmetric_3bit_by_hand():
    # 3 bits symmetric: integers -3..3, scale = max|x| / 3 = 1/3.
    x = t([-1.0, -0.4, 0.1, 0.3, 0.9])
    expected = t([-3, -1, 0, 1, 3]) / 3  # round(3x) = round([-3, -1.2, .3, .9, 2.7])
    torch.testing.assert_close(fake_quantize(x, 3, False, True), expected)


def test_2bit_symmetric_is_ternary():
    # 2 bits narrow symmetric: integers -1, 0, 1 only, scale = max|x|.
    x = torch.randn(64, generator=torch.Generator().manual_seed(0))
    y = fake_quantize(x, 2, per_channel=False, symmetric=True)
    m = x.abs().max()
    assert set(y.unique().tolist()) <= {-m.item(), 0.0, m.item()}
    torch.testing.assert_close(
        fake_quantize(t([-1.0, -0.4, 0.45, 0.6]), 2, False, True), t([-1.0, 0.0, 0.0, 1.0])
    )


def test_per_channel_symmetric_has_a_scale_per_channel():
    w = t([[1.0, -0.6, 0.2], [0.1, -0.04, 0.07]])
    # channel 0: scale 1/3, 3w = [3, -1.8, .6] -> [3, -2, 1]
    # channel 1: scale 0.1/3, 30w = [3, -1.2, 2.1] -> [3, -1, 2]
    expected = t([[1.0, -2 / 3, 1 / 3], [0.1, -1 / 30, 2 / 30]])
    torch.testing.assert_close(fake_quantize(w, 3, per_channel=True, symmetric=True), expected)
    # one scale for the tensor (1/3) would flush the small channel to zero
    per_tensor = fake_quantize(w, 3, per_channel=False, symmetric=True)
    assert torch.equal(per_tensor[1], torch.zeros(3))


def test_affine_per_tensor_4bit_nonzero_zero_point():
    # range [-0.6, 2.4], 15 steps: scale 0.2, zero point round(0.6 / 0.2) = 3
    x = t([-0.6, 0.13, 1.0, 2.4])
    expected = t([-0.6, 0.2, 1.0, 2.4])  # integers 0, 4, 8, 15
    torch.testing.assert_close(fake_quantize(x, 4, per_channel=False, symmetric=False), expected)


def test_affine_range_includes_zero():
    # all positive: the range is widened to [0, 3], scale 1 (2 bits), so 0.4 -> 0
    x = t([0.4, 1.2, 3.0])
    torch.testing.assert_close(fake_quantize(x, 2, False, False), t([0.0, 1.0, 3.0]))
    # all negative: widened to [-3, 0], zero point 3
    torch.testing.assert_close(fake_quantize(-x, 2, False, False), t([0.0, -1.0, -3.0]))


def test_affine_per_channel_2bit_by_hand():
    w = t([[-1.0, 0.0, 2.0], [-0.2, 0.15, 0.4]])
    # ch0: scale 1, zero point 1; ch1: scale 0.6/3 = 0.2, zero point 1, 0.15/0.2 = .75 -> 1
    expected = t([[-1.0, 0.0, 2.0], [-0.2, 0.2, 0.4]])
    torch.testing.assert_close(fake_quantize(w, 2, True, False), expected)
    # the same along axis 1 of the transposed tensor
    torch.testing.assert_close(fake_quantize(w.T, 2, True, False, axis=1), expected.T)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("per_channel", [True, False])
def test_all_zero_tensor_stays_zero_and_finite(symmetric, per_channel):
    x = torch.zeros(3, 4, requires_grad=True)
    y = fake_quantize(x, 4, per_channel, symmetric)
    assert torch.equal(y, torch.zeros(3, 4))
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_a_zero_channel_next_to_a_nonzero_one():
    w = t([[0.0, 0.0], [0.9, -1.2]])
    y = fake_quantize(w, 2, per_channel=True, symmetric=True)
    assert torch.equal(y[0], torch.zeros(2))
    torch.testing.assert_close(y[1], t([1.2, -1.2]))  # scale 1.2; 0.9 / 1.2 = .75 -> 1


@pytest.mark.parametrize("per_channel", [True, False])
def test_32_bits_is_identity(per_channel):
    x = torch.randn(4, 3)
    assert fake_quantize(x, 32, per_channel, True) is x


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize(("per_channel", "axis"), [(False, 0), (True, 0), (True, 1)])
def test_matches_numpy_reference(bits, symmetric, per_channel, axis):
    x = torch.randn(5, 4, 3, 3, generator=torch.Generator().manual_seed(bits))
    y = fake_quantize(x, bits, per_channel, symmetric, axis=axis)
    expected = reference_fake_quant(x.numpy(), bits, per_channel, symmetric, axis)
    np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=1e-5)
    # at most 2^b levels per channel (2^b - 1 for the narrow symmetric range)
    levels = 2**bits - 1 if symmetric else 2**bits
    channels = y.movedim(axis, 0).reshape(y.shape[axis], -1) if per_channel else y.reshape(1, -1)
    assert max(len(c.unique()) for c in channels) <= levels


# ------------------------------------------------------------------ the straight-through gradient


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("per_channel", [True, False])
def test_ste_gradient_is_one_inside_the_range(symmetric, per_channel):
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
    upstream = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    fake_quantize(x, 3, per_channel, symmetric).backward(upstream)
    torch.testing.assert_close(x.grad, upstream)


def test_frozen_activation_range_clips_with_zero_gradient():
    quantizer = ActivationFakeQuant(8, symmetric=True)
    quantizer(torch.linspace(-1.0, 1.0, 11))  # training: the range becomes [-1, 1]
    quantizer.eval()
    x = t([-2.0, 0.3, 3.0]).requires_grad_()
    y = quantizer(x)
    y.sum().backward()
    torch.testing.assert_close(y, t([-1.0, 38 / 127, 1.0]))
    torch.testing.assert_close(x.grad, t([0.0, 1.0, 0.0]))


# ------------------------------------------------------------------ the activation observer


def test_ema_observer_initialises_then_averages_then_freezes():
    quantizer = ActivationFakeQuant(8, symmetric=False)
    quantizer(t([-1.0, 0.5, 2.0]))
    assert (quantizer.running_min.item(), quantizer.running_max.item()) == (-1.0, 2.0)
    quantizer(t([-3.0, 4.0]))
    # EMA with momentum 0.1: old + 0.1 * (new - old)
    assert quantizer.running_min.item() == pytest.approx(-1.0 + 0.1 * (-3.0 + 1.0))
    assert quantizer.running_max.item() == pytest.approx(2.0 + 0.1 * (4.0 - 2.0))
    quantizer.eval()
    y = quantizer(t([-10.0, 10.0]))
    assert quantizer.running_min.item() == pytest.approx(-1.2)  # frozen
    assert quantizer.running_max.item() == pytest.approx(2.2)
    # clipped to the frozen range: scale 3.4 / 255, zero point 90 -> ends at -1.2 and 2.2
    torch.testing.assert_close(y, t([-1.2, 2.2]))


def test_uncalibrated_observer_in_eval_uses_the_batch_range_without_recording_it():
    quantizer = ActivationFakeQuant(4, symmetric=True).eval()
    x = t([-0.7, 0.2, 0.7])
    torch.testing.assert_close(quantizer(x), fake_quantize(x, 4, False, True))
    assert not bool(quantizer.initialized)


# ------------------------------------------------------------------------------ the policy


def test_bits_for_exact_then_prefixes_then_star():
    policy = QuantPolicy(
        weight_bits={"stage1.cell2.edge3": 2, "stage1.cell2": 3, "stage1": 4, "*": 8}
    )
    assert policy.bits_for("stage1.cell2.edge3") == 2
    assert policy.bits_for("stage1.cell2.edge4") == 3
    assert policy.bits_for("stage1.cell9.edge0") == 4
    assert policy.bits_for("stage10") == 8  # a prefix matches whole dotted parts only
    assert policy.bits_for("head") == 8
    assert QuantPolicy(weight_bits={"head": 4}).bits_for("stem") == 32


def test_is_float():
    assert QuantPolicy().is_float
    assert QuantPolicy(weight_bits={"*": 32, "stem": 32}).is_float
    assert not QuantPolicy(weight_bits={"*": 32, "stem": 8}).is_float
    assert not QuantPolicy(activation_bits=8).is_float


def test_invalid_bits_name_the_field_and_the_allowed_values():
    with pytest.raises(ValidationError, match=r"weight_bits(.|\n)*2, 3, 4, 6, 8, 32"):
        QuantPolicy(weight_bits={"*": 5})
    with pytest.raises(ValidationError, match=r"activation_bits(.|\n)*4, 8, 32"):
        QuantPolicy(activation_bits=2)
    with pytest.raises(ValidationError, match="granularity"):
        QuantPolicy(granularity="per_group")


def test_policy_is_frozen():
    policy = QuantPolicy()
    with pytest.raises(ValidationError):
        policy.activation_bits = 8


# ---------------------------------------------------------------------- applying a policy


def small_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 4, 3, padding=1),
            bn=nn.BatchNorm2d(4),
            act=nn.ReLU(),
            flat=nn.Flatten(),
            fc=nn.Linear(4 * 4 * 4, 5),
        )
    )
    model.conv.winnow_slot = "stage1.cell2.edge3"
    model.fc.winnow_slot = "head"
    return model


def batch(seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(seed))


def test_slot_prefix_and_star_choose_each_layers_bits():
    model = apply_quantization(
        small_model(), QuantPolicy(weight_bits={"stage1": 3, "*": 4}, activation_bits=8)
    )
    assert layer_bits(model.conv) == (3, 8)
    assert layer_bits(model.fc) == (4, 8)
    assert layer_bits(nn.Linear(2, 2)) == (32, 32)


def test_a_layer_without_a_slot_uses_its_qualified_name():
    model = small_model()
    del model.fc.winnow_slot
    apply_quantization(model, QuantPolicy(weight_bits={"fc": 2}))
    assert layer_bits(model.fc) == (2, 32)
    assert layer_bits(model.conv) == (32, 32)


@pytest.mark.parametrize("symmetric", [True, False])
def test_quantized_weight_has_at_most_2_to_the_b_values_per_channel(symmetric):
    model = apply_quantization(
        small_model(), QuantPolicy(weight_bits={"*": 3}, symmetric=symmetric)
    )
    for layer in (model.conv, model.fc):
        original = layer.parametrizations.weight.original
        expected = reference_fake_quant(original.detach().numpy(), 3, True, symmetric)
        np.testing.assert_allclose(layer.weight.detach().numpy(), expected, atol=1e-6)
        assert max(len(row.unique()) for row in layer.weight.flatten(1)) <= 2**3


def test_per_tensor_granularity_shares_one_scale():
    model = apply_quantization(
        small_model(), QuantPolicy(weight_bits={"*": 2}, granularity="per_tensor")
    )
    # 2-bit symmetric per tensor: the whole weight is in {-m, 0, m}
    assert len(model.conv.weight.unique()) <= 3


def test_float_layers_are_left_untouched():
    model = apply_quantization(small_model(), QuantPolicy(weight_bits={"head": 8}))
    assert type(model.conv) is nn.Conv2d
    assert not hasattr(model.conv, "input_quantizer")
    assert not model.conv._forward_pre_hooks
    assert parametrize.is_parametrized(model.fc, "weight")


def test_an_all_float_policy_changes_nothing():
    model, reference = small_model(), small_model()
    apply_quantization(model, QuantPolicy(weight_bits={"*": 32, "stem": 32}))
    assert [type(m) for m in model.modules()] == [type(m) for m in reference.modules()]
    assert model.state_dict().keys() == reference.state_dict().keys()
    torch.testing.assert_close(model(batch()), reference(batch()))


def test_activation_only_quantization_quantizes_layer_inputs():
    model = apply_quantization(small_model(), QuantPolicy(activation_bits=4))
    assert layer_bits(model.conv) == (32, 4)
    seen = {}
    model.fc.register_forward_hook(lambda m, inputs, out: seen.update(x=inputs[0]))
    model(batch())
    # the hook sees the input after the pre-hook quantized it: at most 2^4 - 1 levels
    assert 1 < len(seen["x"].unique()) <= 15


class Double(nn.Module):
    """A stand-in for weight standardization: a parametrization registered before quantization."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


def test_quantization_composes_after_an_existing_parametrization():
    model = small_model()
    parametrize.register_parametrization(model.conv, "weight", Double())
    params_before = sum(p.numel() for p in model.parameters())
    apply_quantization(model, QuantPolicy(weight_bits={"*": 4}))
    chain = list(model.conv.parametrizations.weight)
    assert isinstance(chain[0], Double) and isinstance(chain[1], WeightFakeQuant)
    doubled = 2 * model.conv.parametrizations.weight.original.detach().numpy()
    expected = reference_fake_quant(doubled, 4, True, True)
    np.testing.assert_allclose(model.conv.weight.detach().numpy(), expected, atol=1e-6)
    assert sum(p.numel() for p in model.parameters()) == params_before


def test_a_training_step_reaches_the_original_weights():
    model = apply_quantization(
        small_model(), QuantPolicy(weight_bits={"*": 4}, activation_bits=8, symmetric=False)
    )
    originals = [
        model.conv.parametrizations.weight.original,
        model.fc.parametrizations.weight.original,
    ]
    before = [w.detach().clone() for w in originals]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(batch()), torch.arange(8) % 5)
    loss.backward()
    for w in originals:
        assert w.grad is not None and w.grad.abs().sum() > 0
    optimizer.step()
    assert all(not torch.equal(w, b) for w, b in zip(originals, before, strict=True))
    assert bool(model.conv.input_quantizer.initialized)


def test_eval_mode_freezes_activation_ranges():
    model = apply_quantization(small_model(), QuantPolicy(weight_bits={"*": 8}, activation_bits=8))
    model(batch(0))
    model.eval()
    frozen = [
        (q.running_min.clone(), q.running_max.clone())
        for q in (model.conv.input_quantizer, model.fc.input_quantizer)
    ]
    model(batch(1, scale=10.0))
    for q, (low, high) in zip(
        (model.conv.input_quantizer, model.fc.input_quantizer), frozen, strict=True
    ):
        assert torch.equal(q.running_min, low) and torch.equal(q.running_max, high)
    model.train()
    model(batch(1, scale=10.0))
    assert model.conv.input_quantizer.running_max > frozen[0][1]  # training moves it again


def test_applying_twice_raises():
    model = apply_quantization(small_model(), QuantPolicy(activation_bits=8))
    with pytest.raises(AlreadyQuantizedError, match="already quantized"):
        apply_quantization(model, QuantPolicy(weight_bits={"*": 4}))
