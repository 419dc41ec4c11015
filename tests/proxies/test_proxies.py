"""Zero-cost proxies: each against a value worked out in the test, the invariances they promise,
shared and separate passes agreeing, failures kept to the failing proxy, and every proxy on
every family of candidate the search space builds."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import winnow.proxies.activation as activation_module
from winnow.proxies import PROXIES, ProxyScore, proxy_names, score_model
from winnow.proxies.activation import naswot, naswot_kernel
from winnow.proxies.gradient import zico
from winnow.proxies.suite import charged_passes
from winnow.proxies.zen import pre_gap_features, zen_score
from winnow.search_space import Candidate
from winnow.search_space.archs.nb201 import NB201Network, parse_arch
from winnow.search_space.costs import count_flops, count_parameters
from winnow.search_space.norms import NORMS
from winnow.search_space.registry import UnknownNameError

ALL = [
    "synflow",
    "snip",
    "grasp",
    "fisher",
    "grad_norm",
    "jacob_cov",
    "naswot",
    "zen",
    "zico",
    "params",
    "flops",
    "lga",
    "az_expressivity",
    "az_progressivity",
    "az_trainability",
    "meco",
    "swap",
]
CELL = (
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks gain nothing from intra-op threads, and on a shared machine idle threads
    spinning for busy cores slow them down many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_batches(shape, n=2, batch=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn((batch, *shape), generator=g),
            torch.randint(0, classes, (batch,), generator=g),
        )
        for _ in range(n)
    ]


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw every parameter from N(0, 0.5), so tests see signs of both kinds."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module


def tiny_nb201(norm: str = "batchnorm", classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return NB201Network(parse_arch(CELL), classes, channels=4, cells_per_stage=1, norm=norm)


def softmax_minus_onehot(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dL/dlogits of the mean cross-entropy, written out."""
    e = torch.exp(logits - logits.max(1, keepdim=True).values)
    return (e / e.sum(1, keepdim=True) - F.one_hot(y, logits.shape[1])) / len(y)


# --- the registry ------------------------------------------------------------------------------


def test_every_proxy_is_registered_by_name():
    assert proxy_names() == ALL
    assert all(PROXIES.get(n).reference for n in ALL)
    with pytest.raises(UnknownNameError, match="allowed: synflow"):
        score_model(nn.Linear(2, 2), make_batches((2,)), ["synflow", "magic"])


# --- each proxy against a value worked out here ------------------------------------------------


def test_synflow_of_one_linear_layer_is_the_sum_of_absolute_weights():
    # R = sum_i (sum_j |W_ij| + |b_i|): dR/dW_ij = 1, so the score is sum |W|.
    model = seeded(nn.Linear(5, 3))
    score = score_model(model, make_batches((5,)), ["synflow"])["synflow"].value
    assert score == pytest.approx(model.weight.double().abs().sum().item(), rel=1e-12)


def test_synflow_of_two_layers_has_its_closed_form():
    model = seeded(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)), seed=1)
    w1, b1, w2 = (model[0].weight.abs(), model[0].bias.abs(), model[2].weight.abs())
    # With |weights| and a ones input every unit is positive, so ReLU passes everything:
    # R = sum_i sum_j |W2_ij| h_j with h_j = sum_k |W1_jk| + |b1_j|.
    h = w1.sum(1) + b1
    expected = (w1 * w2.sum(0)[:, None]).sum() + (w2 * h[None, :]).sum()
    score = score_model(model, make_batches((4,)), ["synflow"])["synflow"].value
    assert score == pytest.approx(expected.item(), rel=1e-6)


def test_synflow_ignores_the_data_and_leaves_the_signs_alone():
    model = tiny_nb201()
    before = copy.deepcopy(model.state_dict())
    a = score_model(model, make_batches((3, 8, 8), seed=1), ["synflow"])["synflow"].value
    b = score_model(model, make_batches((3, 8, 8), seed=2), ["synflow"])["synflow"].value
    assert a == b and a > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_synflow_ignores_running_statistics():
    model, batches = tiny_nb201(), make_batches((3, 8, 8))
    fresh = score_model(model, batches, ["synflow"])["synflow"].value
    model(batches[0][0] * 5 + 3)  # a training-mode forward moves BatchNorm's running statistics
    used = score_model(model, batches, ["synflow"])["synflow"].value
    assert used == pytest.approx(fresh, rel=1e-12)


