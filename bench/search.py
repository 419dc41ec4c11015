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

**The supernet** (``--supernet``, or ``cascade+supernet`` named among the strategies): the strategy
``cascade+supernet`` is the cascade with the supernet stage (``strategy.supernet``,
``bench_supernet``: by default an nb201 supernet of one cell a stage, trained for
``--supernet-minutes``: the depth ``bench supernet``'s figures were taken at; a full-depth one
trains about 5x fewer epochs in the same time, and no comparison of depths is recorded), reported
beside the plain ``cascade``, so one run compares ``tpe,nsga2,cascade,cascade+supernet``. Training
stays the oracle's; the supernet's two trial stages run for real in this process (the oracle passes
them to its inner executor): the supernet is trained once on the task's training images less the
validation split, stored (the store's ``supernet`` table, its file in the artifact folder:
``artifacts``, default beside the SQLite file) and reused by every later seed's search, and by a
later run on the same store; inherited-accuracy scores are cached by functional hash across seeds,
as proxy scores are. Its entry has the same keys as the others and one more, ``supernet``:
``trained`` (searches of this run that trained it: 1, or 0 when an earlier run's was reused),
``reused`` (those that found it stored), ``failed``, the stored training's ``train_seconds``,
``steps`` and ``epochs`` (steps over the batches of one epoch), ``cells_per_stage`` and ``minutes``,
``scored`` (the searches' ``supernet`` rows), ``computed`` (scoring trials run: the rest came from
the cache), ``score_seconds`` (those scoring trials' seconds, apart from the training's) and
``pruned`` (rows the stage stopped). Its ``wall_seconds`` includes the supernet's training. The
other strategies' keys are unchanged.

**Not comparable with ``cascade``'s**: ``cascade+supernet`` named after ``cascade`` runs after it on
the same store with the same seeds, so its proxy scores and functional hashes come largely from the
cascade's cache: its ``proxy_evaluations`` and ``wall_seconds`` are lower for that alone and do not
compare with ``cascade``'s. Its own costs are the ``supernet`` entry's ``train_seconds`` and
``score_seconds``; compare the strategies by ``best_at`` / ``hypervolume_at``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from winnow.search_space.trial import Status, TrialSpec
from winnow.service.engine import Engine, SearchReport
from winnow.service.engine.supernet import supernet_key
from winnow.service.search_spec import (
    Budget,
    Objective,
    Screen,
    SearchSpec,
    Strategy,
    Supernet,
    Task,
)
from winnow.service.store import Store
from winnow.supernet.seam import steps_per_epoch
from winnow.workers.executor import InProcessExecutor
from winnow.workers.oracle import NB201Oracle
from winnow.workers.run import run_trial
from winnow.workers.supernet_trials import SCORE_STAGE, training_samples

CHECKPOINTS = (25, 50, 100, 200, 500, 1000)
# Hypervolume reference for (accuracy, params) on nb201: no cell is below 10% accuracy or above
# 1.6 M parameters, so every cell counts.
REFERENCES = {"accuracy": 0.10, "params": 1.6e6, "flops": 2.5e8}
PERCENT = {"accuracy"}
WITH_SUPERNET = "cascade+supernet"  # the cascade with strategy.supernet
# The supernet's epochs when a time budget is given: more than fit in it, so the minutes bind.
TIMED_EPOCHS = 1000


def bench_supernet(
    minutes: float = 10.0, cells_per_stage: int | None = 1, **fields: Any
) -> Supernet:
    """The benchmark's ``strategy.supernet``: trained for ``minutes`` (``cells_per_stage``: the
    supernet's depth; None: the space's); ``fields`` set the others (a test's few epochs)."""
    return Supernet(
        **{"epochs": TIMED_EPOCHS, "minutes": minutes, "cells_per_stage": cells_per_stage} | fields
    )


def bench_spec(
    strategy: str,
    seed: int,
    dataset: str,
    budget: int,
    objectives: Sequence[str],
    screen: Screen,
    supernet: Supernet | None = None,
) -> SearchSpec:
    """One search of the benchmark; ``cascade+supernet`` is the cascade with ``supernet``."""
    name, stage = strategy, None
    if strategy == WITH_SUPERNET:
        name, stage = "cascade", supernet or bench_supernet()
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
        strategy=Strategy(
            name=name, rungs=[200], screen=screen, supernet=stage, reuse_across_searches=False
        ),
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
    supernet: Supernet | None = None,
    artifacts: Path | None = None,
) -> dict[str, Any]:
    """The benchmark's JSON (see the module docstring); ``supernet``: ``cascade+supernet``'s
    ``strategy.supernet`` (default ``bench_supernet()``), ``artifacts``: the store's artifact
    folder, where the trained supernet is kept (default: beside the SQLite file)."""
    start = time.perf_counter()
    store = Store(store_url, artifacts=artifacts)
    stages: Counter[str] = Counter()  # the trials run for real (not the oracle's), by stage
    seconds: Counter[str] = Counter()  # and their seconds
    oracle = NB201Oracle(oracle_csv, inner=InProcessExecutor(_counted(stages, seconds)))
    screen = screen or Screen()
    out: dict[str, Any] = {"budget": budget, "seeds": seeds, "objectives": list(objectives)}
    out["strategies"], overheads, sampling = {}, [], []
    for strategy in strategies:
        reports, specs, began, own = [], [], time.perf_counter(), []
        scorings_before, scoring_seconds = stages[SCORE_STAGE], seconds[SCORE_STAGE]
        for seed in range(seeds):
            spec = bench_spec(strategy, seed, dataset, budget, objectives, screen, supernet)
            sink = _supernet_progress(progress) if spec.strategy.supernet else None
            engine = Engine.create(spec, store, oracle, on_event=sink)
            reports.append(engine.run())
            specs.append(spec)
            own += [t.overhead * 1000 for t in engine.tracked.values()]
            sampling += [t.sampling * 1000 for t in engine.tracked.values()]
            if progress:
                progress(f"{strategy} seed {seed}: {_describe(reports[-1], objectives)}")
        out["strategies"][strategy] = _summary(reports, objectives, budget, began)
        out["strategies"][strategy]["overhead_ms_median"] = round(float(np.median(own)), 3)
        if specs[0].strategy.supernet is not None:
            computed = stages[SCORE_STAGE] - scorings_before
            spent = seconds[SCORE_STAGE] - scoring_seconds
            summary = supernet_summary(store, specs[0], reports, computed, spent)
            out["strategies"][strategy]["supernet"] = summary
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


