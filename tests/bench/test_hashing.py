"""The hashing benchmark end to end on a small slice (the full run is `winnow bench hashing`)."""

from __future__ import annotations

import csv

from winnow.bench.hashing import partition_disagreements, run


def test_partition_disagreements_counts_members_of_mismatched_classes():
    assert partition_disagreements(["a", "a", "b"], ["x", "x", "y"]) == 0
    assert partition_disagreements(["a", "a", "b"], ["x", "y", "z"]) == 2  # functional splits a
    assert partition_disagreements(["a", "b", "c"], ["x", "x", "z"]) == 2  # functional merges


def test_nb201_slice_and_csv(tmp_path):
    out = tmp_path / "hashes.csv"
    report = run("nb201", None, 0, [8, 20], out, limit=40)  # the default (12) is added
    assert report["candidates"] == 40
    assert report["structural_classes"] == report["functional_classes"] < 40
    assert report["partition_disagreements"] == 0
    assert set(report["functional_classes_by_mantissa_bits"]) == {"8", "12", "20"}
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 40 and rows[0]["arch"].startswith("|none~0|")
    assert all(len(r["structural_hash"]) == len(r["functional_hash"]) == 16 for r in rows)


def test_joint_sample_reports_duplicate_fractions():
    report = run("nb201-joint", 12, 0, [20], None)
    assert report["candidates"] == 12
    assert 0 <= report["duplicate_fraction_structural"] <= report["duplicate_fraction_functional"]
    assert report["functional_ms_per_candidate"] > 0