def test_snip_and_grad_norm_of_one_linear_layer():
    model = seeded(nn.Linear(5, 4))
    batches = make_batches((5,), classes=4)
    x, y = batches[0]
    grad = softmax_minus_onehot(x @ model.weight.T + model.bias, y).T @ x  # dL/dW
    scores = score_model(model, batches, ["snip", "grad_norm"])
    assert scores["snip"].value == pytest.approx((model.weight * grad).abs().sum().item(), rel=1e-5)
    assert scores["grad_norm"].value == pytest.approx(grad.norm().item(), rel=1e-5)


def test_grasp_is_minus_theta_times_hessian_gradient():
    model = seeded(nn.Linear(3, 4))
    batches = make_batches((3,), classes=4)
    x, y = batches[0]
    w0, b = model.weight.detach().double(), model.bias.detach().double()

    def loss(flat_w):
        return F.cross_entropy(x.double() @ flat_w.view(4, 3).T + b, y)

    flat = w0.flatten()
    hessian = torch.autograd.functional.hessian(loss, flat)
    grad = torch.autograd.functional.jacobian(loss, flat)
    expected = -(flat * (hessian @ grad)).sum().item()
    score = score_model(model, batches, ["grasp"])["grasp"].value
    assert score == pytest.approx(expected, rel=1e-4)


def test_fisher_of_one_linear_layer():
    model = seeded(nn.Linear(5, 4))
    batches = make_batches((5,), classes=4)
    x, y = batches[0]
    z = x @ model.weight.T + model.bias
    per_channel = 0.5 * (z * softmax_minus_onehot(z, y)).pow(2).mean(0)
    # foresight gives each channel's value to its 5 weights, then sums everything
    expected = per_channel.sum().item() * 5
    assert score_model(model, batches, ["fisher"])["fisher"].value == pytest.approx(
        expected, rel=1e-5
    )


def test_fisher_of_a_conv_sums_over_space_and_weighs_by_fan_in():
    model = seeded(
        nn.Sequential(nn.Conv2d(2, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))
    )
    batches = make_batches((2, 5, 5), classes=4)
    x, y = batches[0]
    conv_out = F.conv2d(x, model[0].weight, model[0].bias)
    logits = conv_out.mean((2, 3)) @ model[3].weight.T + model[3].bias
    g_conv, g_logits = torch.autograd.grad(F.cross_entropy(logits, y), [conv_out, logits])
    fisher_conv = 0.5 * (conv_out * g_conv).sum((2, 3)).pow(2).mean(0)
    fisher_linear = 0.5 * (logits * g_logits).pow(2).mean(0)
    expected = fisher_conv.sum() * (2 * 3 * 3) + fisher_linear.sum() * 3
    score = score_model(model, batches, ["fisher"])["fisher"].value
    assert score == pytest.approx(expected.item(), rel=1e-5)


def test_fisher_of_a_linear_on_sequences_reads_its_channels_last():
    model = seeded(nn.Sequential(nn.Linear(4, 3), nn.Flatten(), nn.Linear(6, 2)))
    batches = make_batches((2, 4), classes=2)  # (N, T=2, 4): the first layer's channels are last
    x, y = batches[0]
    hidden = x @ model[0].weight.T + model[0].bias
    logits = hidden.flatten(1) @ model[2].weight.T + model[2].bias
    g_hidden, g_logits = torch.autograd.grad(F.cross_entropy(logits, y), [hidden, logits])
    fisher_first = 0.5 * (hidden * g_hidden).sum(1).pow(2).mean(0)  # sum over T, per channel
    fisher_head = 0.5 * (logits * g_logits).pow(2).mean(0)
    expected = fisher_first.sum() * 4 + fisher_head.sum() * 6
    score = score_model(model, batches, ["fisher"])["fisher"].value
    assert score == pytest.approx(expected.item(), rel=1e-5)


