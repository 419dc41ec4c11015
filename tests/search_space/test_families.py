"""Architecture families, registered once: the spec's union is the registry's, and each family
says the input shape functional hashing probes it with and what the dashboard shows of it."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from winnow.search_space import parse_space
from winnow.search_space.archs import FAMILIES, ArchitectureView, describe
from winnow.search_space.archs.nb201 import cell_dot
from winnow.search_space.functional_hash import Probe
from winnow.search_space.spec import Architecture

CELL = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|none~2|"


def test_the_specs_architecture_union_is_the_registrys_families():
    union, field = typing.get_args(Architecture)
    assert list(typing.get_args(union)) == [FAMILIES.get(name).space for name in FAMILIES]
    assert field.discriminator == "family"
    for name in FAMILIES:
        assert FAMILIES.get(name).name == name
        assert FAMILIES.get(name).space.model_fields["family"].default == name


def test_probe_shapes_are_the_families():
    probe = Probe(channels=2, size=5, features=7)
    assert probe.input_shape("nb201") == probe.input_shape("macro") == (2, 5, 5)
    assert probe.input_shape("mlp") == (7,)


def test_each_family_describes_an_architecture_for_the_dashboard():
    mlp = describe({"family": "mlp", "depth": 2, "width": 16, "activation": "relu"})
    assert mlp.summary == "mlp 2x16 relu" and mlp.graph is None
    assert mlp.table == {
        "layer": ["hidden.0", "hidden.1", "head"],
        "out features": [16, 16, "classes"],
        "activation": ["relu", "relu", ""],
    }
    macro_arch = parse_space({"architecture": {"family": "macro"}}).sample(1)[0].architecture
    macro = describe(macro_arch)
    depths = macro_arch["depths"]
    assert macro.summary == f"macro depths {depths} kernels {macro_arch['kernel_sizes']}"
    assert macro.table["blocks"] == depths and macro.fields == macro_arch
    nb201_arch = {"family": "nb201", "cell": CELL, "channels": 16, "cells_per_stage": 5}
    nb201 = describe(nb201_arch)
    assert nb201.summary == f"nb201 {CELL} C16 N5" and nb201.graph == cell_dot(CELL)
    assert "5 cells per stage, 16 channels" in nb201.caption and "cell" not in nb201.fields


def test_a_family_this_build_does_not_know_shows_its_fields():
    view = describe({"family": "vit", "patch": 4})
    assert view == ArchitectureView(summary="vit", fields={"family": "vit", "patch": 4})


def test_a_registered_family_is_probed_and_described_by_its_own_functions():
    mlp = FAMILIES.get("mlp")
    shown = ArchitectureView(summary="wide", fields={})
    wide = dataclasses.replace(
        mlp, name="wide", probe_shape=lambda probe: (3 * probe.features,), describe=lambda a: shown
    )
    with FAMILIES.registered("wide", wide):
        assert Probe(features=4).input_shape("wide") == (12,)
        assert describe({"family": "wide"}) is shown
    with pytest.raises(KeyError, match="allowed: nb201, macro, mlp"):
        Probe().input_shape("wide")


def test_nb201_cell_drawing_leaves_out_none_edges():
    dot = cell_dot(CELL)
    assert '0 -> 1 [label="nor_conv_3x3"]' in dot
    assert '1 -> 2 [label="skip_connect"]' in dot
    assert '0 -> 3 [label="avg_pool_3x3"]' in dot
    assert dot.count("->") == 3
