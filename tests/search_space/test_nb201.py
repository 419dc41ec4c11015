"""NAS-Bench-201: arch strings, parameter parity with the benchmark, the cell's DAG."""

from __future__ import annotations

import random

import pytest
import torch

from winnow.search_space import parse_space
from winnow.search_space.archs.nb201 import (
    EDGES,
    OPS,
    ArchStringError,
    Cell,
    NB201Network,
    format_arch,
    parse_arch,
)
from winnow.search_space.costs import count_parameters

# Published counts of the benchmark's own network (10 classes): the all-none cell has 73,306
# parameters and the all-conv3x3 cell 1,531,546. Per edge, one op across the 15 cells adds
# 5 x sum over C in (16, 32, 64) of (k*k*C*C + 2C): 243,040 for a 3x3 conv, 28,000 for a 1x1.
BASE, CONV3, CONV1 = 73_306, 243_040, 28_000
ALL_CONV3 = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ISSUE_CELL = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)


def expected_params(ops: tuple[str, ...]) -> int:
    return BASE + CONV3 * ops.count("nor_conv_3x3") + CONV1 * ops.count("nor_conv_1x1")


def test_published_parameter_counts():
    assert count_parameters(NB201Network(parse_arch(ALL_CONV3), 10)) == 1_531_546
    assert count_parameters(NB201Network(parse_arch(ALL_NONE), 10)) == 73_306
    assert count_parameters(NB201Network(parse_arch(ISSUE_CELL), 10)) == 1_288_506


def test_parameter_parity_on_random_cells():
    rng = random.Random(0)
    for _ in range(25):
        ops = tuple(rng.choice(OPS) for _ in EDGES)
        assert count_parameters(NB201Network(ops, 10)) == expected_params(ops), format_arch(ops)


def test_arch_strings_round_trip():
    rng = random.Random(1)
    for _ in range(50):
        ops = tuple(rng.choice(OPS) for _ in EDGES)
        assert parse_arch(format_arch(ops)) == ops
    assert format_arch(parse_arch(ISSUE_CELL)) == ISSUE_CELL


@pytest.mark.parametrize(
    "bad",
    [
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|",  # two nodes
        "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",  # unknown op
        "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",  # wrong source
        "|none~0|+|none~0|+|none~0|none~1|none~2|",  # missing edge
    ],
)
def test_bad_arch_strings(bad):
    with pytest.raises(ArchStringError):
        parse_arch(bad)


def test_cell_sums_its_edges_as_the_dag_says():
    torch.manual_seed(0)
    ops = ("nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "none", "nor_conv_3x3")
    cell = Cell(ops, 4, "batchnorm", "c").eval()
    by_edge = {}
    kept = iter(cell.edges)
    for e, op in enumerate(ops):
        by_edge[e] = None if op == "none" else next(kept)
    x = torch.randn(2, 4, 6, 6)
    node1 = by_edge[0](x)
    node2 = by_edge[1](x) + by_edge[2](node1)
    node3 = by_edge[3](x) + by_edge[5](node2)  # edge 4 (node1 -> node3) is none
    torch.testing.assert_close(cell(x), node3)


def test_identity_cell_and_all_none_cell():
    identity = "|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|"
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(Cell(parse_arch(identity), 4, "batchnorm", "c")(x), x)
    assert torch.count_nonzero(Cell(parse_arch(ALL_NONE), 4, "batchnorm", "c")(x)) == 0


def test_built_from_a_candidate_with_slots_and_shapes():
    space = parse_space({"architecture": {"family": "nb201", "cell": ISSUE_CELL}})
    model = space.sample(1)[0].build_model(10, (3, 32, 32))
    slots = {m.winnow_slot for m in model.modules() if hasattr(m, "winnow_slot")}
    assert {"stem", "head", "stage1.reduce", "stage2.cell4.edge5"} <= slots
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert count_parameters(model) == 1_288_506
