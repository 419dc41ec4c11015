"""The proxy benchmark behind ``winnow bench proxies``: how well each zero-cost proxy, and each
ensemble of them, ranks NAS-Bench-201 cells against the benchmark's CIFAR-10 test accuracy.

Every sampled cell is built as the benchmark's network (``NB201Network``, C=16, N=5, BatchNorm)
from the same seed and scored on the SAME fixed batches of real training images, so the only
thing that differs between cells is the cell. Correlations (``scipy.stats``) are against the
ground truth, which is never an input to a proxy. Every proxy and ensemble is reported on one
seeded split's evaluation cells (``spearman_evaluation``, the headline) and on all cells
(``spearman_all``): the calibrated ensemble learns its weights on the calibration cells for the
first, and by a K-fold cross-fit (each fold scored by a fit on the others) for the second.
``rank`` is winnow's rank aggregation over the run's proxies less near-copies; ``aznas`` is
AZ-NAS's own ensemble (its four proxies, rank-aggregated as its code does), reported when the run
scores them.

Scores can be cached in a JSON-lines file (one line per cell, appended and flushed as each cell
is done), so an interrupted run resumes where it stopped and a repeated run is fast. A line is
reused only by a run with the same configuration (data, seed, batches, proxies, device type,
sharing); a reused cell keeps the timings recorded when it was scored.

``no_share`` also scores the first ``no_share_limit`` cells (default 50) with every proxy on its
own passes, each right after its shared scoring, and reports both timings on those cells:
unshared scoring is several times slower, too slow for 1,000 cells on a CPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from winnow.bench.proxy_stats import (
    CALIBRATION_FITS,
    EXPLORED_PREFIX,
    aznas_summary,
    calibrated_summary,
    near_copy_table,
    per_proxy_summary,
    rank_summary,
    split_indices,
)
from winnow.proxies.batches import Batches, fixed_batches
from winnow.proxies.ensemble import deduplicated
from winnow.proxies.nb201_truth import NB201Cell
from winnow.search_space.archs.nb201 import NB201Network, parse_arch
from winnow.search_space.datasets import Dataset, load_dataset
from winnow.search_space.training import resolve_device

# score_model's signature: (model, batches, proxies, *, share, seed) -> {name: ProxyScore}
Scorer = Callable[..., Mapping[str, Any]]


@dataclass(frozen=True)
class BenchConfig:
    """What a benchmark run scores and how; the first six change the scores, so they key the
    cache (the split, the cross-fit and the no-share timing change only what is reported)."""

    data: str
    proxies: tuple[str, ...]
    seed: int = 0
    batch_size: int = 64
    n_batches: int = 2
    device: str = "auto"
    calibration_fraction: float = 0.4
    no_share: bool = False
    no_share_limit: int = 50  # unshared scoring (slow) runs on the first this many cells
    folds: int = 5  # the calibrated ensemble's cross-fit, for its all-cells figure
    calibration_fit: str = "bench"  # a key of proxy_stats.CALIBRATION_FITS
    explored_prefix: int = EXPLORED_PREFIX  # cells seen while the fit was chosen (proxy_stats)
    report_near_copies: bool = False  # add the proxy-to-proxy table and the undeduplicated rank

    def __post_init__(self) -> None:
        if not self.proxies:
            raise ValueError("the benchmark needs at least one proxy")
        if not 0.0 < self.calibration_fraction < 1.0:
            raise ValueError(
                f"calibration fraction must be in (0, 1), not {self.calibration_fraction}"
            )
        if self.n_batches < 1 or self.batch_size < 1 or self.no_share_limit < 1:
            raise ValueError("batch count, batch size and the no-share limit must be positive")
        if self.folds < 2:
            raise ValueError(f"the cross-fit needs at least 2 folds, not {self.folds}")
        if self.calibration_fit not in CALIBRATION_FITS:
            allowed = ", ".join(CALIBRATION_FITS)
            raise ValueError(
                f"unknown calibration fit {self.calibration_fit!r}; allowed: {allowed}"
            )


@dataclass
class CellScores:
    """One cell's proxy results from one scorer call: value (None = failed), seconds and error
    per proxy, and the wall time of the whole call."""

    arch: str
    values: dict[str, float | None]
    seconds: dict[str, float]
    errors: dict[str, str] = field(default_factory=dict)
    total_seconds: float = 0.0


# --- inputs: batches and networks -----------------------------------------------------------


def build_cell(
    arch: str, num_classes: int, in_channels: int, seed: int, device: torch.device
) -> nn.Module:
    """The benchmark's network for ``arch``, initialised from ``seed`` whatever came before
    (so a cell scores the same in any order and when resumed), leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = NB201Network(parse_arch(arch), num_classes, in_channels=in_channels)
    return model.to(device)


