"""``winnow bench supernet``: does the nb201 supernet rank cells better than what it must beat?

1. A fixed sample of functionally distinct NAS-Bench-201 cells: the ground truth's cells in one
   seeded order (``nb201_truth.sample_cells``), the first of each functional hash kept
   (``functional_hash``: equal cells would be scored twice and tie), so a smaller sample is a
   prefix of a larger one with the same seed.
2. The supernet (``supernet/nb201.py``) trained on the training split less a carved validation
   split, for ``minutes`` (``supernet/nb201_training.py``).
3. Each cell's inherited accuracy on the validation split, after re-estimating BatchNorm
   statistics on a few training batches, and before (the ablation:
   ``supernet_no_bn_recalibration``); the extracted network's output is checked against the
   supernet's on validation images (``extraction_max_abs_diff``).
4. The zero-cost proxies of every cell, scored as ``winnow bench proxies`` scores them (the same
   functions, network, batches and cache file format), on the benchmark's full-size network.
5. Every figure on the held-out cells only: the cells are split as ``bench proxies`` splits
   them (``split_indices``); the calibrated ensembles (``proxy_ensemble``: the proxies;
   ``combined``: the proxies and the supernet's score) are fitted on the calibration cells, and
   ``best_proxy`` is the proxy with the best Kendall tau on the calibration cells. Ground truth
   is only ever compared with, never an input.

``supernet_loss`` (minus the inherited validation loss) is reported beside the accuracy, whose
steps of 1/validation images tie cells. ``top5_precision`` is the precision at the top 5 % of
the held-out cells (``top_precision``); ``predicted_best_true_accuracy`` is the true accuracy of
the held-out cell each tier ranks first.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from winnow.bench.proxies import BenchConfig, CellScores, ScoreCache, Scoring, score_cells
from winnow.bench.proxy_stats import (
    feature_rows,
    fit_calibrated,
    rank_correlations,
    split_indices,
    top_precision,
)
from winnow.proxies.batches import fixed_batches
from winnow.proxies.ensemble import FitSettings
from winnow.proxies.nb201_truth import NB201Cell, sample_cells
from winnow.search_space.candidate import Candidate
from winnow.search_space.costs import count_parameters
from winnow.search_space.datasets import Dataset, load_dataset
from winnow.search_space.functional_hash import functional_hash
from winnow.search_space.spec import load_space
from winnow.search_space.training import resolve_device
from winnow.supernet.inherited import (
    calibration_batches,
    carve_validation,
    score_subnet,
)
from winnow.supernet.nb201 import NB201Supernet
from winnow.supernet.nb201_training import TrainReport, TrainSettings, train_supernet

TIERS = (
    "supernet",
    "supernet_no_bn_recalibration",
    "supernet_loss",
    "params",
    "best_proxy",
    "proxy_ensemble",
    "combined",
)
PARITY_IMAGES = 16  # validation images the extraction parity is checked on, per cell


@dataclass(frozen=True)
class SupernetBenchConfig:
    data: str
    sample: int = 300
    seed: int = 0
    minutes: float = 45.0  # supernet training time
    steps: int | None = None  # at most this many training steps (smoke runs, repeats)
    channels: int = 16
    cells_per_stage: int = 5
    sampling: str = "uniform"
    entangle: bool = False
    train: TrainSettings = field(default_factory=TrainSettings)
    validation_fraction: float = 0.1
    recalibration_batches: int = 8
    recalibration_batch_size: int = 64
    proxies: tuple[str, ...] = ()  # () = every proxy; params is always scored
    proxy_batches: int = 2
    proxy_batch_size: int = 64
    calibration_fraction: float = 0.4
    device: str = "auto"


@dataclass
class CellRow:
    """One cell's figures: ground truth (evaluation only) and every tier's score."""

    cell: NB201Cell
    accuracy: float = 0.0  # inherited, BatchNorm re-estimated
    loss: float = 0.0
    shared_accuracy: float = 0.0  # inherited, the supernet's shared running statistics
    max_abs_diff: float = 0.0
    proxies: dict[str, float | None] = field(default_factory=dict)


# --- the sample -----------------------------------------------------------------------------


def distinct_cells(cells: Sequence[NB201Cell], n: int, seed: int) -> tuple[list[NB201Cell], int]:
    """The first ``n`` cells of one seeded order with distinct functional hashes (hashed as the
    built-in ``nb201`` space's candidates); returns them and how many cells were hashed."""
    base = load_space("nb201").sample(1, seed=0)[0]
    chosen: list[NB201Cell] = []
    seen: set[str] = set()
    hashed = 0
    for cell in sample_cells(cells, len(cells), seed):
        if len(chosen) == n:
            break
        arch = base.architecture | {"cell": cell.arch}
        key = functional_hash(Candidate.model_validate(base.model_dump() | {"architecture": arch}))
        hashed += 1
        if key not in seen:
            seen.add(key)
            chosen.append(cell)
    if len(chosen) < n:
        raise ValueError(f"only {len(chosen)} functionally distinct cells, not {n}")
    return chosen, hashed


# --- the supernet: training and scoring -----------------------------------------------------


def train(
    config: SupernetBenchConfig, data: Dataset, device: torch.device, log: Callable[[str], None]
) -> tuple[NB201Supernet, TrainReport]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        supernet = NB201Supernet(
            data.num_classes,
            data.input_shape[0],
            config.channels,
            config.cells_per_stage,
            sampling=config.sampling,  # type: ignore[arg-type]
            entangle=config.entangle,
        ).to(device)

    def on_epoch(epoch: int, epochs: int, loss: float, seconds: float) -> None:
        log(f"supernet epoch {epoch}/{epochs}: loss {loss:.3f} ({seconds:.1f} s)")

    report = train_supernet(
        supernet,
        data,
        config.train,
        steps=config.steps,
        seconds=60.0 * config.minutes,
        on_epoch=on_epoch,
    )
    return supernet.eval(), report


@torch.no_grad()
def score_supernet(
    supernet: NB201Supernet,
    rows: Sequence[CellRow],
    data: Dataset,
    batches: list[torch.Tensor],
    device: torch.device,
    progress: bool,
) -> None:
    """Fill each row's inherited figures, and the extracted network's largest difference from
    the supernet's own output (both in eval mode, before re-estimation)."""
    probe = data.normalize(data.test_x[:PARITY_IMAGES]).to(device)
    for row in tqdm(rows, desc="supernet", unit="cell", file=sys.stderr, disable=not progress):
        arch = supernet.arch(row.cell.arch)
        subnet = supernet.get_active_subnet(Candidate(architecture=arch)).eval()
        row.max_abs_diff = float((subnet(probe) - supernet(probe, arch)).abs().max())
        score = score_subnet(subnet, data, batches, ablation=True, device=device)
        row.accuracy, row.loss = score.recalibrated.accuracy, score.recalibrated.loss
        assert score.shared_statistics is not None
        row.shared_accuracy = score.shared_statistics.accuracy


def score_proxies(
    rows: Sequence[CellRow],
    config: SupernetBenchConfig,
    dataset: Dataset,
    device: torch.device,
    cache_path: str | Path | None,
    progress: bool,
) -> list[CellScores]:
    """Every cell's proxies, exactly as ``winnow bench proxies`` scores them (its cache too)."""
    bench = BenchConfig(
        data=config.data,
        proxies=proxy_list(config.proxies),
        seed=config.seed,
        batch_size=config.proxy_batch_size,
        n_batches=config.proxy_batches,
        device=config.device,
    )
    batches = fixed_batches(dataset, bench.n_batches, bench.batch_size, bench.seed, device)
    from winnow.proxies import score_model

    cache = ScoreCache(cache_path)
    try:
        scoring = Scoring(batches, dataset, score_model, bench, device, cache)
        scored, _, _ = score_cells([r.cell.arch for r in rows], scoring, progress)
    finally:
        cache.close()
    for row, cell in zip(rows, scored, strict=True):
        row.proxies = dict(cell.values)
    return scored


def proxy_list(chosen: Sequence[str]) -> tuple[str, ...]:
    """The proxies to score: the chosen ones (all when none) and ``params`` (a tier)."""
    from winnow.proxies import proxy_names

    names = tuple(chosen) or tuple(proxy_names())
    return names if "params" in names else (*names, "params")


# --- the figures ----------------------------------------------------------------------------


# The ensembles' fit is the engine's (``supernet_rule.py``: ``CalibratedEnsemble``'s default), not
# ``bench proxies``' CALIBRATION_FIT: this bench measures the engine's supernet stage.
ENGINE_FIT = FitSettings()


def tier_predictions(
    rows: Sequence[CellRow], calibration: np.ndarray, evaluation: np.ndarray, seed: int
) -> tuple[dict[str, list[float | None]], dict[str, Any]]:
    """Each tier's scores of the evaluation cells (higher is better), and what was fitted or
    chosen on the calibration cells."""
    truth = np.array([r.cell.test_accuracy for r in rows])
    proxies = {name: [r.proxies.get(name) for r in rows] for name in rows[0].proxies}
    supernet = {
        "supernet": [r.accuracy for r in rows],
        "supernet_no_bn_recalibration": [r.shared_accuracy for r in rows],
        "supernet_loss": [-r.loss for r in rows],
    }
    best_name = best_on_calibration(proxies, truth, calibration)
    on_eval = {name: [column[i] for i in evaluation] for name, column in supernet.items()}
    on_eval["params"] = [proxies["params"][i] for i in evaluation]
    on_eval["best_proxy"] = [proxies[best_name][i] for i in evaluation]
    fitted: dict[str, Any] = {"best_proxy_name": best_name}
    combined_features = proxies | {"supernet": supernet["supernet"]}
    for tier, features in (("proxy_ensemble", proxies), ("combined", combined_features)):
        ensemble = fit_calibrated(features, truth, calibration, seed, settings=ENGINE_FIT)
        on_eval[tier] = (
            list(ensemble.predict(feature_rows(features, evaluation)))
            if ensemble is not None
            else [None] * len(evaluation)
        )
        fitted[f"{tier}_weights"] = (
            {k: round(v, 4) for k, v in ensemble.weights.items()} if ensemble else None
        )
    return on_eval, fitted


def best_on_calibration(
    proxies: dict[str, list[float | None]], truth: np.ndarray, calibration: np.ndarray
) -> str:
    """The proxy with the highest Kendall tau on the calibration cells (undefined: last)."""

    def tau(name: str) -> float:
        kendall = rank_correlations([proxies[name][i] for i in calibration], truth[calibration])
        return kendall["kendall"] if kendall["kendall"] is not None else -2.0

    return max(proxies, key=tau)


def figures(predictions: dict[str, list[float | None]], truth: np.ndarray) -> dict[str, Any]:
    """Kendall, Spearman, top-5 % precision and the predicted best's true accuracy per tier."""
    out: dict[str, dict[str, Any]] = {
        "kendall": {},
        "spearman": {},
        "top5_precision": {},
        "predicted_best_true_accuracy": {},
    }
    for tier in TIERS:
        predicted = predictions[tier]
        correlations = rank_correlations(predicted, truth)
        out["kendall"][tier] = correlations["kendall"]
        out["spearman"][tier] = correlations["spearman"]
        out["top5_precision"][tier] = top_precision(predicted, truth)
        known = [(-np.inf if v is None else v) for v in predicted]
        out["predicted_best_true_accuracy"][tier] = (
            float(truth[int(np.argmax(known))]) if len(known) else None
        )
    return out


# --- the benchmark --------------------------------------------------------------------------


def run_supernet_bench(
    truth_cells: Sequence[NB201Cell],
    config: SupernetBenchConfig,
    cache_path: str | Path | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, score and compare (see the module docstring); one JSON-ready dict."""
    start = time.perf_counter()

    def log(line: str) -> None:
        if progress:
            print(line, file=sys.stderr, flush=True)

    device = resolve_device(config.device)
    dataset = load_dataset(config.data)
    cells, hashed = distinct_cells(truth_cells, config.sample, config.seed)
    log(f"{len(cells)} functionally distinct cells (of {hashed} hashed)")
    rows = [CellRow(cell) for cell in cells]
    proxy_start = time.perf_counter()
    score_proxies(rows, config, dataset, device, cache_path, progress)
    proxy_seconds = time.perf_counter() - proxy_start

    data = carve_validation(dataset, config.validation_fraction, config.seed)
    supernet, report = train(config, data, device, log)
    batches = calibration_batches(
        data, config.recalibration_batches, config.recalibration_batch_size, config.seed, device
    )
    score_start = time.perf_counter()
    score_supernet(supernet, rows, data, batches, device, progress)
    score_seconds = time.perf_counter() - score_start

    truth = np.array([r.cell.test_accuracy for r in rows])
    calibration, evaluation = split_indices(len(rows), config.calibration_fraction, config.seed)
    predictions, fitted = tier_predictions(rows, calibration, evaluation, config.seed)
    if out is not None:
        write_rows(Path(out), rows, set(calibration.tolist()))
    result: dict[str, Any] = {
        "cells": len(rows),
        "train_seconds": round(report.seconds, 2),
        **figures(predictions, truth[evaluation]),
        "extraction_max_abs_diff": max(r.max_abs_diff for r in rows),
        **fitted,
        "best_true_accuracy": float(truth[evaluation].max()) if len(evaluation) else None,
        "split": {"calibration": len(calibration), "evaluation": len(evaluation)},
        "supernet": _supernet_summary(config, supernet, report),
        "validation_images": len(data.test_y),
        "recalibration": {"batches": len(batches), "batch_size": config.recalibration_batch_size},
        "proxies": list(rows[0].proxies),
        "cells_hashed": hashed,
        "score_seconds_per_cell": round(score_seconds / len(rows), 3),
        "proxy_seconds_per_cell": round(proxy_seconds / len(rows), 3),
        "seed": config.seed,
        "data": config.data,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    result["wall_seconds"] = round(time.perf_counter() - start, 2)
    return result


def _supernet_summary(
    config: SupernetBenchConfig, supernet: NB201Supernet, report: TrainReport
) -> dict[str, Any]:
    return {
        "channels": config.channels,
        "cells_per_stage": config.cells_per_stage,
        "sampling": config.sampling,
        "entangle": config.entangle,
        "params": count_parameters(supernet),
        "steps": report.steps,
        "total_steps": report.total_steps,
        "epochs": round(report.epochs, 2),
        "final_epoch_loss": round(report.losses[-1], 4) if report.losses else None,
        "settings": asdict(config.train),
    }


def write_rows(path: Path, rows: Sequence[CellRow], calibration: set[int]) -> None:
    """One CSV line per cell: its split, ground truth, inherited figures and proxies."""
    proxies = list(rows[0].proxies)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["arch", "split", "test_accuracy", "supernet_accuracy", "supernet_loss"]
            + ["supernet_accuracy_no_bn_recalibration", "extraction_max_abs_diff", *proxies]
        )
        for i, row in enumerate(rows):
            writer.writerow(
                [row.cell.arch, "calibration" if i in calibration else "evaluation"]
                + [row.cell.test_accuracy, row.accuracy, row.loss, row.shared_accuracy]
                + [row.max_abs_diff, *(row.proxies[p] for p in proxies)]
            )
