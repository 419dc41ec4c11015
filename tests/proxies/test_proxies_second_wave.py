"""The second wave of proxies (issue 22): LGA, AZ-NAS's expressivity, progressivity and
trainability, MeCo and SWAP, each formula against values worked out here, and a small check on
real NAS-Bench-201 cells that each ranks them with the sign its paper reports."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from winnow.proxies import score_model
from winnow.proxies.aznas import (
    az_scores,
    feature_entropy,
    progressivity,
    stage_modules,
    trainability_term,
)
from winnow.proxies.meco import meco_term
from winnow.proxies.ntk import empirical_ntk, label_kernel, lga
from winnow.proxies.passes import PassPlan
from winnow.proxies.swap import size_regularised, swap_score
from winnow.search_space.archs.nb201 import NB201Network, parse_arch

CELL = (
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
)
pytestmark = pytest.mark.usefixtures("one_thread")

NEW = ["lga", "az_expressivity", "az_progressivity", "az_trainability", "meco", "swap"]


def tiny_nb201(seed: int = 0, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return NB201Network(parse_arch(CELL), classes, channels=4, cells_per_stage=1)


def batches(shape=(3, 8, 8), n=2, batch=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn((batch, *shape), generator=g),
            torch.randint(0, classes, (batch,), generator=g),
        )
        for _ in range(n)
    ]


# --- LGA ---------------------------------------------------------------------------------------


def test_lga_is_one_for_the_label_kernel_and_minus_one_for_its_negative():
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    y = label_kernel(labels)
    assert lga(y, labels) == pytest.approx(1.0)
    assert lga(-y, labels) == pytest.approx(-1.0)


def test_lga_ignores_the_scale_and_shift_of_the_ntk():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 4, generator=g)
    theta = a @ a.T
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    assert lga(3.0 * theta + 5.0, labels) == pytest.approx(lga(theta, labels))
    assert not math.isclose(lga(theta, labels), lga(theta, labels.roll(1)))


def test_lga_of_one_class_is_undefined():
    assert math.isnan(lga(torch.eye(3), torch.tensor([1, 1, 1])))


def test_empirical_ntk_of_a_linear_model_is_outputs_times_the_input_gram():
    # f(x) = W x with K outputs: d(sum_k f_k(x_i))/dW = 1 x_i^T, so Theta = K * X X^T.
    layer = nn.Linear(5, 3, bias=False)
    x = torch.randn(4, 5)
    theta = empirical_ntk(layer(x), [layer.weight])
    torch.testing.assert_close(theta, 3 * x.double() @ x.double().T, rtol=1e-5, atol=1e-6)


def test_lgas_ntk_takes_every_weight_norm_scales_included_as_te_nas():
    """TE-NAS's get_ntk_n keeps every parameter named 'weight': BatchNorm's scale too."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)
    )
    nn.init.normal_(model[1].weight)  # scales of 1 would still count; these are not special
    data = batches(batch=20)
    x, y = data[0]
    net = copy.deepcopy(model).train()
    weights = [p for name, p in net.named_parameters() if name.endswith("weight")]
    assert len(weights) == 3
    expected = lga(empirical_ntk(net(x[:16]), weights), y[:16])
    assert score_model(model, data, ["lga"])["lga"].value == pytest.approx(expected, rel=1e-6)


def test_empirical_ntk_keeps_float32_rows_and_a_float64_gram():
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(300, 2, bias=False)
    x = torch.randn(6, 300, generator=g) * 1e3
    theta = empirical_ntk(layer(x), [layer.weight], chunk=7)  # columns in uneven chunks
    assert theta.dtype == torch.float64
    torch.testing.assert_close(theta, 2 * x.double() @ x.double().T, rtol=1e-6, atol=1e-3)


def test_an_ntk_too_large_for_memory_fails_with_its_size():
    layer = nn.Linear(10, 10, bias=False)
    with pytest.raises(MemoryError, match="lga"):
        empirical_ntk(layer(torch.randn(4, 10)), [layer.weight], max_bytes=4 * 100 * 4 - 1)