def score_cell(
    arch: str,
    batches: Batches,
    dataset: Dataset,
    scorer: Scorer,
    config: BenchConfig,
    device: torch.device,
    share: bool,
) -> tuple[CellScores, bool]:
    """Score one cell; returns (scores, whether to cache them). A scorer that raises (it
    should not: proxies report their own failures) fails every proxy of this cell, uncached,
    so that a transient error such as running out of memory is retried by the next run."""
    model = build_cell(arch, dataset.num_classes, dataset.input_shape[0], config.seed, device)
    start = time.perf_counter()
    try:
        results = scorer(model, batches, list(config.proxies), share=share, seed=config.seed)
    except Exception as error:  # one bad cell must not end a 1,000-cell run
        message = f"{type(error).__name__}: {error}"
        names = config.proxies
        failed = CellScores(
            arch, dict.fromkeys(names), dict.fromkeys(names, 0.0), dict.fromkeys(names, message)
        )
        return failed, False
    total = time.perf_counter() - start
    values, seconds, errors = {}, {}, {}
    for name in config.proxies:
        result = results.get(name)
        value = getattr(result, "value", None)
        values[name] = float(value) if value is not None and math.isfinite(value) else None
        seconds[name] = float(getattr(result, "seconds", 0.0))
        error = getattr(result, "error", None) if result is not None else "not returned"
        if error:
            errors[name] = str(error)
    return CellScores(arch, values, seconds, errors, total), True


# --- the cache ------------------------------------------------------------------------------


def config_key(config: BenchConfig, device: torch.device, share: bool) -> str:
    """A short hash of everything that changes a cell's scores or their timings."""
    keyed = {
        "data": config.data,
        "proxies": sorted(config.proxies),
        "seed": config.seed,
        "batch_size": config.batch_size,
        "n_batches": config.n_batches,
        "device": device.type,
        "share": share,
        "network": "NB201Network(C=16,N=5,batchnorm)",
    }
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]


class ScoreCache:
    """Cell scores in a JSON-lines file: one line per scored cell, appended, flushed and synced
    at once so a crash loses at most the cell being scored. Lines from other configurations are
    kept in the file but not used; a torn last line (a crash mid-write) is skipped."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[tuple[str, str], CellScores] = {}
        self.skipped_lines = 0
        self._file: TextIO | None = None
        if self.path is not None and self.path.is_file():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                cell = CellScores(row["arch"], row["values"], row["seconds"], row["errors"])
                cell.total_seconds = float(row["total_seconds"])
                self.entries[(row["config"], cell.arch)] = cell
            except (ValueError, KeyError, TypeError):
                self.skipped_lines += 1

    def get(self, key: str, arch: str) -> CellScores | None:
        return self.entries.get((key, arch))

    def add(self, key: str, cell: CellScores) -> None:
        self.entries[(key, cell.arch)] = cell
        if self.path is None:
            return
        if self._file is None:
            self._file = self._open_for_append(self.path)
        self._file.write(json.dumps({"config": key, **asdict(cell)}, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    @staticmethod
    def _open_for_append(path: Path) -> TextIO:
        """Open for appending, first ending a torn last line so the next record starts afresh."""
        path.parent.mkdir(parents=True, exist_ok=True)
        torn = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        file = open(path, "a")  # noqa: SIM115 (closed by close())
        if torn:
            file.write("\n")
        return file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# --- scoring many cells ---------------------------------------------------------------------


@dataclass
class Scoring:
    """The fixed inputs every cell of a run is scored with, and the cache it reads and fills."""

    batches: Batches
    dataset: Dataset
    scorer: Scorer
    config: BenchConfig
    device: torch.device
    cache: ScoreCache

    def cell(self, arch: str, share: bool) -> tuple[CellScores, bool]:
        """One cell's scores, from the cache when it has them; returns (scores, reused)."""
        key = config_key(self.config, self.device, share)
        cached = self.cache.get(key, arch)
        if cached is not None:
            return cached, True
        scores, keep = score_cell(
            arch, self.batches, self.dataset, self.scorer, self.config, self.device, share
        )
        if keep:
            self.cache.add(key, scores)
        return scores, False


def score_cells(
    archs: Sequence[str], scoring: Scoring, progress: bool = True
) -> tuple[list[CellScores], list[CellScores], int]:
    """Shared scores of every arch and, with ``no_share``, unshared scores of the first
    ``no_share_limit``; returns (shared, unshared, cells reused from the cache).

    A cell's unshared scoring runs right after its shared scoring, so both timings see the same
    load on the machine (a shared CPU's load drifts over minutes). Progress (cells done, seconds
    per cell) goes to stderr."""
    config = scoring.config
    n_unshared = min(config.no_share_limit, len(archs)) if config.no_share else 0
    shared: list[CellScores] = []
    unshared: list[CellScores] = []
    reused = 0
    with tqdm(archs, desc="proxies", unit="cell", file=sys.stderr, disable=not progress) as bar:
        for i, arch in enumerate(bar):
            cell, was_cached = scoring.cell(arch, share=True)
            shared.append(cell)
            reused += was_cached
            if i < n_unshared:
                unshared.append(scoring.cell(arch, share=False)[0])
            bar.set_postfix(reused=reused, s_per_cell=f"{cell.total_seconds:.2f}")
    return shared, unshared, reused


