"""The macro supernet: subnets are slices of the largest network, and the static network
extracted for a candidate computes what the supernet computes for its architecture."""

import random

import pytest
import torch

from winnow.search_space.archs.macro import MacroSpace
from winnow.search_space.candidate import Candidate
from winnow.search_space.quantization import QuantPolicy, WeightFakeQuant
from winnow.supernet import macro
from winnow.supernet.macro import MacroSupernet

SHAPE = (3, 12, 12)
SPACE = MacroSpace(
    base_channels=[8, 16, 24],
    strides=[1, 2, 2],
    stem_channels=8,
    head_channels=32,
    resolution=[8, 12],
    activation=["relu", "silu"],
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _trained_looking(kernel_transform: bool = False) -> MacroSupernet:
    """A supernet whose weights, affine parameters and BatchNorm statistics are all
    non-trivial (statistics from training-mode passes of random subnets)."""
    torch.manual_seed(0)
    supernet = MacroSupernet(SPACE, 5, SHAPE, kernel_transform=kernel_transform)
    rng = random.Random(1)
    with torch.no_grad():
        for _ in range(6):
            supernet(torch.randn(4, *SHAPE) * 2 + 1, supernet.sample(rng))
        for parameter in supernet.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return supernet.eval()


def _max_diff(supernet: MacroSupernet, arch: dict, x: torch.Tensor) -> float:
    subnet = supernet.get_active_subnet(Candidate(architecture=arch)).eval()
    with torch.no_grad():
        return (subnet(x) - supernet(x, arch)).abs().max().item()


@pytest.mark.parametrize("kernel_transform", [False, True])
def test_extracted_subnets_compute_the_supernets_forward(kernel_transform):
    supernet = _trained_looking(kernel_transform)
    rng, x = random.Random(2), torch.randn(2, *SHAPE)
    count = 100 if not kernel_transform else 30
    archs = [supernet.largest(), supernet.smallest()]
    archs += [supernet.sample(rng) for _ in range(count - 2)]
    assert max(_max_diff(supernet, arch, x) for arch in archs) <= 1e-6


def test_a_subnet_is_the_first_channels_and_the_kernels_centre():
    supernet = _trained_looking()
    arch = {**supernet.smallest(), "kernel_sizes": [3, 3, 3]}
    subnet = supernet.get_active_subnet(Candidate(architecture=arch))
    big = supernet.stages[1][0].depthwise.conv.weight  # 7x7, the largest expand ratio
    small = subnet.blocks[1].depthwise[0].weight  # stage 1's first block
    assert small.shape[-1] == 3 and small.shape[0] < big.shape[0]
    assert torch.equal(small, big[: small.shape[0], :, 2:5, 2:5])
    norm, big_norm = subnet.blocks[1].depthwise[1], supernet.stages[1][0].depthwise.norm
    assert torch.equal(norm.running_var, big_norm.running_var[: norm.num_features])


def test_deeper_and_wider_subnets_use_more_of_the_supernet():
    supernet = _trained_looking()
    params = [
        sum(p.numel() for p in supernet.get_active_subnet(Candidate(architecture=a)).parameters())
        for a in (supernet.smallest(), supernet.largest())
    ]
    assert (
        params[0]
        < params[1]
        == sum(p.numel() for n, p in supernet.named_parameters() if "kernel_transform" not in n)
    )


def test_training_a_width_updates_only_its_channels_statistics():
    supernet = _trained_looking()
    norm = supernet.stages[2][0].expand.norm
    before = norm.running_mean.clone()
    supernet.train()
    arch = supernet.smallest()
    supernet(torch.randn(4, *SHAPE), arch)
    used = supernet._stage_channels(1, arch) * arch["expand_ratios"][2]
    assert not torch.equal(norm.running_mean[:used], before[:used])
    assert torch.equal(norm.running_mean[used:], before[used:])


def test_the_subnet_is_a_copy():
    supernet = _trained_looking()
    subnet = supernet.get_active_subnet(Candidate(architecture=supernet.largest()))
    with torch.no_grad():
        for parameter in subnet.parameters():
            parameter.zero_()
    assert supernet.stem.conv.weight.abs().sum() > 0


def test_the_candidates_quantization_is_applied_to_the_subnet():
    supernet = _trained_looking()
    policy = QuantPolicy(weight_bits={"*": 4}, activation_bits=8)
    candidate = Candidate(architecture=supernet.largest(), quantization=policy)
    subnet = supernet.get_active_subnet(candidate)
    quantizers = [m for m in subnet.modules() if isinstance(m, WeightFakeQuant)]
    assert quantizers and all(q.bits == 4 for q in quantizers)


def test_architectures_outside_the_supernet_are_refused():
    supernet = _trained_looking()
    deeper = {**supernet.largest(), "depths": [4, 1, 1]}
    with pytest.raises(ValueError, match="depths"):
        supernet(torch.randn(2, *SHAPE), deeper)
    with pytest.raises(ValueError, match="head_channels"):
        supernet.get_active_subnet(Candidate(architecture={**deeper, "head_channels": 64}))


def test_only_batchnorm_is_sliced():
    with pytest.raises(ValueError, match="groupnorm"):
        MacroSupernet(SPACE, 5, SHAPE, norm="groupnorm")


def test_the_subnet_has_the_supernets_norm_whatever_the_candidates():
    supernet = _trained_looking()
    arch, x = supernet.smallest(), torch.randn(2, *SHAPE)
    subnet = supernet.get_active_subnet(Candidate(architecture=arch, normalization="groupnorm"))
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in subnet.modules())
    with torch.no_grad():
        assert (subnet.eval()(x) - supernet(x, arch)).abs().max() <= 1e-6


def test_an_activation_with_state_is_refused(monkeypatch):
    """The shared activations are not registered modules: one with parameters (PReLU) would
    go untrained and unsaved, so it is refused (before: silently used)."""
    monkeypatch.setattr(macro, "make_activation", lambda name: torch.nn.PReLU())
    supernet = MacroSupernet(SPACE, 3, SHAPE)
    with pytest.raises(ValueError, match="has state"):
        supernet(torch.randn(2, *SHAPE), supernet.largest())
