"""``winnow bench service``: end-to-end throughput of trivial trials, winnow against Optuna.

- winnow: an embedded server (SQLite in a temporary folder, one search slot per client) and
  ``clients`` SDK clients, each submitting one random-sampler search of ``trials / clients``
  trained trials over a small space and watching it to the end. Trials are trivial (an executor
  that answers at once), so the figure is the service itself: gRPC, the engine's bookkeeping and
  every row and event written to the store.
- Optuna, in the same run: ``clients`` threads, each with its own study in one
  ``RDBStorage`` on a SQLite file, asking a trial, suggesting the same space's parameters and
  telling the value, ``trials / clients`` times.

Prints ``{"winnow_trials_per_s", "optuna_trials_per_s", "ratio", ...}``.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna

from winnow.search_space.spec import parse_space
from winnow.search_space.trial import EpochCallback, Status, TrialResult, TrialSpec
from winnow.service.api.server import ServerConfig, WinnowServer
from winnow.service.client import Client
from winnow.service.store import sqlite_url
from winnow.workers.executor import Executor

SPACE: dict[str, Any] = {
    "name": "bench-service",
    "architecture": {"family": "mlp", "depth": [1, 2, 3], "width": [16, 32, 64, 128]},
    "normalization": ["batchnorm", "layernorm", "none"],
    "optimizer": {"name": "adamw", "lr": {"low": 1e-4, "high": 1e-1, "log": True}},
}


def trivial_accuracy(spec: TrialSpec) -> float:
    """A deterministic stand-in for training: a number in [0, 1) from the candidate's key."""
    digest = hashlib.sha256(spec.candidate.key.encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32


class TrivialExecutor(Executor):
    def submit(self, spec: TrialSpec, on_epoch: EpochCallback | None = None) -> Future[TrialResult]:
        future: Future[TrialResult] = Future()
        future.set_result(TrialResult(Status.OK, {"accuracy": trivial_accuracy(spec)}))
        return future


def _spec(client: int, trials: int) -> dict[str, Any]:
    return {
        "name": f"bench-service-{client}",
        "space": SPACE,
        "task": {"dataset": "digits"},
        "budget": {"max_trials": trials},
        "strategy": {"name": "random", "rungs": [1]},
        "seed": client,
    }


def winnow_rate(folder: Path, trials: int, clients: int) -> tuple[float, int]:
    config = ServerConfig(
        sqlite_url(folder / "winnow.db"),
        "127.0.0.1:0",
        max_concurrent_searches=clients,
        max_queued_searches=clients,
    )
    server = WinnowServer(config, make_executor=TrivialExecutor).start()
    per_client = trials // clients

    def one_client(k: int) -> int:
        with Client(server.address) as client:
            search = client.submit(_spec(k, per_client))
            for event in search.watch():
                last = event
            return last.search["progress"]["trained"]

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            done = sum(pool.map(one_client, range(clients)))
        seconds = time.perf_counter() - start
    finally:
        server.stop(grace=1.0)
    return done / seconds, done


def optuna_rate(folder: Path, trials: int, clients: int) -> tuple[float, int]:
    space = parse_space(SPACE)
    storage = optuna.storages.RDBStorage(sqlite_url(folder / "optuna.db"))
    per_client = trials // clients

    def one_client(k: int) -> int:
        study = optuna.create_study(
            study_name=f"bench-{k}",
            storage=storage,
            sampler=optuna.samplers.RandomSampler(seed=k),
            direction="maximize",
        )
        for _ in range(per_client):
            trial = study.ask()
            candidate = space.suggest_optuna(trial)
            spec = TrialSpec(candidate, "digits")
            study.tell(trial, trivial_accuracy(spec))
        return per_client

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = sum(pool.map(one_client, range(clients)))
    return done / (time.perf_counter() - start), done


def run_service_bench(trials: int, clients: int) -> dict[str, Any]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    with tempfile.TemporaryDirectory(prefix="winnow-bench-service-") as tmp:
        winnow_per_s, winnow_done = winnow_rate(Path(tmp), trials, clients)
        optuna_per_s, optuna_done = optuna_rate(Path(tmp), trials, clients)
    return {
        "trials": trials,
        "clients": clients,
        "winnow_trials": winnow_done,
        "optuna_trials": optuna_done,
        "winnow_trials_per_s": round(winnow_per_s, 1),
        "optuna_trials_per_s": round(optuna_per_s, 1),
        "ratio": round(winnow_per_s / optuna_per_s, 2),
    }