def test_jacob_cov_of_a_relu_net_from_its_known_jacobian():
    model = seeded(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)))
    batches = make_batches((6,), batch=5)
    x = batches[0][0].double()
    w1, b1, w2 = (t.detach().double() for t in (model[0].weight, model[0].bias, model[2].weight))
    # d(sum of outputs)/dx_n = W1^T (1[h_n > 0] * W2^T 1)
    on = (x @ w1.T + b1 > 0).double()
    jacobian = (on * w2.sum(0)) @ w1
    centred = jacobian - jacobian.mean(1, keepdim=True)
    unit = centred / centred.norm(dim=1, keepdim=True)
    shifted = unit @ unit.T + 1e-5 * torch.eye(5, dtype=torch.float64)
    # -sum(log(v + k) + 1/(v + k)) = -(log det(C + kI) + trace((C + kI)^-1)), no eigenvalues
    expected = -(torch.logdet(shifted) + torch.linalg.inv(shifted).trace()).item()
    score = score_model(model, batches, ["jacob_cov"])["jacob_cov"].value
    assert score == pytest.approx(expected, rel=1e-4)


def test_naswot_kernel_counts_agreeing_units():
    codes = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    expected = torch.tensor([[3, 1, 2], [1, 3, 0], [2, 0, 3]], dtype=torch.float64)
    assert torch.equal(naswot_kernel(codes), expected)
    # det = 3 * 9 - 1 * 3 + 2 * (0 - 6) = 12
    assert naswot(expected) == pytest.approx(math.log(12))


@pytest.mark.parametrize("act", [nn.ReLU, nn.GELU, nn.SiLU])
def test_naswot_of_a_model_uses_the_sign_of_every_activation_input(act):
    model = seeded(nn.Sequential(nn.Linear(8, 32), act(), nn.Linear(32, 3)))
    batches = make_batches((8,), batch=6)
    pre = batches[0][0] @ model[0].weight.T + model[0].bias
    codes = (pre > 0).numpy()
    kernel = np.array([[np.sum(a == b) for b in codes] for a in codes], dtype=float)
    expected = np.linalg.slogdet(kernel)[1]
    assert score_model(model, batches, ["naswot"])["naswot"].value == pytest.approx(expected)


def test_zico_of_hand_made_gradients():
    # layer a: std over batches [1, 0, 0.5], mean |g| [2, 2, 0.5] -> 2/1 + 0.5/0.5 = 3 -> log 3
    # layer b: std [1, 0] -> 1/1 = 1 -> log 1 = 0; layer c: std 0 everywhere -> left out
    batch1 = [torch.tensor([1.0, 2.0, 0.0]), torch.tensor([-1.0, 1.0]), torch.tensor([4.0])]
    batch2 = [torch.tensor([3.0, 2.0, 1.0]), torch.tensor([1.0, 1.0]), torch.tensor([4.0])]
    assert zico([batch1, batch2]) == pytest.approx(math.log(3))
    with pytest.raises(ValueError, match="two batches"):
        zico([batch1])


def test_zico_of_a_linear_model_uses_each_batch_gradient():
    model = seeded(nn.Linear(5, 3))
    batches = make_batches((5,))
    g = torch.stack(
        [
            (softmax_minus_onehot(x @ model.weight.T + model.bias, y).T @ x).flatten()
            for x, y in batches
        ]
    ).double()
    std = g.std(0, correction=0)
    expected = math.log((g.abs().mean(0)[std > 0] / std[std > 0]).sum().item())
    assert score_model(model, batches, ["zico"])["zico"].value == pytest.approx(expected, rel=1e-4)


def test_zen_score_formula():
    f = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    mixed = torch.tensor([[1.5, 1.0], [0.0, 2.0]])  # L1 distances 1.5 and 2 -> mean 1.75
    running_vars = [torch.tensor([4.0, 12.0]), torch.tensor([1.0])]  # log sqrt 8, log 1
    assert zen_score(f, mixed, running_vars) == pytest.approx(math.log(1.75) + 0.5 * math.log(8))


