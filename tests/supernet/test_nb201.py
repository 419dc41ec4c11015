"""The nb201 supernet: extraction parity with winnow's own network, sampling, entanglement."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from winnow.search_space.archs.nb201 import EDGES, OPS, NB201Network, format_arch, parse_arch
from winnow.search_space.candidate import Candidate
from winnow.search_space.costs import count_parameters
from winnow.supernet.batchnorm import batchnorm_layers
from winnow.supernet.nb201 import NB201Supernet

ALL_3X3 = format_arch(["nor_conv_3x3"] * len(EDGES))
MIXED = "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"


def scrambled(supernet: NB201Supernet, seed: int = 0) -> NB201Supernet:
    """Random weights, norm affines and running statistics, so eval mode uses non-trivial
    statistics that extraction must carry over."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in supernet.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
        for norm in batchnorm_layers(supernet):
            norm.running_mean.copy_(torch.randn(norm.num_features, generator=generator) * 0.1)
            norm.running_var.copy_(torch.rand(norm.num_features, generator=generator) + 0.5)
    return supernet.eval()


def max_diff(supernet: NB201Supernet, arch, x: torch.Tensor) -> float:
    subnet = supernet.get_active_subnet(Candidate(architecture=arch)).eval()
    with torch.no_grad():
        return float((supernet(x, arch) - subnet(x)).abs().max())


@pytest.mark.parametrize("entangle", [False, True])
def test_extracted_subnets_equal_the_supernet_on_100_random_cells(entangle):
    torch.manual_seed(0)
    supernet = scrambled(NB201Supernet(channels=4, cells_per_stage=1, entangle=entangle))
    x = torch.randn(4, 3, 8, 8)
    rng = random.Random(1)
    archs = [supernet.sample(rng) for _ in range(100)]
    diffs = [max_diff(supernet, arch, x) for arch in archs]
    assert max(diffs) <= 1e-6
    assert len({a["cell"] for a in archs}) > 90  # the cells really vary


@pytest.mark.parametrize("entangle", [False, True])
def test_extraction_parity_at_the_benchmark_size(entangle):
    torch.manual_seed(0)
    supernet = scrambled(NB201Supernet(entangle=entangle))  # C=16, N=5
    x = torch.randn(2, 3, 32, 32)
    for cell in (ALL_3X3, MIXED):
        assert max_diff(supernet, supernet.arch(cell), x) <= 1e-6


def test_subnet_is_winnows_network_with_a_copy_of_the_weights():
    supernet = scrambled(NB201Supernet(channels=4, cells_per_stage=2))
    arch = supernet.arch(MIXED)
    subnet = supernet.get_active_subnet(arch)
    built = Candidate(architecture=arch).build_model(10, (3, 32, 32))
    assert isinstance(subnet, NB201Network) and not subnet.training
    assert count_parameters(subnet) == count_parameters(built)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    with torch.no_grad():
        for p in subnet.parameters():
            p.add_(1.0)
    for key, value in supernet.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_the_subnet_trains_the_supernets_mode():
    supernet = NB201Supernet(channels=4, cells_per_stage=1).train()
    assert supernet.get_active_subnet(supernet.arch(MIXED)).training


def test_entangled_1x1_is_the_centre_of_the_3x3():
    plain = NB201Supernet(channels=4, cells_per_stage=1)
    tangled = NB201Supernet(channels=4, cells_per_stage=1, entangle=True)
    one_by_one = sum(c * c for c in (4, 8, 16))  # one 1x1 weight per edge, one cell a stage
    assert count_parameters(plain) - count_parameters(tangled) == len(EDGES) * one_by_one
    arch = tangled.arch(MIXED)  # edge 0 is a 1x1 conv
    centre = tangled.cells[0].edges[0].ops["nor_conv_3x3"][1].weight
    assert torch.equal(
        tangled.get_active_subnet(arch).cells[0].edges[0][1].weight, centre[:, :, 1:2, 1:2]
    )
    optimizer = torch.optim.SGD(tangled.parameters(), lr=1.0)
    before = centre.detach().clone()
    tangled(torch.randn(2, 3, 8, 8), arch).square().mean().backward()
    optimizer.step()
    changed = (centre.detach() != before).flatten(2).any(0).any(0)
    assert changed.tolist() == [False] * 4 + [True] + [False] * 4  # only the centre tap moved


def test_uniform_sampling_is_seeded_one_path_per_step():
    supernet = NB201Supernet(channels=4, cells_per_stage=1)
    paths = supernet.step_paths(random.Random(3))
    assert len(paths) == 1 and paths == supernet.step_paths(random.Random(3))
    rng = random.Random(0)
    seen = {op for _ in range(50) for op in parse_arch(supernet.sample(rng)["cell"])}
    assert seen == set(OPS)


def test_fair_sampling_trains_every_op_of_every_edge_once_per_step():
    supernet = NB201Supernet(channels=4, cells_per_stage=1, sampling="fair")
    rng = random.Random(0)
    for _ in range(5):
        paths = supernet.step_paths(rng)
        assert len(paths) == len(OPS)
        cells = [parse_arch(p["cell"]) for p in paths]
        for e in range(len(EDGES)):
            assert sorted(cell[e] for cell in cells) == sorted(OPS)


def test_a_restricted_space_and_wrong_sizes_are_refused():
    supernet = NB201Supernet(
        channels=4, cells_per_stage=1, ops=("none", "skip_connect", "nor_conv_3x3")
    )
    assert "nor_conv_1x1" not in supernet.cells[0].edges[0].ops
    with pytest.raises(ValueError, match="not in the supernet's ops"):
        supernet(torch.randn(1, 3, 8, 8), supernet.arch(MIXED))
    with pytest.raises(ValueError, match="C=4, N=1"):
        supernet.get_active_subnet(NB201Supernet().arch(ALL_3X3))
    with pytest.raises(ValueError, match="unknown sampling"):
        NB201Supernet(sampling="greedy")


def test_the_supernet_learns_with_the_batchnorm_it_owns():
    supernet = NB201Supernet(channels=4, cells_per_stage=1)
    assert all(isinstance(m, nn.BatchNorm2d) for m in batchnorm_layers(supernet))
    assert supernet.family == "nb201"