def peak_rss_bytes() -> int:
    """The process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- the benchmark --------------------------------------------------------------------------


@contextmanager
def _open_cache(path: str | Path | None) -> Iterator[ScoreCache]:
    cache = ScoreCache(path)
    try:
        yield cache
    finally:
        cache.close()


def run_proxy_bench(
    cells: Sequence[NB201Cell],
    config: BenchConfig,
    scorer: Scorer | None = None,
    cache_path: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``cells`` with every proxy of ``config`` and report the rank correlations of each
    proxy and ensemble with ground truth, timings and memory, as one JSON-ready dict.

    ``scorer`` defaults to ``winnow.proxies.score_model``; tests pass a stand-in."""
    start = time.perf_counter()
    if scorer is None:
        from winnow.proxies import score_model as scorer
    device = resolve_device(config.device)
    dataset = load_dataset(config.data)
    batches = fixed_batches(dataset, config.n_batches, config.batch_size, config.seed, device)
    archs = [c.arch for c in cells]
    truth = np.array([c.test_accuracy for c in cells], dtype=np.float64)
    with _open_cache(cache_path) as cache:
        scoring = Scoring(batches, dataset, scorer, config, device, cache)
        shared, unshared, reused = score_cells(archs, scoring, progress)
    features = {name: [c.values[name] for c in shared] for name in config.proxies}
    # One split for every figure: each proxy and ensemble is reported on the same evaluation cells
    calibration, evaluation = split_indices(len(cells), config.calibration_fraction, config.seed)
    ranked = {name: features[name] for name in deduplicated(config.proxies)}
    fit = CALIBRATION_FITS[config.calibration_fit]
    calibrated = calibrated_summary(
        features,
        truth,
        calibration,
        evaluation,
        config.seed,
        config.folds,
        fit,
        config.explored_prefix,
    )
    out: dict[str, Any] = {
        "proxies": {
            name: per_proxy_summary(shared, truth, name, evaluation) for name in config.proxies
        },
        "ensembles": {
            "rank": rank_summary(ranked, truth, evaluation, config.explored_prefix),
            "calibrated": {**calibrated, "calibration_fit": config.calibration_fit},
        },
        "suite_seconds_per_arch": _mean_total(shared),
        "sample": len(cells),
        "split": {
            "calibration": len(calibration),
            "evaluation": len(evaluation),
            "folds": config.folds,
            "headline": "spearman_evaluation",
            "explored_prefix": config.explored_prefix,
        },
        "seed": config.seed,
        "data": config.data,
        "batches": {"count": config.n_batches, "size": config.batch_size, "split": "train"},
        "device": str(device),
        "cached_cells_reused": reused,
        "cache_lines_skipped": cache.skipped_lines,
    }
    aznas = aznas_summary(features, truth, evaluation)
    if aznas is not None:  # AZ-NAS's own four proxies, when the run scored them
        out["ensembles"]["aznas"] = aznas
    if config.report_near_copies:
        out["near_copies"] = {
            "pairs": near_copy_table(features),
            "rank_all_proxies": rank_summary(features, truth, evaluation),
        }
    if config.no_share:
        out.update(_no_share_summary(shared, unshared, config.proxies, out["proxies"]))
    out["peak_rss_bytes"] = peak_rss_bytes()
    if device.type == "cuda":
        out["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(device)
    out["wall_seconds"] = round(time.perf_counter() - start, 3)
    return out


def _mean_total(cells: Sequence[CellScores]) -> float | None:
    return round(float(np.mean([c.total_seconds for c in cells])), 5) if cells else None


def _no_share_summary(
    shared: Sequence[CellScores],
    unshared: Sequence[CellScores],
    proxies: Sequence[str],
    per_proxy: dict[str, dict],
) -> dict[str, Any]:
    """Unshared timings next to the shared ones, on the same cells (the first of the sample),
    so the speed-up of sharing passes is measured within one run."""
    same = shared[: len(unshared)]
    for name in proxies:
        per_proxy[name]["no_share_seconds_per_arch"] = round(
            float(np.mean([c.seconds[name] for c in unshared])), 5
        )
    shared_time, unshared_time = _mean_total(same), _mean_total(unshared)
    return {
        "no_share_seconds_per_arch": unshared_time,
        "no_share_cells": len(unshared),
        "suite_seconds_per_arch_on_no_share_cells": shared_time,
        "share_speedup": round(unshared_time / shared_time, 3) if shared_time else None,
    }
