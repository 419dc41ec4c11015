"""``winnow demo``: the README's main job, end to end through the service.

Starts an embedded server (SQLite under ``--data-dir``, local worker processes, a free
loopback port), submits a joint architecture x normalization x optimizer x quantization search
on the bundled digits data through the client SDK, shows live progress, prints the Pareto
front, writes the best recipe as JSON and as a ``pytorch`` bundle (model.py, train.py: the network
and its training without winnow), stops the server and prints the command that opens the
dashboard on the results. A second run reuses the stored results by hash.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from winnow.search_space.candidate import Candidate
from winnow.service.api.server import ServerConfig, WinnowServer
from winnow.service.client import Client
from winnow.service.store import sqlite_url
from winnow.workers.pools import PoolConfig

# The search `examples/digits-search.yaml` describes (a test keeps the two equal): accuracy
# against model size with the whole cascade: hashing, proxy screening and two training rungs.
DEMO_SPEC: dict[str, Any] = {
    "name": "digits-demo",
    "space": "digits-joint",
    "task": {"dataset": "digits"},
    "objectives": [
        {"name": "accuracy", "direction": "maximize"},
        {"name": "model_bytes", "direction": "minimize", "reference": 300000},
    ],
    "budget": {"max_trials": 30},
    "strategy": {
        "name": "cascade",
        "sampler": "tpe",
        "rungs": [2, 6],
        "reduction_factor": 3,
        "screen": {
            "proxies": ["synflow", "naswot", "params"],
            "keep_fraction": 0.5,
            "min_population": 4,
            "calibrate_after": 4,
        },
    },
    "seed": 0,
}


LOCAL = PoolConfig("local")  # the demo's default: local worker processes


def run_demo(
    data_dir: Path,
    as_json: bool,
    max_trials: int | None = None,
    pool: PoolConfig = LOCAL,
) -> int:
    data_dir = data_dir.expanduser().absolute()  # the printed paths and URL work from anywhere
    data_dir.mkdir(parents=True, exist_ok=True)
    db_url = sqlite_url(data_dir / "winnow.db")
    spec = DEMO_SPEC | ({"budget": {"max_trials": max_trials}} if max_trials else {})
    config = ServerConfig(db_url, "127.0.0.1:0", pool, max_concurrent_searches=1)
    server = WinnowServer(config).start()
    say = _stderr if as_json else print
    try:
        with Client(server.address) as client:
            say(
                f"winnow demo: server on {server.address}, store {db_url}, executor {pool.executor}"
            )
            search = client.submit(spec)
            say(f"searching digits-joint (search {search.id}); progress on stderr")
            info = search.wait(progress=True)
            if info["status"] != "finished":
                raise RuntimeError(f"search {search.id} ended {info['status']}: {info['error']}")
            front = search.pareto()
            recipe_path = data_dir / f"recipe-{search.id}.json"
            search.export(path=recipe_path)
            bundle_path = data_dir / f"pytorch-{search.id}"
            search.export(path=bundle_path, format="pytorch")
    finally:
        server.stop(grace=1.0)
    say(_front_table(front))
    say(f"best recipe (highest accuracy on the front): {recipe_path}")
    say(
        f"as plain PyTorch (model.py, train.py; no winnow needed): {bundle_path}"
        f" -- run: python {bundle_path / 'train.py'}"
    )
    say(f"open the dashboard on these results: winnow ui --db {db_url}")
    if as_json:
        points = [{k: v for k, v in p.items() if k != "candidate"} for p in front]
        result = {
            "search_id": search.id,
            "pareto": points,
            "recipe_path": str(recipe_path),
            "pytorch_bundle": str(bundle_path),
            "db_url": db_url,
        }
        print(json.dumps(result, sort_keys=True), flush=True)
    return 0


CONFIRM_KEYS = ("confirmed", "single_run", "on_confirmed_front")  # a confirmed point's entries


def _front_table(front: list[dict[str, Any]]) -> str:
    if not front:
        return "Pareto front: empty (no trial trained yet)"
    skip = ("trial_id", "epochs", "candidate", *CONFIRM_KEYS)
    names = [k for k in front[0] if k not in skip]
    header = f"{'trial':>5}  " + "  ".join(f"{n:>12}" for n in names) + "  recipe"
    lines = [f"Pareto front ({len(front)} trial{'' if len(front) == 1 else 's'}):", header]
    for point in front:
        values = "  ".join(f"{point[n]:>12.6g}" for n in names)
        recipe = Candidate.model_validate(point["candidate"]).describe()
        lines.append(f"{point['trial_id']:>5}  {values}  {recipe}{_confirmed_text(point)}")
    return "\n".join(lines)


def _confirmed_text(point: dict[str, Any]) -> str:
    """A confirmed point's note: its seeds, each objective's std and bound, and whether it fell
    off the front (its values above are then the confirmed means)."""
    confirmed = point.get("confirmed")
    if confirmed is None:
        return ""
    figures = [
        f"{name} std {figure['std']:.3g}, bound {figure['lower']:.6g}"
        for name, figure in confirmed.items()
        if name != "seeds" and figure["std"] is not None
    ]
    seeds = confirmed["seeds"]
    notes = [*figures]
    if point.get("on_confirmed_front") is False:
        notes.append("OFF the front once confirmed")
    said = f": {'; '.join(notes)}" if notes else ""
    return f"  [{_means_of(seeds)}{said}]"


def _means_of(seeds: int) -> str:
    """``means of 3 seeds``, ``the value of 1 seed`` (one run has no mean to speak of)."""
    return f"means of {seeds} seeds" if seeds != 1 else "the value of 1 seed"


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
