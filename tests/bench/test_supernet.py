"""``winnow bench supernet`` end to end on a tiny supernet, and its functionally distinct sample."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from winnow.bench.supernet import TIERS, distinct_cells
from winnow.proxies.nb201_truth import NB201Cell
from winnow.search_space.archs.nb201 import OPS, format_arch
from winnow.service.cli import main

SKIP = "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
SKIP_WITH_DEAD_CONV = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
POOL = "|avg_pool_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|"


def test_the_sample_keeps_one_cell_per_functional_hash():
    cells = [NB201Cell(a, 50.0 + i, i) for i, a in enumerate((SKIP, SKIP_WITH_DEAD_CONV, POOL))]
    chosen, _ = distinct_cells(cells, 2, seed=0)
    archs = {c.arch for c in chosen}
    assert POOL in archs and len(archs & {SKIP, SKIP_WITH_DEAD_CONV}) == 1
    with pytest.raises(ValueError, match="only 2 functionally distinct cells"):
        distinct_cells(cells, 3, seed=0)


def write_truth(path, n: int) -> None:
    rng = np.random.default_rng(0)
    archs: list[str] = []
    while len(archs) < n:
        arch = format_arch([OPS[i] for i in rng.integers(1, len(OPS), 6)])  # no `none`: distinct
        if arch not in archs:
            archs.append(arch)
    lines = ["arch,test_accuracy"] + [f"{a},{rng.uniform(40, 94):.2f}" for a in archs]
    path.write_text("\n".join(lines) + "\n")


def test_bench_supernet_reports_every_tier_on_held_out_cells(tmp_path, capsys):
    write_truth(tmp_path / "truth.csv", n=10)
    code = main(
        [
            "bench",
            "supernet",
            "--nb201",
            str(tmp_path / "truth.csv"),
            "--dataset",
            "synthetic:3x8x8",
        ]
        + ["--sample", "8", "--steps", "6", "--channels", "4", "--cells-per-stage", "1"]
        + ["--proxies", "synflow,grad_norm", "--recalibration-batches", "1"]
        + ["--validation-fraction", "0.2", "--out", str(tmp_path / "rows.csv"), "--quiet"]
        + ["--json"]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cells"] == 8 and result["train_seconds"] > 0
    assert result["split"] == {"calibration": 3, "evaluation": 5}
    assert result["supernet"]["steps"] == 6 and result["proxies"] == [
        "synflow",
        "grad_norm",
        "params",
    ]
    for figure in ("kendall", "spearman", "top5_precision", "predicted_best_true_accuracy"):
        assert set(result[figure]) == set(TIERS)
    assert all(v is None or -1 <= v <= 1 for v in result["kendall"].values())
    assert result["kendall"]["params"] is not None and result["kendall"]["supernet"] is not None
    assert result["extraction_max_abs_diff"] <= 1e-6
    assert result["best_proxy_name"] in result["proxies"]
    features = ("synflow", "grad_norm", "params", "supernet")
    assert set(result["combined_weights"]) == set(features)  # the engine's fit: one basis
    with open(tmp_path / "rows.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and sum(r["split"] == "evaluation" for r in rows) == 5
    for column in ("supernet_accuracy", "supernet_loss", "params", "synflow"):
        assert len({r[column] for r in rows}) > 1, column  # computed per cell, not constant


def test_the_supernet_bench_fits_its_ensembles_as_the_engine_does():
    """``bench supernet`` measures the engine's supernet stage, so its ensembles are
    ``CalibratedEnsemble``'s default fit (``supernet_rule.py``), not ``bench proxies``' fit."""
    from winnow.bench.proxy_stats import CALIBRATION_FIT, feature_rows, split_indices
    from winnow.bench.supernet import CellRow, tier_predictions
    from winnow.proxies.ensemble import CalibratedEnsemble, FitSettings

    rng = np.random.default_rng(3)
    truth = rng.uniform(10, 94, 40)
    rows = [
        CellRow(
            NB201Cell(f"cell{i}", float(t), i),
            accuracy=float(t + rng.normal(0, 5)),
            loss=float(-t),
            shared_accuracy=float(t),
            proxies={"params": float(t + rng.normal(0, 20)), "zico": float(rng.normal())},
        )
        for i, t in enumerate(truth)
    ]
    calibration, evaluation = split_indices(len(rows), 0.4, seed=0)
    _, fitted = tier_predictions(rows, calibration, evaluation, seed=0)
    proxies = {name: [r.proxies[name] for r in rows] for name in ("params", "zico")}
    calibration_rows = feature_rows(proxies, calibration)
    engine = CalibratedEnsemble(list(proxies)).fit(calibration_rows, truth[calibration], 0)
    assert engine.settings == FitSettings() != CALIBRATION_FIT
    assert fitted["proxy_ensemble_weights"] == {k: round(v, 4) for k, v in engine.weights.items()}
    assert set(fitted["combined_weights"]) == {"params", "zico", "supernet"}  # one basis
