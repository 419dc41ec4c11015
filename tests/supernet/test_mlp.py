"""The mlp supernet: a subnet extracted as winnow's own network (its norm and quantization
policy applied) computes exactly what the supernet computes for that architecture and policy."""

from __future__ import annotations

import random

import pytest
import torch

from winnow.search_space.params import RandomChooser
from winnow.search_space.quantization import activation_quantizer
from winnow.search_space.spec import SearchSpace
from winnow.supernet.mlp import SLICEABLE_NORMS, MLPSupernet
from winnow.supernet.quantization import recalibrate, sample_policy

SHAPE = (1, 8, 8)


def _space(norm: str) -> SearchSpace:
    return SearchSpace.model_validate(
        {
            "architecture": {
                "family": "mlp",
                "depth": [1, 2, 3],
                "width": [8, 12, 24, 32],
                "activation": ["relu", "gelu"],
                "dropout": [0.0, 0.1],
            },
            "normalization": norm,
            "quantization": {
                "weight_bits": [2, 4, 8, 32],
                "scope": "layer",
                "activation_bits": [4, 8, 32],
                "granularity": ["per_channel", "per_tensor"],
                "symmetric": [True, False],
            },
        }
    )


def _trained_a_little(space: SearchSpace, norm: str) -> MLPSupernet:
    """A supernet whose running statistics and ranges are no longer their initial values."""
    torch.manual_seed(0)
    supernet = MLPSupernet(space.architecture, norm, 10, SHAPE)
    rng = random.Random(0)
    supernet.train()
    with torch.no_grad():
        for _ in range(4):
            x = torch.randn(16, *SHAPE) * 2 + 0.5
            supernet(x, supernet.sample(rng), sample_policy(space, rng))
    return supernet.eval()


@pytest.mark.parametrize("norm", SLICEABLE_NORMS)
def test_extracted_subnets_equal_the_supernet_forward(norm):
    _check_parity(norm, 12)


@pytest.mark.slow
def test_one_hundred_random_subnets_equal_the_supernet_forward():
    _check_parity("batchnorm", 100)  # the criterion (4-13 s on the 2-core machine)


def _check_parity(norm: str, subnets: int) -> None:
    space = _space(norm)
    supernet = _trained_a_little(space, norm)
    rng = random.Random(1)
    x = torch.randn(32, *SHAPE)
    worst, quantized = 0.0, 0
    for _ in range(subnets):
        candidate = space.suggest(RandomChooser(rng))
        subnet = supernet.get_active_subnet(candidate)
        with torch.no_grad():
            expected = supernet(x, candidate.architecture, candidate.quantization)
            worst = max(worst, (subnet(x) - expected).abs().max().item())
        quantized += not candidate.quantization.is_float
    assert worst <= 1e-6
    assert quantized > subnets // 2  # the pairs exercise the policies, not only float networks


def test_a_subnet_is_winnows_network_with_the_supernets_weights_sliced_in():
    space = _space("batchnorm")
    supernet = _trained_a_little(space, "batchnorm")
    candidate = space.suggest(RandomChooser(random.Random(3)))
    candidate = candidate.model_copy(
        update={"architecture": {**candidate.architecture, "depth": 2, "width": 12}}
    )
    subnet = supernet.get_active_subnet(candidate)
    built = candidate.build_model(10, SHAPE)
    assert subnet.state_dict().keys() == built.state_dict().keys()
    first = dict(subnet.named_parameters())
    raw = next(v for k, v in first.items() if k.startswith("1.") and "weight" in k)
    torch.testing.assert_close(raw, supernet.hidden[0].weight[:12, :64], rtol=0, atol=0)
    with torch.no_grad():  # a copy: changing the subnet leaves the supernet as it was
        raw.add_(1.0)
    assert not torch.equal(raw, supernet.hidden[0].weight[:12, :64])


def test_a_candidate_of_another_norm_is_refused():
    space = _space("batchnorm")
    supernet = MLPSupernet(space.architecture, "layernorm", 10, SHAPE)
    with pytest.raises(ValueError, match="normalization is not shared"):
        supernet.get_active_subnet(space.sample(1)[0])


def test_recalibration_reestimates_ranges_and_statistics_as_cumulative_averages():
    space = _space("batchnorm")
    supernet = _trained_a_little(space, "batchnorm")
    candidate = space.suggest(RandomChooser(random.Random(5)))
    policy = candidate.quantization.model_copy(update={"activation_bits": 8})
    candidate = candidate.model_copy(update={"quantization": policy})
    subnet = supernet.get_active_subnet(candidate)
    batches = [torch.randn(16, *SHAPE) * (i + 1) for i in range(3)]
    assert recalibrate(subnet, iter(batches), num_batches=2) == 2
    first = activation_quantizer(subnet[1])  # the first hidden layer sees the inputs
    lows = torch.stack([b.min() for b in batches[:2]])
    highs = torch.stack([b.max() for b in batches[:2]])
    torch.testing.assert_close(first.running_min, lows.mean())
    torch.testing.assert_close(first.running_max, highs.mean())
    assert first.momentum == 0.1 and not subnet.training
