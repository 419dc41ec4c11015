"""``winnow serve``, the client commands on the SDK, and ``winnow demo``.

    winnow serve --db sqlite:///runs/winnow.db --address 127.0.0.1:50051 [--token-file F]
    winnow submit examples/digits-search.yaml [--wait]
    winnow status ID | winnow list | winnow pareto ID [--json] | winnow cancel ID
    winnow importance ID [--fidelity EPOCHS] [--evaluator ped-anova|fanova] [--json]
    winnow export ID [--trial N] --out recipe.json [--format recipe]
    winnow demo [--json]

Client commands find the server with ``--address`` (or ``WINNOW_ADDRESS``) and the token with
``--token``/``--token-file`` (or ``WINNOW_TOKEN``/``WINNOW_TOKEN_FILE``); ``serve`` opens ``--db``
(or ``WINNOW_DB``). The server, the SDK (gRPC) and the demo
are imported by the handlers that use them.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from winnow.records import TERMINAL
from winnow.service import env
from winnow.service.cli.options import (
    client_options,
    db_option,
    non_negative_float,
    positive_int,
)
from winnow.service.cli.output import print_json, search_exit_code
from winnow.workers.pools import DEFAULT_TRIAL_TIMEOUT, EXECUTORS, PoolConfig

# --- logging ----------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging(fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(message)s")
    )
    root = logging.getLogger("winnow")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


# --- winnow serve -----------------------------------------------------------------------------


def _token(args: argparse.Namespace) -> str | None:
    return env.token(args.token, args.token_file)


def cmd_serve(args: argparse.Namespace) -> int:
    from winnow.service.api.server import ServerConfig, WinnowServer

    _configure_logging(args.log_format)
    config = ServerConfig(
        db_url=args.db,
        address=args.address,
        pool=_pool_config(args),
        max_concurrent_searches=args.max_concurrent_searches,
        max_queued_searches=args.max_queued_searches,
        max_params=args.max_params or None,  # 0: no cap; ServerConfig refuses a negative one
        token=_token(args),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        data_roots=tuple(args.data_root),
        allowed_modules=tuple(args.allow_module),
        artifacts=args.artifacts,
    )
    server = WinnowServer(config).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    logging.getLogger("winnow.server").info("signal received: draining")
    server.stop(grace=args.grace)
    return 0


# --- client commands --------------------------------------------------------------------------


def _client(args: argparse.Namespace):
    from winnow.service.client import Client

    return Client(args.address, token=_token(args), tls_ca=args.tls_ca, timeout=args.timeout)


def cmd_submit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        search = client.submit(args.spec, request_id=args.request_id, warm_start=args.warm_start)
        info = search.wait(progress=not args.quiet) if args.wait else search.info()
    _report(info, args.json)
    return search_exit_code(info["status"])


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.search(args.search_id).info()
    _report(info, args.json)
    return search_exit_code(info["status"])


def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for info in client.searches():
            row = {k: info[k] for k in ("id", "name", "status", "created_at")}
            if args.json:
                print_json(row)
            else:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created_at"]))
                print(f"{row['id']}  {row['status']:<9}  {when}  {row['name']}")
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    from winnow.records import front_note
    from winnow.service.demo import _front_table

    with _client(args) as client:
        front = client.search(args.search_id).front()
    if args.json:  # the points, each with its fidelity ("epochs")
        print_json(front["points"])
        return 0
    note = front_note(front["epochs"], front["top_epochs"])
    if note:
        print(note)
    print(_front_table(front["points"]))
    return 0


def cmd_importance(args: argparse.Namespace) -> int:
    with _client(args) as client:
        search = client.search(args.search_id)
        report = search.importance(args.fidelity, args.evaluator, args.min_trials)
    if args.json:  # what GetImportance gives
        print_json(report)
        return 0
    print(importance_table(report))
    return 0


def importance_table(report: dict[str, Any]) -> str:
    """Each fidelity's and objective's parameters, highest first, one line each."""
    found = report["importances"]
    if not found:
        return f"no fidelity has {report['min_trials']} trained results yet (--min-trials)"
    lines = [f"importance ({report['evaluator']})"]
    for item in found:
        lines.append(
            f"{item['objective']} at {item['epochs']} epochs, over {item['trials']} trials:"
        )
        width = max((len(name) for name in item["params"]), default=0)
        lines += [f"  {name:<{width}}  {value:.3f}" for name, value in item["params"].items()]
        if not item["params"]:
            lines.append("  (the objective does not vary)")
        if item["left_out"]:
            lines.append(f"  left out (not in every trial): {', '.join(item['left_out'])}")
        if item.get("warning"):  # as the dashboard's bars warn
            lines.append(f"  warning: {item['warning']}")
    return "\n".join(lines)


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.search(args.search_id).cancel()
    _report(info, args.json)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with _client(args) as client:
        recipe = client.search(args.search_id).export(args.trial, args.out, args.format)
    if args.json:  # machine-readable: the written path made absolute
        path = str(Path(args.out).resolve())
        print_json({"search_id": recipe["search_id"], "trial_id": recipe["trial_id"], "path": path})
    else:
        print(f"trial {recipe['trial_id']} of search {recipe['search_id']} -> {args.out}")
    return 0


def _report(info: dict[str, Any], json_output: bool) -> None:
    if json_output:
        print_json({k: v for k, v in info.items() if k != "spec"})
        return
    progress = info["progress"]
    from winnow.service import progress_text

    order = progress_text.objective_names(info)
    best = progress_text.status_front_text(progress, order, digits=6)  # one trial's values
    print(
        f"{info['id']} {info['name']}: {info['status']}"
        + (f" ({info['error']})" if info["error"] else "")
        + f"; {progress['candidates']}/{progress['max_trials']} candidates "
        f"({progress['trained']} runs, {progress['epochs']} epochs), "
        f"{progress['proposals']} proposals, {progress['cache_hits']} cache hits; {best}; "
        + progress_text.hypervolume_text(progress, "hypervolume", digits=6)
    )
    ended = info["status"] in TERMINAL  # stopped short of its plan: partly confirmed
    confirming = progress_text.confirm_text(progress, ended)
    if confirming:  # strategy.confirm: the front trained again with further seeds
        print(f"  {confirming}")
    ladder = progress_text.ladder_text(progress, digits=3)
    if ladder:  # a cascade's evidence ladder, on a line of its own
        print(f"  evidence ladder: {ladder}")


def cmd_demo(args: argparse.Namespace) -> int:
    from winnow.service.demo import run_demo

    return run_demo(Path(args.data_dir), args.json, args.max_trials, _pool_config(args))


# --- the parsers ------------------------------------------------------------------------------


def _pool_config(args: argparse.Namespace) -> PoolConfig:
    """The ``PoolConfig`` of ``--executor``, ``--workers``, ``--ray-address`` and (serve only)
    ``--trial-timeout`` (0: no limit; commands without it get the default)."""
    timeout = getattr(args, "trial_timeout", DEFAULT_TRIAL_TIMEOUT)
    return PoolConfig(
        executor=args.executor,
        workers=args.workers,
        timeout=timeout or None,
        ray_address=args.ray_address,
    )


def _executor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor",
        choices=EXECUTORS.names(),
        default="local",
        help="local: worker processes of this machine (one per GPU, or one per two cores); "
        "ray: Ray tasks on a cluster (--ray-address) or a local Ray; "
        "inprocess: each search trains in its own thread",
    )
    parser.add_argument("--workers", type=int, help="local: worker processes; ray: local CPUs")
    parser.add_argument("--ray-address", help="ray: auto or ray://HOST:PORT (default: start one)")


def add_service_commands(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the winnow gRPC server")
    db_option(serve)
    serve.add_argument("--address", default=env.DEFAULT_ADDRESS, help="HOST:PORT to listen on")
    _executor_options(serve)
    serve.add_argument(
        "--trial-timeout",
        type=non_negative_float,
        default=DEFAULT_TRIAL_TIMEOUT,
        help="seconds before a running trial (local, ray) is stopped and failed; "
        "raise it for long trainings, 0: no limit",
    )
    serve.add_argument(
        "--max-concurrent-searches",
        type=positive_int,
        default=2,
        help="searches that run at once (at least 1)",
    )
    serve.add_argument(
        "--max-queued-searches",
        type=positive_int,
        default=64,
        help="submissions waiting for a slot (at least 1)",
    )
    serve.add_argument(
        "--max-params",
        type=int,
        default=100_000_000,  # server.DEFAULT_MAX_PARAMS (that module imports grpc and torch)
        help="fail candidates of more parameters before building them; 0: no cap",
    )
    serve.add_argument(
        "--token", help=f"require this bearer token on every call (default: ${env.TOKEN})"
    )
    serve.add_argument(
        "--token-file", help=f"file holding the bearer token (default: ${env.TOKEN_FILE})"
    )
    serve.add_argument(
        "--artifacts",
        type=Path,
        help="folder for the trials' kept weights (default: beside a SQLite database, "
        "DB.artifacts; with PostgreSQL none are kept without it)",
    )
    serve.add_argument("--tls-cert", type=Path, help="server certificate (PEM)")
    serve.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    serve.add_argument(
        "--data-root",
        type=Path,
        action="append",
        default=[],
        help="a folder specs may read dataset files from (npz:PATH, cifar10:DIR, "
        "imagefolder:DIR); repeatable",
    )
    serve.add_argument(
        "--allow-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module (and the modules under it) whose code specs may name "
        "(python:MODULE:FUNCTION datasets); repeatable; none: no user code is imported",
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds in-flight calls get on SIGTERM; running evaluations always finish",
    )
    serve.add_argument("--log-format", choices=("json", "text"), default="json", help="of stderr")
    serve.set_defaults(func=cmd_serve)

    submit = commands.add_parser("submit", help="submit a search spec (YAML/JSON) to a server")
    submit.add_argument("spec")
    submit.add_argument("--wait", action="store_true", help="follow it until it ends")
    submit.add_argument("--request-id", help="idempotency key (default: a fresh UUID)")
    submit.add_argument(
        "--warm-start",
        action="append",
        default=[],
        metavar="RECIPE",
        help="an exported recipe.json whose candidate the search tries first (repeatable)",
    )
    submit.add_argument("--json", action="store_true")
    submit.add_argument("--quiet", action="store_true", help="no progress bar")
    submit.set_defaults(func=cmd_submit)

    for name, func, help_text in (
        ("status", cmd_status, "a search's status and progress"),
        ("pareto", cmd_pareto, "a search's Pareto front"),
        ("cancel", cmd_cancel, "cancel a queued or running search"),
    ):
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("search_id")
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(func=func)
        client_options(parser)
    importance = commands.add_parser(
        "importance", help="which parameters matter for each objective, per fidelity"
    )
    importance.add_argument("search_id")
    importance.add_argument("--fidelity", type=int, help="one rung's epochs; unset: every fidelity")
    importance.add_argument("--evaluator", default="ped-anova", help="ped-anova or fanova")
    importance.add_argument(
        "--min-trials",
        type=int,
        default=0,
        help="fewest results a fidelity needs; 0: the server's 10",
    )
    importance.add_argument("--json", action="store_true", help="the reply as one JSON object")
    importance.set_defaults(func=cmd_importance)
    listing = commands.add_parser("list", help="the server's searches, newest first")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    export = commands.add_parser(
        "export", help="write a trial's recipe, PyTorch, weights, ONNX or Lightning bundle"
    )
    export.add_argument("search_id")
    export.add_argument("--trial", type=int, help="trial id (default: the front's best)")
    export.add_argument("--out", required=True, help="the file (a folder for several files)")
    export.add_argument("--format", default="recipe", help="an export format of the server")
    export.add_argument("--json", action="store_true", help="one JSON line, the path absolute")
    export.set_defaults(func=cmd_export)
    for parser in (submit, importance, listing, export):
        client_options(parser)

    demo = commands.add_parser("demo", help="the main job: a real search through the service")
    demo.add_argument("--data-dir", default="runs/demo", help="where the SQLite store goes")
    demo.add_argument(
        "--max-trials", type=int, help="candidates to train (the spec's max_trials; default 30)"
    )
    demo.add_argument("--json", action="store_true", help="last line: one JSON object")
    _executor_options(demo)
    demo.set_defaults(func=cmd_demo)
