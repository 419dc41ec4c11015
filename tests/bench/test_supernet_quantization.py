"""The elastic-quantization benchmark's shape on 4 candidates (the criterion's run is
`winnow bench supernet-quant --candidates 40`)."""

from __future__ import annotations

import json

import torch

from winnow.bench import supernet_quantization as bench
from winnow.search_space.datasets import load_dataset
from winnow.service.cli import main


def test_the_report_on_four_candidates(monkeypatch, capsys):
    monkeypatch.setattr(bench, "STEPS", 20)
    monkeypatch.setattr(bench, "EPOCHS", 1)
    monkeypatch.setattr(
        bench, "ABLATIONS", {"no_quantization_sampling": {"sample_quantization": False}}
    )
    assert main(["bench", "supernet-quant", "--candidates", "4", "--seed", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["candidates"] == 4 and report["supernet_steps"] == 20
    for key in (
        "kendall",
        "spearman",
        "kendall_no_quantization_sampling",
        "kendall_no_recalibration",
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
