"""``winnow search run|resume|list``: searches in this process, on a store.

    winnow search run examples/digits-search.yaml --db sqlite:///runs/winnow.db --json
    winnow search run examples/digits-search.yaml --reproducible   # the same front every run
    winnow search resume SEARCH_ID --db sqlite:///runs/winnow.db
    winnow search list --db sqlite:///runs/winnow.db

``--db`` (formerly ``--store``, still accepted) defaults to ``$WINNOW_DB``.

The engine, the store and the workers import torch, optuna and SQLAlchemy: handlers import them
when they run.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from winnow.records import front_note
from winnow.service.cli.options import db_option
from winnow.service.cli.output import print_json, search_exit_code


def _progress_bar(total: int, quiet: bool):
    """An engine event callback that shows on stderr the candidates sent to training, the
    front's size and leader, and the running trials' epochs."""
    if quiet:
        return None, None
    from tqdm import tqdm

    from winnow.service.progress_text import RunningTrials

    bar = tqdm(total=total, desc="search", unit="trial", file=sys.stderr)
    state: dict[str, Any] = {}
    running = RunningTrials()

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        running.observe(kind, payload)
        engine = state.get("engine")
        if engine is None:
            return
        bar.n = min(engine.counts["candidates"], total)  # max_trials counts candidates
        bar.set_postfix_str(engine_bar_postfix(engine, running), refresh=False)
        bar.refresh()

    return on_event, state


def engine_bar_postfix(engine: Any, running: Any) -> str:
    """``12 proposals, 0 hits, 3 pruned; front 2 points; best accuracy: #4 accuracy=0.93
    params=1.2e+04; HV 0.41; running #5 epoch 2/3`` for an ``Engine`` and its ``RunningTrials``."""
    from winnow.service.progress_text import front_text, hypervolume_text

    counts, progress = engine.counts, engine.progress()
    order = [o.name for o in engine.objectives]
    parts = [
        f"{counts['proposals']} proposals, {counts['cache_hits']} hits, {counts['pruned']} pruned",
        front_text(progress, order),
        hypervolume_text(progress),
        running.text(),
    ]
    return "; ".join(part for part in parts if part)


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
    error = engine.store.search(report.search_id).error
    if error:
        print(f"winnow: search {report.search_id} {report.status}: {error}", file=sys.stderr)
    if args.json:
        print_json(out)
    else:
        print(
            f"search {report.search_id}: {report.candidates} candidates "
            f"({report.trained} runs), {len(report.front)} on front"
        )
        note = front_note(report.front_epochs, report.top_epochs)
        if note:
            print(note)
        from winnow.service.progress_text import ladder_text

        ladder = ladder_text({"evidence_ladder": report.evidence_ladder}, digits=3)
        if ladder:
            print(f"evidence ladder: {ladder}")
        for point in report.front:
            print(json.dumps(point, sort_keys=True))
    return search_exit_code(report.status)


def cmd_search_run(args: argparse.Namespace) -> int:
    from winnow.service.engine import Engine
    from winnow.service.search_spec import load_search_spec
    from winnow.service.store import Store
    from winnow.workers.executor import InProcessExecutor

    spec = load_search_spec(args.spec)
    if args.reproducible:  # the spec's field, set from the command line
        spec = spec.model_copy(update={"reproducible": True})
    store = Store(args.db)

    def make(on_event):
        return Engine.create(
            spec, store, InProcessExecutor(), device=args.device, on_event=on_event
        )

    print(f"winnow: storing the search in {args.db}", file=sys.stderr)
    return _run_engine(make, spec.budget.max_trials, args)


def cmd_search_resume(args: argparse.Namespace) -> int:
    from winnow.service.engine import Engine
    from winnow.service.engine.readout import stored_spec
    from winnow.service.store import Store
    from winnow.workers.executor import InProcessExecutor

    store = Store(args.db)

    def make(on_event):
        return Engine.resume(
            store, args.search_id, InProcessExecutor(), device=args.device, on_event=on_event
        )

    total = stored_spec(store.search(args.search_id).spec_json).spec.budget.max_trials
    return _run_engine(make, total, args)


def cmd_search_list(args: argparse.Namespace) -> int:
    from winnow.service.store import Store

    for row in Store(args.db).searches():
        print_json({"id": row.id, "name": row.name, "status": row.status, "task": row.task_key})
    return 0


def add_search_commands(commands: Any) -> None:
    search = commands.add_parser("search", help="run, resume and list searches")
    sub = search.add_subparsers(dest="search_command", required=True)
    run = sub.add_parser("run", help="run a search from a spec file (YAML or JSON)")
    run.add_argument("spec")
    run.add_argument(
        "--reproducible",
        action="store_true",
        help="the same front every run: no results reused from other searches, one training "
        "at a time (sets the spec's reproducible: true)",
    )
    resume = sub.add_parser("resume", help="resume a stopped or crashed search")
    resume.add_argument("search_id")
    listing = sub.add_parser("list", help="the searches in a store")
    for parser in (run, resume, listing):
        db_option(parser)
    for parser in (run, resume):
        parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    run.set_defaults(func=cmd_search_run)
    resume.set_defaults(func=cmd_search_resume)
    listing.set_defaults(func=cmd_search_list)
