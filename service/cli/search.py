"""``winnow search run|resume|list`` and ``winnow bench search``.

    winnow search run examples/digits-search.yaml --store sqlite:///runs/winnow.db --json
    winnow search resume SEARCH_ID --store sqlite:///runs/winnow.db
    winnow search list --store sqlite:///runs/winnow.db
    winnow bench search --oracle nb201:CSV --data npz:PATH --strategies random,tpe,cascade \\
        --budget 100 --seeds 10 --json [--objectives accuracy,params]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from tqdm import tqdm

from winnow.service.store import DEFAULT_URL as DEFAULT_STORE


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def _progress_bar(total: int, quiet: bool):
    """An engine event callback that shows trained trials and the best result on stderr."""
    if quiet:
        return None, None
    bar = tqdm(total=total, desc="search", unit="trial", file=sys.stderr)
    state: dict[str, Any] = {}

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        engine = state.get("engine")
        if engine is None:
            return
        bar.n = min(engine.counts["trained"], total)
        bar.set_postfix(
            proposals=engine.counts["proposals"],
            hits=engine.counts["cache_hits"],
            pruned=engine.counts["pruned"],
            hv=f"{engine.hypervolume():.4g}",
            refresh=False,
        )
        bar.refresh()

    return on_event, state


def _run_engine(make_engine, total: int, args: argparse.Namespace) -> int:
    on_event, state = _progress_bar(total, args.quiet)
    engine = make_engine(on_event)
    if state is not None:
        state["engine"] = engine
    try:
        report = engine.run()
    finally:
        engine.executor.close()
    out = asdict(report)
    out.pop("history")
    if args.json:
        _print_json(out)
    else:
        print(f"search {report.search_id}: {report.trained} trained, {len(report.front)} on front")
        for point in report.front:
            print(json.dumps(point, sort_keys=True))
    return 0


def cmd_search_run(args: argparse.Namespace) -> int:
    from winnow.service.engine import Engine
    from winnow.service.search_spec import load_search_spec
    from winnow.service.store import Store
    from winnow.workers.executor import InProcessExecutor

    spec = load_search_spec(args.spec)
    store = Store(args.store)

    def make(on_event):
        return Engine.create(
            spec, store, InProcessExecutor(), device=args.device, on_event=on_event
        )

    print(f"winnow: storing the search in {args.store}", file=sys.stderr)
    return _run_engine(make, spec.budget.max_trials, args)


def cmd_search_resume(args: argparse.Namespace) -> int:
    from winnow.service.engine import Engine
    from winnow.service.store import Store
    from winnow.workers.executor import InProcessExecutor

    store = Store(args.store)

    def make(on_event):
        return Engine.resume(
            store, args.search_id, InProcessExecutor(), device=args.device, on_event=on_event
        )

    total = json.loads(store.search(args.search_id).spec_json)["budget"]["max_trials"]
    return _run_engine(make, total, args)


def cmd_search_list(args: argparse.Namespace) -> int:
    from winnow.service.store import Store

    for row in Store(args.store).searches():
        _print_json({"id": row.id, "name": row.name, "status": row.status, "task": row.task_key})
    return 0


def cmd_bench_search(args: argparse.Namespace) -> int:
    from winnow.bench.search import run_search_bench
    from winnow.search_space.datasets import load_dataset
    from winnow.service.search_spec import Screen

    kind, _, path = args.oracle.partition(":")
    if kind != "nb201" or not path:
        raise ValueError(f"--oracle takes nb201:CSV, not {args.oracle!r}")
    load_dataset(args.data)  # a bad dataset is an input error: fail before any work
    screen_fields: dict[str, Any] = {}
    if args.screen_proxies:
        screen_fields["proxies"] = [p.strip() for p in args.screen_proxies.split(",")]
    if args.keep_fraction:
        screen_fields["keep_fraction"] = args.keep_fraction
    result = run_search_bench(
        path,
        args.data,
        [s.strip() for s in args.strategies.split(",")],
        args.budget,
        args.seeds,
        objectives=[o.strip() for o in args.objectives.split(",")],
        store_url=args.store,
        screen=Screen(**screen_fields),
        progress=None if args.quiet else lambda line: print(line, file=sys.stderr, flush=True),
    )
    _print_json(result)
    return 0


def add_search_commands(commands, bench_commands) -> None:
    search = commands.add_parser("search", help="run, resume and list searches")
    sub = search.add_subparsers(dest="search_command", required=True)
    run = sub.add_parser("run", help="run a search from a spec file (YAML or JSON)")
    run.add_argument("spec")
    resume = sub.add_parser("resume", help="resume a stopped or crashed search")
    resume.add_argument("search_id")
    listing = sub.add_parser("list", help="the searches in a store")
    for parser in (run, resume, listing):
        parser.add_argument("--store", default=DEFAULT_STORE, help="database URL (SQLite/PG)")
    for parser in (run, resume):
        parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    run.set_defaults(func=cmd_search_run)
    resume.set_defaults(func=cmd_search_resume)
    listing.set_defaults(func=cmd_search_list)

    bs = bench_commands.add_parser("search", help="search strategies on the NB201 oracle")
    bs.add_argument("--oracle", required=True, help="nb201:CSV of arch,test_accuracy")
    bs.add_argument("--data", required=True, help="images the proxies score on, e.g. npz:PATH")
    bs.add_argument("--strategies", default="random,tpe,cascade")
    bs.add_argument("--budget", type=int, default=100, help="trained trials per search")
    bs.add_argument("--seeds", type=int, default=10)
    bs.add_argument("--objectives", default="accuracy", help="e.g. accuracy,params")
    bs.add_argument("--store", default="sqlite:///runs/bench-search.db", help="cache database")
    bs.add_argument(
        "--screen-proxies",
        default="synflow,params,flops",
        help="the cascade's proxies, comma-separated (default: the data-independent ones, "
        "about 0.1 s a cell on one CPU core)",
    )
    bs.add_argument("--keep-fraction", type=float, help="the cascade's screening fraction")
    bs.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    bs.add_argument("--quiet", action="store_true", help="no per-search lines on stderr")
    bs.set_defaults(func=cmd_bench_search)