# --- AZ-NAS ------------------------------------------------------------------------------------


def test_expressivity_of_isotropic_and_of_rank_one_features():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(4000, 4, 1, 1, generator=g)
    assert feature_entropy(white) == pytest.approx(math.log(4), abs=0.01)
    one = torch.randn(4000, 1, 1, 1, generator=g).expand(4000, 4, 1, 1)
    assert feature_entropy(one) == pytest.approx(0.0, abs=1e-6)


def test_progressivity_is_the_smallest_step():
    assert progressivity([1.0, 3.0, 3.5, 6.0]) == pytest.approx(0.5)
    assert progressivity([2.0, 1.0, 4.0]) == pytest.approx(-1.0)


def test_trainability_term_is_zero_for_a_norm_preserving_map_and_negative_otherwise():
    g_out = torch.randint(0, 2, (2, 1, 3, 3)).float() * 2 - 1
    assert trainability_term(-g_out, g_out) == pytest.approx(0.0, abs=1e-5)  # |s| = 1
    assert trainability_term(-3 * g_out, g_out) == pytest.approx(2 - 3 - 1 / 3, abs=1e-5)
    assert trainability_term(g_out.clone(), g_out) == -math.inf  # an identity cell
    # After a stride the input gradient is pixel-unshuffled to the output's grid.
    assert math.isfinite(trainability_term(torch.randn(2, 1, 6, 6), g_out))


def test_aznas_stages_are_the_stem_and_every_cell():
    model = tiny_nb201()
    assert stage_modules(model) == [model.stem, *model.cells]


def mlp(depth=2, width=16, activation="gelu", dropout=0.1, classes=3) -> nn.Module:
    from winnow.search_space import Candidate

    arch = {"family": "mlp", "depth": depth, "width": width, "activation": activation}
    return Candidate(architecture={**arch, "dropout": dropout}).build_model(classes, (3, 8, 8))


def test_aznas_stages_of_an_mlp_are_its_hidden_blocks():
    # Linear -> norm -> activation -> dropout: one stage per block, read after the activation.
    model = mlp(depth=3)
    assert stage_modules(model) == [model[3], model[7], model[11]]


def test_aznas_trainability_of_an_mlp_is_a_measured_gradient():
    """The stage outputs are 2-D; the gradient between them is taken before any reshape."""
    x = torch.randn(8, 3, 8, 8)
    scores = [az_scores(mlp(width=w), x, seed=0).trainability for w in (8, 32)]
    assert all(math.isfinite(s) and s > -100 for s in scores), scores
    assert scores[0] != scores[1]


def test_aznas_depends_on_the_seed_not_on_the_weights_or_the_data():
    x = torch.randn(8, 3, 8, 8)
    first = az_scores(tiny_nb201(seed=0), x, seed=0)
    assert az_scores(tiny_nb201(seed=1), torch.randn(8, 3, 8, 8), seed=0) == first
    assert az_scores(tiny_nb201(seed=0), x, seed=1) != first


def test_a_plan_of_aznas_alone_runs_no_forward():
    assert not PassPlan.of({"aznas"}).forward
    assert PassPlan.of({"aznas", "meco"}).forward


# --- MeCo --------------------------------------------------------------------------------------


def test_meco_term_reads_the_first_image_only():
    uncorrelated = torch.tensor([[1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0]])
    output = torch.stack([uncorrelated, torch.randn(2, 4)]).reshape(2, 2, 2, 2)
    assert float(meco_term(output)) == pytest.approx(1.0)  # the identity correlation
    correlated = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0]])
    assert float(meco_term(correlated[None])) == pytest.approx(0.0, abs=1e-9)
    assert meco_term(torch.randn(2, 1, 4)) is None  # one channel: no correlation matrix


