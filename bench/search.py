"""``winnow bench search``: search strategies against the NAS-Bench-201 tabular oracle.

Each (strategy, seed) runs one real search through ``Engine`` on the nb201 space, with the
oracle (``winnow.workers.oracle.NB201Oracle``) answering training from the ground-truth CSV and
everything else (hashes, proxies on real images) computed by winnow. The oracle has one
fidelity, so the rungs are one rung of 200 epochs. Trained results are not shared between the
searches of the benchmark (each seed pays for its own training), while proxy scores and
functional hashes are cached in the store by hash, so a second run is cheap.

The JSON reports, per strategy, the best first objective (in %, for accuracy) after 25, 50, ...
candidates trained (what ``budget.max_trials`` counts; with the oracle's one rung, each
candidate is one training run, so these are the training runs too) as median and quartiles
over seeds (``hypervolume_at`` with two objectives), the proxy evaluations run, the cache hits,
the wall time and the engine's median overhead per proposal (ask, hash lookup, bookkeeping and
storage; evaluations excluded); and that median over every proposal of every strategy, with the
median time of the sampler's ask inside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from winnow.service.engine import Engine, SearchReport
from winnow.service.search_spec import Budget, Objective, Screen, SearchSpec, Strategy, Task
from winnow.service.store import Store
from winnow.workers.oracle import NB201Oracle

CHECKPOINTS = (25, 50, 100, 200, 500, 1000)
# Hypervolume reference for (accuracy, params) on nb201: no cell is below 10% accuracy or above
# 1.6 M parameters, so every cell counts.
REFERENCES = {"accuracy": 0.10, "params": 1.6e6, "flops": 2.5e8}
PERCENT = {"accuracy"}


def bench_spec(
    strategy: str, seed: int, dataset: str, budget: int, objectives: Sequence[str], screen: Screen
) -> SearchSpec:
    return SearchSpec(
        name=f"bench-{strategy}-seed{seed}",
        space="nb201",
        task=Task(dataset=dataset),
        objectives=[
            Objective(
                name=name,
                direction="maximize" if name == "accuracy" else "minimize",
                reference=REFERENCES.get(name),
            )
            for name in objectives
        ],
        budget=Budget(max_trials=budget),
        strategy=Strategy(name=strategy, rungs=[200], screen=screen, reuse_across_searches=False),
        seed=seed,
    )


def checkpoints(budget: int) -> list[int]:
    return sorted({c for c in CHECKPOINTS if c <= budget} | {budget})


def at_checkpoints(report: SearchReport, key: str, budget: int) -> dict[int, float]:
    """The value of ``key`` (best or hypervolume) once ``c`` candidates were sent to training
    (``max_trials``'s unit), per ``c``."""
    values: dict[int, float] = {}
    for checkpoint in checkpoints(budget):
        seen = [h[key] for h in report.history if h["candidates"] <= checkpoint]
        values[checkpoint] = seen[-1] if seen else float("nan")
    return values


def quartiles(values: Sequence[float], scale: float) -> dict[str, float]:
    q1, median, q3 = np.nanpercentile(np.asarray(values, dtype=float) * scale, [25, 50, 75])
    return {"median": round(float(median), 4), "q1": round(float(q1), 4), "q3": round(float(q3), 4)}


def run_search_bench(
    oracle_csv: str,
    dataset: str,
    strategies: Sequence[str],
    budget: int,
    seeds: int,
    objectives: Sequence[str] = ("accuracy",),
    store_url: str = "sqlite:///runs/bench-search.db",
    screen: Screen | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    start = time.perf_counter()
    store = Store(store_url)
    oracle = NB201Oracle(oracle_csv)
    screen = screen or Screen()
    out: dict[str, Any] = {"budget": budget, "seeds": seeds, "objectives": list(objectives)}
    out["strategies"], overheads, sampling = {}, [], []
    for strategy in strategies:
        reports, began, own = [], time.perf_counter(), []
        for seed in range(seeds):
            spec = bench_spec(strategy, seed, dataset, budget, objectives, screen)
            engine = Engine.create(spec, store, oracle)
            reports.append(engine.run())
            own += [t.overhead * 1000 for t in engine.tracked.values()]
            sampling += [t.sampling * 1000 for t in engine.tracked.values()]
            if progress:
                progress(f"{strategy} seed {seed}: {_describe(reports[-1], objectives)}")
        out["strategies"][strategy] = _summary(reports, objectives, budget, began)
        out["strategies"][strategy]["overhead_ms_median"] = round(float(np.median(own)), 3)
        overheads += own
    out["engine_overhead_ms_median"] = round(float(np.median(overheads)), 3)
    # the part of it spent in the Optuna sampler (TPE's ask grows with the trials it has seen)
    out["sampler_ms_median"] = round(float(np.median(sampling)), 3)
    out["wall_seconds"] = round(time.perf_counter() - start, 1)
    store.close()
    return out


def _summary(reports, objectives, budget, began) -> dict[str, Any]:
    key = "best" if len(objectives) == 1 else "hypervolume"
    scale = 100.0 if key == "best" and objectives[0] in PERCENT else 1.0
    per_seed = [at_checkpoints(r, key, budget) for r in reports]
    summary = {
        f"{key}_at": {
            str(c): quartiles([s[c] for s in per_seed], scale) for c in checkpoints(budget)
        },
        "proxy_evaluations": sum(r.proxy_evaluations for r in reports),
        "cache_hits": sum(r.cache_hits for r in reports),
        "proposals": sum(r.proposals for r in reports),
        "wall_seconds": round(time.perf_counter() - began, 1),
    }
    return summary


def _describe(report: SearchReport, objectives: Sequence[str]) -> str:
    last = report.history[-1] if report.history else {"best": float("nan"), "hypervolume": 0.0}
    value = last["best"] if len(objectives) == 1 else last["hypervolume"]
    return (
        f"{report.candidates} candidates, {report.proposals} proposals, "
        f"{report.cache_hits} cache hits, {report.proxy_evaluations} proxy runs, final {value:.4f}"
    )
