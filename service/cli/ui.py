"""``winnow ui`` (the Streamlit dashboard) and ``winnow bench ui`` (how fast its Search page opens).

    winnow ui --db sqlite:///runs/winnow.db [--server HOST:PORT] [--port 8501] [--headless]
    winnow bench ui --trials 10000 --json

``bench ui`` seeds a realistic search into a fresh SQLite store (:func:`seed_search`: real
candidates sampled from the digits joint space, the cascade's rows and events, metrics made by a
synthetic model of the recipe) and opens the Search page with Streamlit's ``AppTest``, which runs
the page's script as the server would, without a browser: cold (empty caches), warm, and the
trial table's next page. The tests seed their stores with the same function.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import make_url

from winnow.records import EventRecord, TrialRecord
from winnow.service.engine.pareto import pareto_front, search_hypervolume
from winnow.service.search_spec import SearchSpec, parse_search_spec
from winnow.service.store import Store, sqlite_url

# The dashboard script, found as a module (not by a path relative to this file).
APP = Path(importlib.util.find_spec("winnow.ui.app").origin)

# --- seeding ------------------------------------------------------------------------------------


def _params(candidate: dict[str, Any]) -> tuple[int, int]:
    """(hidden, head) parameter counts of a digits MLP (64 inputs, 10 classes); other families
    get a size drawn from their key, as only the MLP's is cheap to write down."""
    arch = candidate["architecture"]
    if arch.get("family") != "mlp":
        rng = np.random.default_rng(zlib.crc32(json.dumps(arch, sort_keys=True).encode()))
        return int(rng.integers(50_000, 1_500_000)), 650
    width, depth = arch["width"], arch["depth"]
    hidden = 64 * width + width + (depth - 1) * (width * width + width)
    return hidden, width * 10 + 10


def _bits(candidate: dict[str, Any]) -> tuple[dict[str, int], int]:
    quant = candidate.get("quantization") or {}
    bits = quant.get("weight_bits", 32)
    return (bits if isinstance(bits, dict) else {"*": bits}), quant.get("activation_bits", 32)


def _quality(candidate: dict[str, Any], rng: np.random.Generator) -> float:
    """A converged accuracy: wider and deeper help, normalization and a sensible learning rate
    help, low bits hurt; plus noise, so the front is not a formula."""
    arch, opt = candidate["architecture"], candidate["optimizer"]
    weight_bits, activation_bits = _bits(candidate)
    quality = 0.86 + 0.025 * np.log2(arch.get("width", 64) / 64) + 0.01 * arch.get("depth", 1)
    quality += {"batchnorm": 0.02, "layernorm": 0.012, "rmsnorm": 0.01}.get(
        candidate.get("normalization", "none"), -0.02
    )
    good_lr = {"sgd": 0.08, "adamw": 0.003, "lion": 3e-4}.get(opt["name"], 0.01)
    quality -= 0.02 * abs(np.log10(opt["lr"] / good_lr))
    quality -= 0.05 * (min(weight_bits.values()) <= 4) + 0.01 * (activation_bits <= 8)
    return float(quality + rng.normal(0, 0.012))


def _train_metrics(candidate: dict, quality: float, epochs: int, rng) -> dict[str, Any]:
    hidden, head = _params(candidate)
    weight_bits, _ = _bits(candidate)
    bits = weight_bits.get("hidden", weight_bits.get("*", 32))
    head_bits = weight_bits.get("head", weight_bits.get("*", 32))
    accuracy = quality - 0.25 * np.exp(-epochs / 2.0) + rng.normal(0, 0.005)
    curve = 2.3 * np.exp(-np.arange(1, epochs + 1) / 1.5) + (1 - quality) + rng.normal(0, 0.01)
    return {
        "accuracy": float(np.clip(accuracy, 0.1, 0.995)),
        "params": hidden + head,
        "model_bytes": int(hidden * bits / 8 + head * head_bits / 8),
        "latency_ms": float(0.05 + hidden / 2e6 + rng.normal(0, 0.005) ** 2),
        # the loss per epoch, which the row keeps in its own column
        "loss_curve": [round(float(v), 4) for v in curve],
    }