def test_meco_of_a_model_sums_every_module_output():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    data = batches()
    expected = []
    hooks = [m.register_forward_hook(lambda m, i, o: expected.append(o)) for m in model.modules()]
    model.train()(data[0][0])
    for hook in hooks:
        hook.remove()
    terms = [meco_term(o) for o in expected]
    total = sum(float(t) for t in terms if t is not None)
    assert score_model(model, data, ["meco"])["meco"].value == pytest.approx(total)


def test_meco_of_a_flat_model_fails_rather_than_ties():
    """An MLP's outputs for one image are vectors (one value per channel): no correlation."""
    score = score_model(mlp(), batches(), ["meco"])["meco"]
    assert score.value is None and "two or more" in score.error


# --- SWAP --------------------------------------------------------------------------------------


def test_swap_score_counts_distinct_neuron_patterns():
    patterns = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 1]], dtype=torch.uint8)
    assert swap_score(patterns) == 3  # (1,0) twice, (0,0), (1,1)


@pytest.mark.parametrize("samples", [8, 16, 21, 70])  # bincount, unique of packed, unique
def test_swap_score_agrees_with_unique_columns(samples):
    patterns = (torch.rand(samples, 500, generator=torch.Generator().manual_seed(0)) > 0.9).to(
        torch.uint8
    )
    assert swap_score(patterns) == torch.unique(patterns.T, dim=0).shape[0]


def test_swap_score_never_holds_an_int64_copy_of_the_pattern_matrix():
    from torch.profiler import ProfilerActivity, profile

    patterns = (torch.rand(16, 200_000, generator=torch.Generator().manual_seed(0)) > 0.5).byte()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        swap_score(patterns)
    largest = max(event.cpu_memory_usage for event in prof.events())
    assert largest < patterns.numel() * 8 / 4  # a whole int64 copy is 25.6 MB; one row 1.6 MB


def test_size_regularisation_peaks_at_mu():
    assert size_regularised(100.0, 400_000, mu=400, sigma=50) == pytest.approx(100.0)
    assert size_regularised(100.0, 410_000, mu=400, sigma=50) == pytest.approx(
        100.0 * math.exp(-2.0)
    )


def test_new_proxies_are_seeded_and_shared_equals_separate():
    model, data = tiny_nb201(), batches()
    shared = score_model(model, data, NEW)
    assert {n: s.value for n, s in score_model(model, data, NEW, share=False).items()} == {
        n: s.value for n, s in shared.items()
    }
    assert all(s.value is not None for s in shared.values()), shared


# --- real NAS-Bench-201 cells -------------------------------------------------------------------

# Five cells far apart in CIFAR-10 test accuracy (from the benchmark's table: ground truth for
# the check, never an input to a proxy).
RANKED_CELLS = [
    "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|",
    "|nor_conv_1x1~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|nor_conv_1x1~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
]


@pytest.mark.slow
def test_each_new_proxy_ranks_real_cells_with_its_papers_sign(shared_data):
    """Each paper reports a positive correlation with accuracy (higher is better)."""
    from winnow.bench.proxies import build_cell
    from winnow.proxies.batches import fixed_batches
    from winnow.proxies.nb201_truth import read_nb201_truth
    from winnow.search_space.datasets import load_dataset

    truth = {c.arch: c.test_accuracy for c in read_nb201_truth(shared_data / "nb201_cifar10.csv")}
    data = load_dataset(f"npz:{shared_data / 'cifar10_subset.npz'}")
    real = fixed_batches(data, 2, 32, 0, "cpu")
    values = {name: [] for name in NEW}
    for arch in RANKED_CELLS:
        scores = score_model(build_cell(arch, 10, 3, 0, torch.device("cpu")), real, NEW)
        for name in NEW:
            values[name].append(-np.inf if scores[name].value is None else scores[name].value)
    accuracy = [truth[a] for a in RANKED_CELLS]
    rho = {name: stats.spearmanr(v, accuracy).statistic for name, v in values.items()}
    assert all(r > 0 for r in rho.values()), rho
