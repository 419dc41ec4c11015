"""The elastic-quantization benchmark's shape on 4 candidates (the criterion's run is
`winnow bench supernet-quant --candidates 40`)."""

from __future__ import annotations

import json

import pytest
import torch

from winnow.bench import supernet_quantization as bench
from winnow.search_space.datasets import load_dataset
from winnow.service.cli import main


def test_the_report_on_four_candidates(monkeypatch, capsys):
    monkeypatch.setattr(bench, "EPOCHS", 1)
    monkeypatch.setattr(
        bench, "ABLATIONS", {"no_quantization_sampling": {"sample_quantization": False}}
    )
    args = ["--candidates", "4", "--seed", "1", "--standalone-seeds", "2", "--json"]
    assert main(["bench", "supernet-quant", *args]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["standalone_seeds"] == 2
    assert -1.0 <= report["standalone_seed_kendall"] <= 1.0
    assert -1.0 <= report["kendall_single_seed"] <= 1.0
    # the supernet's schedule is the standalone runs' epochs (here 1) of its training split
    split = bench.carve_validation(load_dataset("digits"), bench.VALIDATION_FRACTION, seed=1)
    assert report["candidates"] == 4
    assert report["supernet_steps"] == len(split.train_y) // 64
    for key in (
        "kendall",
        "spearman",
        "kendall_no_quantization_sampling",
        "kendall_no_recalibration",
        "kendall_inherited_loss",
        "kendall_inherited_full_precision",
    ):
        assert -1.0 <= report[key] <= 1.0, key
    assert report["extraction_max_abs_diff"] <= 1e-6
    assert report["criterion"]["met"] == (report["kendall"] >= 0.6)
    assert set(report["baselines"]) == {"params", "model_bytes", "bitops"}
    assert set(report["combined"]) == {"inherited+params", "inherited+model_bytes"}
    assert report["train_seconds"] >= 0 and report["validation_examples"] > 0


def test_the_validation_split_is_carved_from_the_training_data_only():
    digits = load_dataset("digits")
    split = bench.carve_validation(digits, 0.2, seed=0)
    assert len(split.train_y) + len(split.test_y) == len(digits.train_y)
    rows = {tuple(x.flatten().tolist()) for x in digits.train_x}
    assert all(tuple(x.flatten().tolist()) in rows for x in split.test_x)
    fit = {tuple(x.flatten().tolist()) for x in split.train_x}
    held = [tuple(x.flatten().tolist()) for x in split.test_x]
    assert sum(h in fit for h in held) < len(held) // 10  # apart, but for duplicate images
    assert torch.equal(split.mean, digits.mean)


def _runs(*accuracies):
    return [[{"accuracy": a} for a in run] for run in accuracies]


def test_the_truth_is_the_mean_over_seeds_and_the_ceiling_their_agreement():
    runs = _runs([0.9, 0.8, 0.7], [0.7, 0.8, 0.9], [0.8, 0.8, 0.8])
    assert bench.seed_mean(runs) == pytest.approx([0.8, 0.8, 0.8])
    assert bench.seed_repeatability(runs[:2]) == pytest.approx(-1.0)  # every pair reversed
    agreeing = _runs([0.9, 0.8, 0.7], [0.95, 0.85, 0.6])
    assert bench.seed_repeatability(agreeing) == pytest.approx(1.0)
    assert bench.seed_repeatability(runs[:1]) is None


def test_a_truth_needs_one_seed_at_least():
    with pytest.raises(ValueError, match="standalone_seeds"):
        bench.run(4, standalone_seeds=0)