def test_zen_of_a_conv_bn_net_as_the_reference_code_computes_it():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    batches = make_batches((3, 6, 6))
    # The reference's order of draws: conv weight, linear weight, then x and the noise.
    g = torch.Generator().manual_seed(7)
    w = torch.randn(4, 3, 3, 3, generator=g)
    torch.randn(2, 4, generator=g)
    x = torch.randn(8, 3, 6, 6, generator=g)
    x2 = x + 0.01 * torch.randn(8, 3, 6, 6, generator=g)

    def features(inp):
        out = F.conv2d(inp, w, padding=1)
        mean, var = (
            out.mean((0, 2, 3), keepdim=True),
            out.var((0, 2, 3), keepdim=True, correction=0),
        )
        return torch.relu((out - mean) / torch.sqrt(var + 1e-5)), out.var((0, 2, 3))

    f1, v1 = features(x)
    f2, v2 = features(x2)
    running_var = 0.9 * (0.9 * 1.0 + 0.1 * v1) + 0.1 * v2  # momentum 0.1, unbiased variances
    expected = math.log((f1 - f2).abs().sum((1, 2, 3)).mean().item()) + 0.5 * math.log(
        running_var.mean().item()
    )
    score = score_model(model, batches, ["zen"], seed=7)["zen"].value
    assert score == pytest.approx(expected, rel=1e-4)


def test_zen_reads_the_map_before_global_pooling_or_the_classifier_input():
    model = tiny_nb201()
    seen = {}
    model.lastact.register_forward_hook(lambda m, i, o: seen.update(lastact=o))
    x = make_batches((3, 8, 8))[0][0]
    assert torch.equal(pre_gap_features(model, x), seen["lastact"])
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 2))
    mlp[3].register_forward_pre_hook(lambda m, i: seen.update(head=i[0]))
    assert torch.equal(pre_gap_features(mlp, x[:, :, :2, :2]), seen["head"])


def test_zen_does_not_depend_on_the_weights_or_the_data_only_on_the_seed():
    first, second = tiny_nb201(), seeded(tiny_nb201(), seed=3)
    a = score_model(first, make_batches((3, 8, 8), seed=1), ["zen"], seed=5)["zen"].value
    b = score_model(second, make_batches((3, 8, 8), seed=2), ["zen"], seed=5)["zen"].value
    c = score_model(first, make_batches((3, 8, 8), seed=1), ["zen"], seed=6)["zen"].value
    assert a == pytest.approx(b, rel=1e-6) and a != c


def test_params_and_flops_are_the_cost_measures():
    model = tiny_nb201()
    scores = score_model(model, make_batches((3, 8, 8)), ["params", "flops"])
    assert scores["params"].value == count_parameters(model)
    assert scores["flops"].value == count_flops(model, (3, 8, 8))


# --- invariances and the two modes -------------------------------------------------------------


def values(scores: dict[str, ProxyScore]) -> dict[str, float | None]:
    return {name: s.value for name, s in scores.items()}


def assert_same_values(a: dict[str, ProxyScore], b: dict[str, ProxyScore]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].value is not None, (name, a[name].error)
        assert a[name].value == pytest.approx(b[name].value, rel=1e-4, abs=1e-6), name


@pytest.mark.parametrize("quantized", [False, True])
def test_shared_and_separate_passes_give_the_same_scores(quantized):
    model = tiny_nb201()
    if quantized:
        model = Candidate(
            architecture={"family": "nb201", "cell": CELL, "channels": 4, "cells_per_stage": 1},
            quantization={"weight_bits": {"*": 4}, "activation_bits": 8},
        ).build_model(3, (3, 8, 8))
    batches = make_batches((3, 8, 8))
    shared = score_model(model, batches, share=True)
    separate = score_model(model, batches, share=False)
    assert_same_values(shared, separate)
    assert all(s.seconds > 0 and s.error is None for s in shared.values())


