"""``winnow bench workers``: trials per second through an executor, one worker against two.

The trial is short and fixed (a one-epoch MLP on the bundled digits, the same candidate each
time, a different seed each time). Workers are started and warmed (one trial each, which loads
the dataset) before the clock starts, so the figure is steady-state throughput.
"""

from __future__ import annotations

import time
from typing import Any

from winnow.search_space.candidate import Candidate
from winnow.search_space.trial import Status, TrialSpec
from winnow.workers.pools import PoolConfig, make_pool

CANDIDATE = Candidate(
    architecture={"family": "mlp", "depth": 2, "width": 128, "activation": "relu", "dropout": 0.0},
    optimizer={"name": "adamw", "lr": 3e-3, "batch_size": 64},
)


def trials_per_second(name: str, workers: int, trials: int) -> float:
    with make_pool(PoolConfig(name, workers)) as executor:
        warm = [TrialSpec(CANDIDATE, "digits", seed=-1 - k) for k in range(workers)]
        for future in [executor.submit(spec) for spec in warm]:
            future.result()
        start = time.perf_counter()
        futures = [executor.submit(TrialSpec(CANDIDATE, "digits", seed=k)) for k in range(trials)]
        results = [future.result() for future in futures]
        seconds = time.perf_counter() - start
    failed = [r.error for r in results if r.status != Status.OK]
    if failed:
        raise RuntimeError(f"{len(failed)} benchmark trials failed, e.g. {failed[0]}")
    return trials / seconds


def run_workers_bench(name: str, trials: int) -> dict[str, Any]:
    one = trials_per_second(name, 1, trials)
    two = trials_per_second(name, 2, trials)
    return {
        "executor": name,
        "trials": trials,
        "trials_per_s": round(two, 2),
        "trials_per_s_1_worker": round(one, 2),
        "speedup_2_vs_1": round(two / one, 2),
    }