# --- the supernet's figures ------------------------------------------------------------------


def _counted(stages: Counter[str], seconds: Counter[str]) -> Callable[..., Any]:
    def run(spec: TrialSpec, on_epoch: Any = None) -> Any:
        stages[spec.stage] += 1
        start = time.perf_counter()
        try:
            return run_trial(spec, on_epoch)
        finally:
            seconds[spec.stage] += time.perf_counter() - start

    return run


def _supernet_progress(progress: Callable[[str], None] | None) -> Any:
    """An event sink that names the supernet's training on the progress lines (it takes
    minutes, in the first seed's search); None without progress."""
    if progress is None:
        return None

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        if kind == "supernet_epoch":
            progress(
                f"supernet epoch {payload['epoch']}/{payload['epochs']}: {payload['loss']:.3f}"
            )
        elif kind in (
            "supernet_training",
            "supernet_trained",
            "supernet_reused",
            "supernet_failed",
        ):
            progress(f"{kind}: {payload}")

    return on_event


def supernet_summary(
    store: Store,
    spec: SearchSpec,
    reports: Sequence[SearchReport],
    computed: int,
    score_seconds: float = 0.0,
) -> dict[str, Any]:
    """``cascade+supernet``'s ``supernet`` entry (see the module docstring): ``computed``
    scoring trials run in ``score_seconds``."""
    settings = spec.strategy.supernet
    assert settings is not None
    kinds: Counter[str] = Counter()
    rows = []
    for report in reports:
        kinds.update(e.kind for e in store.events(report.search_id))
        rows += [r for r in store.trials(report.search_id) if r.stage == SCORE_STAGE]
    record = store.supernet(supernet_key(spec))
    metrics = record.metrics if record is not None else {}
    steps = metrics.get("supernet.steps")
    per_epoch = _steps_per_epoch(spec)
    return {
        "trained": kinds["supernet_trained"],
        "reused": kinds["supernet_reused"],
        "failed": kinds["supernet_failed"],
        "train_seconds": _rounded(metrics.get("supernet.train_seconds"), 1),
        "steps": None if steps is None else int(steps),
        "epochs": None if steps is None else round(steps / per_epoch, 2),
        "cells_per_stage": settings.cells_per_stage,
        "minutes": settings.minutes,
        "scored": len(rows),
        "computed": computed,
        "score_seconds": round(score_seconds, 1),
        "pruned": sum(r.status == Status.PRUNED for r in rows),
    }


def _steps_per_epoch(spec: SearchSpec) -> int:
    """The supernet's batches in one epoch, as its training counts them (the worker's split,
    ``seam.steps_per_epoch``)."""
    settings = spec.strategy.supernet
    assert settings is not None
    samples = training_samples(spec.task.dataset, settings.validation_fraction, settings.seed)
    return steps_per_epoch(samples, settings.batch_size)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