def _proxy_metrics(candidate: dict, quality: float, rng) -> dict[str, float]:
    hidden, head = _params(candidate)
    return {
        "proxy.synflow": float(np.log(hidden + head) * 3 + rng.normal(0, 1.0)),
        "proxy.naswot": float(400 * quality + rng.normal(0, 6.0)),
        "proxy.params": float(hidden + head),
    }


class _Seeder:
    """Walks the cascade for ``trials`` proposals, as the engine would: hash hits become
    ``duplicate`` rows, the proxy screen keeps the better half of the recent population, rung 0
    trains 2 epochs, the best third of rung 0 goes on to 6 epochs."""

    def __init__(self, spec: SearchSpec, search_id: str, rng, start: float) -> None:
        self.spec, self.search_id, self.rng, self.clock = spec, search_id, rng, start
        self.rows: list[TrialRecord] = []
        self.events: list[EventRecord] = []
        self.scores: list[float] = []
        self.rung0: list[float] = []
        self.done: dict[str, dict] = {}  # top-rung metrics by structural hash
        self.points: list[list[float]] = []
        self.front: list[list[float]] = []
        self.hv = 0.0

    def row(
        self,
        number,
        candidate,
        stage,
        epochs,
        rung,
        status,
        metrics,
        seconds,
        error=None,
        reused=False,
    ):
        self.clock += seconds + float(self.rng.exponential(0.05))
        structural = candidate.structural
        self.rows.append(
            TrialRecord(
                id=None,
                search_id=self.search_id,
                number=number,
                stage=stage,
                epochs=epochs,
                rung=rung,
                status=status,
                candidate=candidate.json,
                candidate_key=candidate.key,
                structural_hash=structural,
                functional_hash="f" + structural[:15],
                metrics={k: v for k, v in metrics.items() if k != "loss_curve"},
                loss_curve=metrics.get("loss_curve", []),
                error=error,
                reused=reused,
                seconds=seconds,
                device="cpu",
                host="seed",
                created_at=self.clock - seconds,
                finished_at=self.clock,
            )
        )
        if stage != "proxy":
            self.event("trial", {"number": number, "stage": stage, "status": status})

    def event(self, kind: str, payload: dict[str, Any]) -> None:
        self.events.append(EventRecord(None, self.search_id, self.clock, kind, payload))

    def propose(self, number: int, candidate) -> None:
        top = len(self.spec.strategy.rungs) - 1
        if candidate.structural in self.done:
            metrics = self.done[candidate.structural]
            self.row(
                number,
                candidate,
                "train",
                self.spec.strategy.rungs[top],
                top,
                "duplicate",
                metrics,
                0.0,
                reused=True,
            )
            return self.complete(number, metrics)
        quality = _quality(candidate.data, self.rng)
        if self.rng.random() < 0.01:
            return self.row(number, candidate, "proxy", 0, -1, "failed", {}, 0.02, "proxy failed")
        metrics = _proxy_metrics(candidate.data, quality, self.rng)
        score = metrics["proxy.naswot"] / 100 - metrics["proxy.params"] / 1e6
        recent = self.scores[-200:]
        self.scores.append(score)
        kept = len(recent) < 10 or score >= float(np.quantile(recent, 0.5))
        metrics["screen.score"] = score
        status = "ok" if kept else "pruned"
        error = None if kept else "proxy screen: below the kept half"
        self.row(number, candidate, "proxy", 0, -1, status, metrics, 0.1, error)
        if kept:
            self.train(number, candidate, quality)

    def train(self, number: int, candidate, quality: float) -> None:
        for rung, epochs in enumerate(self.spec.strategy.rungs):
            if self.rng.random() < 0.03:
                self.row(
                    number,
                    candidate,
                    "train",
                    epochs,
                    rung,
                    "failed",
                    {},
                    0.3 * epochs,
                    "non-finite loss at epoch 1",
                )
                return
            metrics = _train_metrics(candidate.data, quality, epochs, self.rng)
            self.row(number, candidate, "train", epochs, rung, "ok", metrics, 0.5 * epochs)
            if rung == len(self.spec.strategy.rungs) - 1:
                self.done[candidate.structural] = metrics
                return self.complete(number, metrics)
            self.rung0.append(metrics["accuracy"])
            if metrics["accuracy"] < float(np.quantile(self.rung0[-300:], 2 / 3)):
                return

    def complete(self, number: int, metrics: dict) -> None:
        """The engine's ``front`` event: hypervolume after each completion (recomputed only
        when the point joins the front; otherwise it cannot change)."""
        point = [float(metrics[o.name]) for o in self.spec.objectives]
        self.points.append(point)
        candidates = [*self.front, point]
        keep = pareto_front(candidates, self.spec.directions)
        if len(candidates) - 1 in keep:
            self.front = [candidates[i] for i in keep]
            self.hv = search_hypervolume(self.spec.objectives, self.front)
        self.event("front", {"number": number, "hypervolume": self.hv})