def test_a_quantized_models_zico_is_the_same_alone_and_beside_lga():
    # Batches larger than LGA's 16 images and of different value ranges: a training forward of
    # its own (the NTK's) moves the activation quantizers' ranges, which batch 1 must not see.
    model = Candidate(
        architecture={"family": "nb201", "cell": CELL, "channels": 4, "cells_per_stage": 1},
        quantization={"weight_bits": {"*": 4}, "activation_bits": 8},
    ).build_model(3, (3, 8, 8))
    (x0, y0), (x1, y1) = make_batches((3, 8, 8), batch=40)
    batches = [(x0 * 5.0, y0), (x1 * 0.2, y1)]
    alone = score_model(model, batches, ["zico"])["zico"].value
    shared = score_model(model, batches, ["zico", "lga"])
    separate = score_model(model, batches, ["zico", "lga"], share=False)
    assert alone is not None
    assert shared["zico"].value == pytest.approx(alone, rel=1e-6)
    assert_same_values(shared, separate)


def test_lga_pays_for_batch_0s_forward_only_when_no_reader_of_it_is_scored():
    """LGA's NTK forwards images of its own after that forward; it needs the copy the forward
    left, not the forward's graph."""
    entries = [PROXIES.get(n) for n in ("lga", "zico", "az_expressivity")]
    charged = charged_passes(entries)
    assert charged["lga"] == {"ntk"}
    assert charged["zico"] == {"forward", "loss_grads", "second_batch"}
    assert charged["az_expressivity"] == {"aznas"}
    assert charged_passes(entries[::2])["lga"] == {"ntk", "forward"}


def test_scores_are_deterministic_for_a_seed_and_keep_the_order_asked():
    model, batches = tiny_nb201(), make_batches((3, 8, 8))
    asked = ["zico", "synflow", "zen", "naswot"]
    first = score_model(model, batches, asked, seed=3)
    assert list(first) == asked
    assert values(first) == values(score_model(model, batches, asked, seed=3))


