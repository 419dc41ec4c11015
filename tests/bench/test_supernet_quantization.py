"""The elastic-quantization benchmark's shape on 4 candidates (the criterion's run is
`winnow bench supernet-quant --candidates 40`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

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
    assert -1.0 <= report["standalone_seed_pair_kendall"] <= 1.0
    assert -1.0 <= report["standalone_leave_one_out_kendall"] <= 1.0
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
    assert set(report["baselines_single_seed"]) == set(report["baselines"])
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


def test_the_truth_is_the_mean_over_seeds_and_the_pair_tau_their_agreement():
    runs = _runs([0.9, 0.8, 0.7], [0.7, 0.8, 0.9], [0.8, 0.8, 0.8])
    assert bench.seed_mean(runs) == pytest.approx([0.8, 0.8, 0.8])
    assert bench.seed_pair_kendall(runs[:2]) == (pytest.approx(-1.0), 0)  # reversed
    agreeing = _runs([0.9, 0.8, 0.7], [0.95, 0.85, 0.6])
    assert bench.seed_pair_kendall(agreeing) == (pytest.approx(1.0), 0)
    assert bench.seed_pair_kendall(runs[:1]) == (None, 0)


def test_a_run_of_equal_accuracies_leaves_its_tau_out_rather_than_nan():
    runs = _runs([0.9, 0.8, 0.7], [0.95, 0.85, 0.6], [0.8, 0.8, 0.8])
    assert bench.seed_pair_kendall(runs) == (pytest.approx(1.0), 2)  # 2 pairs have no tau
    assert bench.seed_pair_kendall(runs[2:] * 2) == (None, 1)
    json.dumps(bench.seed_pair_kendall(runs[2:] * 2), allow_nan=False)


def test_leave_one_out_ranks_each_seed_against_the_mean_of_the_others():
    runs = _runs([0.9, 0.8, 0.7], [0.7, 0.8, 0.9], [0.9, 0.6, 0.8])
    expected = [
        kendalltau([0.9, 0.8, 0.7], [0.8, 0.7, 0.85]).statistic,
        kendalltau([0.7, 0.8, 0.9], [0.9, 0.7, 0.75]).statistic,
        kendalltau([0.9, 0.6, 0.8], [0.8, 0.8, 0.8]).statistic,  # NaN: left out
    ]
    assert bench.leave_one_out_kendall(runs) == (pytest.approx(np.nanmean(expected)), 1)
    assert bench.leave_one_out_kendall(runs[:1]) == (None, 0)


# Each standalone run's accuracies (by run), chosen so that run 0 and the mean rank apart.
RUN_ACCURACIES = [[0.90, 0.60, 0.80, 0.70], [0.50, 0.90, 0.85, 0.60], [0.70, 0.80, 0.95, 0.65]]


def test_the_report_ranks_against_the_seeds_mean_and_against_run_zero(monkeypatch):
    seeds, supernet_seeds = [], []
    params = [4.0, 1.0, 3.0, 2.0]

    def fake_standalone(candidates, epochs, seed, progress):
        seeds.append(seed)
        accuracy = RUN_ACCURACIES[len(seeds) - 1]
        return [
            {"accuracy": a, "params": p, "model_bytes": p, "bitops": p}
            for a, p in zip(accuracy, params, strict=True)
        ]

    def fake_supernet(split, steps, minutes, seed, **settings):
        supernet_seeds.append(seed)
        return None, 0.0, steps

    mean = np.mean(RUN_ACCURACIES, axis=0).tolist()
    scores = {"accuracy": mean, "no_recalibration": mean, "loss": mean, "float": mean}
    monkeypatch.setattr(bench, "standalone", fake_standalone)
    monkeypatch.setattr(bench, "train_supernet", fake_supernet)
    monkeypatch.setattr(bench, "inherited", lambda *a: {**scores, "max_abs_diff": 0.0})
    report = bench.run(4, seed=2, ablation=False)

    assert len(set(seeds)) == 3 and report["standalone_run_seeds"] == seeds
    assert not set(seeds) & set(supernet_seeds)  # no run shares the supernet's init
    assert report["standalone_accuracy"]["median"] == pytest.approx(np.median(mean))
    assert report["kendall"] == pytest.approx(1.0)  # the inherited scores are the mean
    run_zero = kendalltau(mean, RUN_ACCURACIES[0]).statistic
    assert run_zero < 1.0 and report["kendall_single_seed"] == pytest.approx(run_zero)
    assert report["standalone_seed_pair_kendall"] < 1.0
    single = report["baselines_single_seed"]["params"]["kendall"]
    assert single == pytest.approx(kendalltau(params, RUN_ACCURACIES[0]).statistic)
    assert report["baselines"]["params"]["kendall"] == pytest.approx(
        kendalltau(params, mean).statistic
    )


def test_a_truth_needs_one_seed_at_least(capsys):
    with pytest.raises(ValueError, match="standalone_seeds"):
        bench.run(4, standalone_seeds=0)
    assert main(["bench", "supernet-quant", "--standalone-seeds", "-1"]) == 2
    assert "--standalone-seeds" in capsys.readouterr().err
