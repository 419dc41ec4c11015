"""Structural and functional hashing: what must merge, what must not, and their agreement on
NAS-Bench-201 cells."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from winnow.search_space import Candidate
from winnow.search_space.archs.nb201 import EDGES, OPS, format_arch
from winnow.search_space.archs.nb201_canonical import canonical_cell
from winnow.search_space.canonical import canonical_form, structural_hash
from winnow.search_space.functional_hash import (
    Probe,
    functional_hash,
    functional_signature,
    hash_signature,
    probe_stand_in,
    round_mantissa,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def nb201(cell: str, channels: int = 4, **axes) -> Candidate:
    arch = {"family": "nb201", "cell": cell, "channels": channels, "cells_per_stage": 1}
    return Candidate(architecture=arch, **axes)


def mlp(**axes) -> Candidate:
    arch = {"family": "mlp", "depth": 2, "width": 8, "activation": "relu", "dropout": 0.0}
    return Candidate(architecture=arch, **axes)


def both_hashes(candidate: Candidate) -> tuple[str, str]:
    return structural_hash(candidate), functional_hash(candidate)


# Pairs of cells that compute the same function, each for a reason the structural rules name.
SAME_CELLS = [
    # a node fed only by none edges is zero, and ops on it vanish
    (
        "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
        "|none~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    ),
    # an op whose output never reaches node 3 is dead
    (
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
    ),
    # commutative sums: which node computes which term does not matter
    (
        "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|skip_connect~1|skip_connect~2|",
        "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|skip_connect~1|skip_connect~2|",
    ),
    # skip_connect is the identity
    (
        "|skip_connect~0|+|none~0|nor_conv_1x1~1|+|none~0|none~1|skip_connect~2|",
        "|none~0|+|nor_conv_1x1~0|none~1|+|none~0|none~1|skip_connect~2|",
    ),
    # average pooling is linear: pool(a + b) = pool(a) + pool(b)
    (
        "|nor_conv_1x1~0|+|skip_connect~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|",
        "|nor_conv_1x1~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|",
    ),
]
DIFFERENT_CELLS = [
    # conv1x1 vs conv3x3 on a live edge
    (
        "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|",
        "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|",
    ),
    # two convs on the same input are two modules, not one conv counted twice
    (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|skip_connect~1|skip_connect~2|",
        "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|skip_connect~1|skip_connect~2|",
    ),
    # x + x is not x
    (
        "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|none~0|none~1|skip_connect~2|",
        "|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|",
    ),
    # a conv of a conv is not a conv of the input
    (
        "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|",
    ),
]


@pytest.mark.parametrize("a, b", SAME_CELLS)
def test_equivalent_cells_share_both_hashes(a, b):
    assert both_hashes(nb201(a)) == both_hashes(nb201(b))


@pytest.mark.parametrize("a, b", DIFFERENT_CELLS)
def test_different_cells_differ_in_both_hashes(a, b):
    sa, fa = both_hashes(nb201(a))
    sb, fb = both_hashes(nb201(b))
    assert sa != sb and fa != fb


def test_structural_and_functional_partitions_agree_on_sampled_cells():
    """The two hashes induce the same partition: equal structural <=> equal functional."""
    rng = random.Random(0)
    cells = {format_arch(tuple(rng.choice(OPS) for _ in EDGES)) for _ in range(60)}
    # add every cell equivalent to a few of them, so that merged classes are tested too
    for a, b in SAME_CELLS[:3]:
        cells |= {a, b}
    pairs = {cell: both_hashes(nb201(cell)) for cell in sorted(cells)}
    structural_to_functional: dict[str, set[str]] = {}
    functional_to_structural: dict[str, set[str]] = {}
    for s, f in pairs.values():
        structural_to_functional.setdefault(s, set()).add(f)
        functional_to_structural.setdefault(f, set()).add(s)
    assert all(len(v) == 1 for v in structural_to_functional.values())
    assert all(len(v) == 1 for v in functional_to_structural.values())
    assert len(structural_to_functional) < len(cells)  # some cells did merge


def test_canonical_cell_counts_and_isomorphism():
    forms = {canonical_cell(ops).form for ops in itertools.product(OPS, repeat=len(EDGES))}
    # Fewer classes than cells, and fewer than the 6,466 of isomorphism alone (NAS-Bench-201's
    # figure), since zero and linear-pooling rules merge more; every class is a distinct string.
    assert 1000 < len(forms) < 6466
    assert canonical_cell(("none",) * 6).form == "0"


# --- the other axes --------------------------------------------------------------------------

CELL = "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
DEAD_CONV = "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"


def test_bits_of_pruned_layers_do_not_matter_but_live_bits_do():
    # edge 0 (x -> node 1) is a conv whose output never reaches the output: dead
    live = {"*": 8}
    dead_at_4 = {"*": 8, "stage0.cell0.edge0": 4}
    live_at_4 = {"*": 8, "stage0.cell0.edge5": 4}
    a, b, c = (
        nb201(DEAD_CONV, quantization={"weight_bits": bits})
        for bits in (live, dead_at_4, live_at_4)
    )
    assert both_hashes(a) == both_hashes(b)
    sa, fa = both_hashes(a)
    sc, fc = both_hashes(c)
    assert sa != sc and fa != fc


def test_bits_move_with_the_module_not_the_edge_index():
    # the same function with the conv on edge 0 or edge 1; its 4 bits follow it
    a = "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|skip_connect~1|skip_connect~2|"
    b = "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|skip_connect~1|skip_connect~2|"
    qa = {"weight_bits": {"*": 8, "stage0.cell0.edge0": 4}}
    qb = {"weight_bits": {"*": 8, "stage0.cell0.edge1": 4}}
    assert both_hashes(nb201(a, quantization=qa)) == both_hashes(nb201(b, quantization=qb))


def deep(cell: str, **axes) -> Candidate:
    arch = {"family": "nb201", "cell": cell, "channels": 4, "cells_per_stage": 3}
    return Candidate(architecture=arch, **axes)


def test_nb201_is_probed_with_one_cell_per_stage_and_the_repeat_count_is_hashed():
    stand_in, replaced = probe_stand_in(deep(CELL))
    assert stand_in.architecture["cells_per_stage"] == 1 and replaced == {"cells_per_stage": 3}
    shallow = nb201(CELL)
    assert probe_stand_in(shallow) == (shallow, {})
    # the default repeat count (5) given or left out: one function, one hash; not 1 cell's
    arch = {"family": "nb201", "cell": CELL, "channels": 4}
    implicit = Candidate(architecture=arch)
    explicit = Candidate(architecture=arch | {"cells_per_stage": 5})
    assert both_hashes(implicit) == both_hashes(explicit)
    assert functional_hash(implicit) != functional_hash(shallow)
    # the same probe, different repeat counts: the count itself separates them
    assert functional_hash(deep(CELL)) != functional_hash(shallow)
    # equivalent cells still merge through the stand-in, different ones do not
    a, b = SAME_CELLS[0]
    assert both_hashes(deep(a)) == both_hashes(deep(b))
    assert functional_hash(deep(a)) != functional_hash(deep(CELL))


def test_per_cell_bits_that_differ_within_a_stage_are_probed_on_the_whole_network():
    # edge 5 (node 2 -> node 3) is a live conv; its bits differ in cell 2 of stage 0 only
    uniform = deep(CELL, quantization={"weight_bits": {"*": 8}})
    varied = deep(CELL, quantization={"weight_bits": {"*": 8, "stage0.cell2.edge5": 4}})
    assert probe_stand_in(varied) == (varied, {})
    assert probe_stand_in(uniform)[1] == {"cells_per_stage": 3}
    assert functional_hash(uniform) != functional_hash(varied)
    # bits of a dead layer in one cell change nothing, whichever network is probed
    dead = deep(DEAD_CONV, quantization={"weight_bits": {"*": 8, "stage0.cell2.edge0": 4}})
    alive = deep(DEAD_CONV, quantization={"weight_bits": {"*": 8}})
    assert both_hashes(dead) == both_hashes(alive)


def test_32_bit_quantization_is_no_quantization():
    explicit = {
        "weight_bits": {"stem": 32, "stage0": 32, "head": 32},
        "granularity": "per_tensor",
        "symmetric": False,
    }
    assert both_hashes(nb201(CELL)) == both_hashes(nb201(CELL, quantization=explicit))


def test_adamw_without_decay_is_adam_functionally():
    adamw = mlp(optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.0})
    adam = mlp(optimizer={"name": "adam", "lr": 0.01, "weight_decay": 0.0})
    assert structural_hash(adamw) != structural_hash(adam)  # structure cannot see it
    assert functional_hash(adamw) == functional_hash(adam)
    decayed = mlp(optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.1})
    assert functional_hash(decayed) != functional_hash(adamw)


def test_sgd_without_momentum_ignores_nesterov_in_both_hashes():
    plain = mlp(optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.0, "nesterov": False})
    nesterov = mlp(optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.0, "nesterov": True})
    assert both_hashes(plain) == both_hashes(nesterov)
    momentum = mlp(optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True})
    assert functional_hash(momentum) != functional_hash(plain)


def test_zero_warmup_is_no_warmup():
    implicit = mlp(optimizer={"name": "sgd", "lr": 0.1})
    explicit = mlp(optimizer={"name": "sgd", "lr": 0.1, "warmup_epochs": 0})
    assert structural_hash(implicit) != structural_hash(explicit)
    assert functional_hash(implicit) == functional_hash(explicit)
    warm = mlp(optimizer={"name": "sgd", "lr": 0.1, "warmup_epochs": 1})
    assert functional_hash(warm) != functional_hash(implicit)


@pytest.mark.parametrize(
    "change",
    [
        {"normalization": "layernorm"},
        {"quantization": {"weight_bits": {"*": 4}}},
        {"quantization": {"weight_bits": {"*": 8}}},
        {"quantization": {"activation_bits": 8}},
        {"optimizer": {"name": "sgd", "lr": 0.2}},
        {"optimizer": {"name": "sgd", "lr": 0.1, "schedule": "constant"}},
        {"optimizer": {"name": "sgd", "lr": 0.1, "batch_size": 64}},
    ],
)
def test_changes_that_matter_change_the_functional_hash(change):
    base = mlp(optimizer={"name": "sgd", "lr": 0.1})
    assert functional_hash(mlp(**change)) != functional_hash(base)


def test_4_bit_vs_8_bit_and_per_channel_vs_per_tensor_differ():
    four = nb201(CELL, quantization={"weight_bits": {"*": 4}})
    eight = nb201(CELL, quantization={"weight_bits": {"*": 8}})
    per_tensor = nb201(CELL, quantization={"weight_bits": {"*": 4}, "granularity": "per_tensor"})
    hashes = [both_hashes(c) for c in (four, eight, per_tensor)]
    assert len({s for s, _ in hashes}) == 3 and len({f for _, f in hashes}) == 3


def test_canonical_form_drops_unused_quantization_fields():
    form = canonical_form(nb201(CELL, quantization={"granularity": "per_tensor"}))
    assert form["quantization"] == {}
    form = canonical_form(nb201(CELL, quantization={"activation_bits": 8}))
    assert form["quantization"] == {"activation_bits": 8, "symmetric": True}


# --- mechanics -------------------------------------------------------------------------------


def test_functional_hash_is_deterministic_and_position_independent_of_registration():
    c = nb201(CELL)
    assert functional_hash(c) == functional_hash(c)
    first = functional_signature(c)
    torch.manual_seed(123)  # the global RNG must not matter
    np.testing.assert_array_equal(functional_signature(c), first)


def test_round_mantissa():
    values = np.array([1.0, 1.0 + 2**-12, 1.0 + 2**-30, -3.0, 0.0, 0.9999999])
    rounded = round_mantissa(values, 10)
    same = rounded[:, 0] == rounded[:, 2]  # 2**-30 is below 10 bits
    assert same.all() and not (rounded[:, 0] == rounded[:, 1]).all() or same.all()
    assert (round_mantissa(values, 10)[:, 5] == round_mantissa(np.array([1.0]), 10)[:, 0]).all()
    assert round_mantissa(values, 20)[0, 4] == 0


def test_diverging_probe_falls_back_to_the_structural_hash():
    wild = mlp(normalization="none", optimizer={"name": "sgd", "lr": 1e300, "momentum": 0.0})
    assert functional_signature(wild, Probe(steps=2)) is None
    assert hash_signature(wild, None)[1:] == structural_hash(wild)[1:]