@pytest.mark.parametrize("norm", ["batchnorm", "none"])
def test_the_callers_model_is_left_unchanged(norm):
    # "none" has a data-initialised scale and quantization has observers: buffers a training
    # forward would set. Proxies work on copies, so nothing of the caller's changes.
    model = Candidate(
        architecture={"family": "nb201", "cell": CELL, "channels": 4, "cells_per_stage": 1},
        normalization=norm,
        quantization={"weight_bits": {"*": 4}, "activation_bits": 8},
    ).build_model(3, (3, 8, 8))
    model.eval()
    before = copy.deepcopy(model.state_dict())
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    score_model(model, make_batches((3, 8, 8)))
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training and not any(m.training for m in model.modules())
    assert hooks == [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    assert all(p.grad is None for p in model.parameters())


# --- failures ----------------------------------------------------------------------------------


def test_one_failing_proxy_is_recorded_and_the_others_return(monkeypatch):
    def broken(kernel):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(activation_module, "naswot", broken)
    for share in (True, False):
        scores = score_model(tiny_nb201(), make_batches((3, 8, 8)), share=share)
        assert scores["naswot"].value is None
        assert scores["naswot"].error == "RuntimeError: kernel exploded"
        assert all(s.value is not None for n, s in scores.items() if n != "naswot")


def test_a_failing_shared_pass_fails_only_the_proxies_that_read_it():
    # Labels beyond the model's classes: the cross-entropy fails, the forward does not.
    batches = [(x, y + 10) for x, y in make_batches((3, 8, 8))]
    scores = score_model(tiny_nb201(), batches)
    readers_of_the_loss = {"snip", "grasp", "fisher", "grad_norm", "zico"}
    for name, score in scores.items():
        if name in readers_of_the_loss:
            assert score.value is None and "shared loss_grads pass failed" in score.error, name
        else:
            assert score.value is not None, (name, score.error)


def test_zico_without_a_second_batch_fails_alone():
    scores = score_model(tiny_nb201(), make_batches((3, 8, 8), n=1))
    assert scores["zico"].value is None and "second batch" in scores["zico"].error
    assert all(s.value is not None for n, s in scores.items() if n != "zico")


def test_a_non_finite_score_is_no_value():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    with torch.no_grad():
        model[0].weight.fill_(-1.0)
        model[0].bias.fill_(-100.0)  # every unit is off for every sample: K = 3 * ones, det 0
    score = score_model(model, make_batches((4,)), ["naswot"])["naswot"]
    assert score.value is None and "non-finite" in score.error


# --- every family, norm and quantization -------------------------------------------------------

TINY_ARCHS = {
    "nb201": {"family": "nb201", "cell": CELL, "channels": 4, "cells_per_stage": 1},
    "macro": {
        "family": "macro",
        "depths": [1, 2],
        "kernel_sizes": [3, 5],
        "expand_ratios": [3, 4],
        "width_mult": 1.0,
        "resolution": None,
        "activation": "silu",
        "base_channels": [8, 16],
        "strides": [1, 2],
        "stem_channels": 8,
        "head_channels": 16,
    },
    "mlp": {"family": "mlp", "depth": 2, "width": 16, "activation": "gelu", "dropout": 0.1},
}
QUANTIZED = {"weight_bits": {"*": 4}, "activation_bits": 8, "granularity": "per_tensor"}


@pytest.mark.parametrize("quantization", [{}, QUANTIZED], ids=["float", "quantized"])
@pytest.mark.parametrize("family", list(TINY_ARCHS))
def test_every_proxy_scores_every_family(family, quantization):
    candidate = Candidate(architecture=TINY_ARCHS[family], quantization=quantization)
    model = candidate.build_model(num_classes=3, input_shape=(3, 8, 8))
    scores = score_model(model, make_batches((3, 8, 8)))
    flat = ["meco"] if family == "mlp" else []  # an MLP's outputs are vectors (meco's test)
    assert [n for n, s in scores.items() if s.value is None] == flat, scores


# Proxies that read the architecture, not only its size: two candidates of a family differ.
SHAPE_BLIND = {"params", "flops"}
OTHER_ARCHS = {
    "nb201": {**TINY_ARCHS["nb201"], "cell": CELL.replace("nor_conv_1x1~0", "nor_conv_3x3~0")},
    "macro": {**TINY_ARCHS["macro"], "depths": [2, 1], "kernel_sizes": [5, 3]},
    "mlp": {**TINY_ARCHS["mlp"], "width": 24, "depth": 3},
}


@pytest.mark.parametrize("family", list(TINY_ARCHS))
def test_every_proxy_tells_two_candidates_of_a_family_apart(family):
    batches = make_batches((3, 8, 8), batch=20)
    scores = [
        score_model(Candidate(architecture=a).build_model(3, (3, 8, 8)), batches)
        for a in (TINY_ARCHS[family], OTHER_ARCHS[family])
    ]
    # A proxy that fails on the family (meco on an MLP) is test_every_proxy_scores_every_family's.
    ties = [
        n for n, s in scores[0].items() if s.value is not None and s.value == scores[1][n].value
    ]
    assert [n for n in ties if n not in SHAPE_BLIND] == [], ties


@pytest.mark.parametrize("norm", NORMS.names())
def test_every_proxy_scores_every_norm(norm):
    model = Candidate(architecture=TINY_ARCHS["nb201"], normalization=norm).build_model(
        3, (3, 8, 8)
    )
    scores = score_model(model, make_batches((3, 8, 8)))
    assert [n for n, s in scores.items() if s.value is None] == [], scores


def test_real_images_on_a_tiny_nb201(shared_data):
    from winnow.search_space.datasets import load_dataset

    data = load_dataset(f"npz:{shared_data / 'cifar10_subset.npz'}")
    stream = data.batches("train", 16, generator=torch.Generator().manual_seed(0))
    batches = [next(stream), next(stream)]
    model = tiny_nb201(classes=10)
    assert_same_values(score_model(model, batches), score_model(model, batches, share=False))