class _Proposal:
    def __init__(self, candidate) -> None:
        from winnow.search_space.canonical import structural_hash

        self.json, self.key = candidate.canonical_json(), candidate.key
        self.data = json.loads(self.json)
        self.structural = structural_hash(candidate)


def seed_search(
    store: Store, trials: int, seed: int = 0, status: str = "finished", space: str | None = None
) -> str:
    """Store a search of ``trials`` proposals (see :class:`_Seeder`); returns its id. About 5%
    of proposals repeat an earlier candidate, as samplers do, and become hash hits."""
    # the demo's search (imported here: demo.py loads gRPC, which other commands need not)
    from winnow.service.demo import DEMO_SPEC

    data = {**DEMO_SPEC, "name": "seeded-digits", "space": space or DEMO_SPEC["space"]}
    spec = parse_search_spec(data | {"seed": seed, "budget": {"max_trials": trials}})
    rng = np.random.default_rng(seed)
    search_id = store.create_search(spec.name, spec.task.key, spec.to_json(), status=status)
    proposals = [_Proposal(c) for c in spec.search_space.sample(trials, seed=seed)]
    seeder = _Seeder(spec, search_id, rng, start=time.time() - 2.0 * trials)
    seeder.event("search_started", {"name": spec.name})
    for number, proposal in enumerate(proposals):
        if number > 20 and rng.random() < 0.05:
            proposal = proposals[int(rng.integers(0, number))]
        seeder.propose(number, proposal)
    if status == "finished":
        trained = sum(1 for r in seeder.rows if r.stage == "train" and not r.reused)
        hv = search_hypervolume(spec.objectives, seeder.points)
        seeder.event("search_finished", {"status": status, "trained": trained, "hv": hv})
    with store.batch():
        store.add_trials(seeder.rows)
        store.add_events(seeder.events)
    return search_id


# --- winnow ui ----------------------------------------------------------------------------------


def _check_db(url: str) -> None:
    """A SQLite path that does not exist is a typo, not a new store: say so before starting."""
    parsed = make_url(url)
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if path not in (None, "", ":memory:") and not Path(path).exists():
        raise ValueError(f"--db: no SQLite database at {path}")


def streamlit_command(address: str, port: int, headless: bool = True) -> list[str]:
    """``streamlit run`` on the dashboard: on ``address:port`` only, sending no usage stats."""
    options = {
        "server.address": address,
        "server.port": port,
        "server.headless": "true" if headless else "false",
        "browser.gatherUsageStats": "false",
        "client.toolbarMode": "viewer",  # no "Deploy" menu: this is a tool, not an app to ship
    }
    flags = [part for name, value in options.items() for part in (f"--{name}", str(value))]
    return [sys.executable, "-m", "streamlit", "run", str(APP), *flags]


def cmd_ui(args: argparse.Namespace) -> int:
    if not args.db and not args.server:
        raise ValueError("give --db URL (a store) or --server HOST:PORT (a running winnow serve)")
    if args.db:
        _check_db(args.db)
    token = Path(args.token_file).read_text().strip() if args.token_file else args.token
    env = os.environ | {
        "WINNOW_UI_DB": args.db or "",
        "WINNOW_UI_SERVER": args.server or "",
        "WINNOW_UI_TOKEN": token or "",
    }
    command = streamlit_command(args.address, args.port, args.headless)
    print(f"winnow: dashboard on http://{args.address}:{args.port}", file=sys.stderr, flush=True)
    # Streamlit takes this process over, so Ctrl-C and SIGTERM reach its server directly and
    # no orphaned server outlives a stopped `winnow ui`.
    os.execve(sys.executable, command, env)
    return 0  # not reached


# --- winnow bench ui ----------------------------------------------------------------------------


def _timed(run: Any) -> float:
    start = time.perf_counter()
    run()
    return round(time.perf_counter() - start, 3)


def bench_ui(url: str, search_id: str) -> dict[str, Any]:
    """Seconds to run the Search page's script cold (a fresh process: every query and figure),
    warm (cached reads: a live refresh with nothing new), and to show the next table page."""
    from streamlit.testing.v1 import AppTest

    os.environ["WINNOW_UI_DB"], os.environ["WINNOW_UI_SERVER"] = url, ""
    Store(url).close()  # migrations run once here, not inside the timed page
    app = AppTest.from_file(str(APP), default_timeout=120)
    app.query_params["search"] = search_id
    cold = _timed(app.run)
    if app.exception:
        raise RuntimeError(f"the Search page failed: {app.exception[0].message}")
    warm = _timed(app.run)
    next_page = _timed(app.button(key="t-next").click().run)
    return {
        "search_page_seconds": cold,
        "search_page_warm_seconds": warm,
        "table_next_page_seconds": next_page,
    }


def cmd_bench_ui(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as folder:
        url = args.db or sqlite_url(Path(folder) / "bench-ui.db")
        store = Store(url)
        seconds = time.perf_counter()
        search_id = seed_search(store, args.trials, seed=args.seed)
        seeded = round(time.perf_counter() - seconds, 3)
        rows = len(store.trials(search_id))
        store.close()
        result = {"trials": args.trials, "rows": rows, "seed_seconds": seeded}
        result |= bench_ui(url, search_id)
    print(json.dumps(result, sort_keys=True) if args.json else result, flush=True)
    return 0


def add_ui_commands(commands: Any, bench_commands: Any) -> None:
    ui = commands.add_parser("ui", help="the dashboard (Streamlit) on a store or a server")
    ui.add_argument("--db", help="a store URL, e.g. sqlite:///runs/winnow.db")
    ui.add_argument("--server", help="a winnow server, HOST:PORT (also what cancelling needs)")
    ui.add_argument("--token", default=os.environ.get("WINNOW_TOKEN"), help="the server's token")
    ui.add_argument("--token-file", help="read the server's token from a file")
    ui.add_argument("--address", default="127.0.0.1", help="where the dashboard listens")
    ui.add_argument("--port", type=int, default=8501)
    ui.add_argument("--headless", action="store_true", help="do not open a browser")
    ui.set_defaults(func=cmd_ui)
    bench = bench_commands.add_parser("ui", help="how fast the Search page opens on a big search")
    bench.add_argument("--trials", type=int, default=10_000, help="proposals in the seeded search")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--db", help="seed into this store instead of a temporary SQLite file")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(func=cmd_bench_ui)
