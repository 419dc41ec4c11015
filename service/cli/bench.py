"""``winnow bench ...``: benchmarks that print JSON.

    winnow bench proxies --nb201 CSV --dataset npz:PATH --sample 1000 --seed 0 --json [--no-share]
    winnow bench hashing --space nb201 --json --out hashes.csv
    winnow bench supernet --space nb201 --nb201 CSV --dataset npz:PATH --sample 300 --seed 0 \\
        --minutes 45 --json
    winnow bench export --sample 300 --json
    winnow bench search --oracle nb201:CSV --dataset npz:PATH --strategies random,tpe,cascade \\
        --budget 100 --seeds 10 --json [--objectives accuracy,params] \\
        [--supernet --supernet-minutes 10 --supernet-cells-per-stage 1 --artifacts DIR]
    winnow bench service --trials 2000 --clients 8
    winnow bench workers --executor local --trials 200
    winnow bench ui --trials 10000 --json
    winnow bench supernet-quant --candidates 40 --seed 0 [--standalone-seeds 3] [--minutes M] --json
    winnow bench rungs --dataset digits --candidates 9 --seed 0 --json
    winnow bench kernels --dataset npz:PATH --json [--epoch-steps N] [--min-run-time S]

The benchmarks live in ``winnow.bench``, which handlers import when they run (only these
commands import it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from winnow.bench.quantization_settings import STANDALONE_SEEDS
from winnow.service.cli.options import dataset_option, db_option
from winnow.service.cli.output import print_json
from winnow.workers.pools import EXECUTORS

# The executors with workers to count (inprocess runs trials in the caller: no second worker).
_POOLS = [name for name in EXECUTORS.names() if name != "inprocess"]


def _print_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _stderr_progress(quiet: bool) -> Any:
    """A benchmark's progress callback: lines on stderr (the JSON goes to stdout), or None."""
    return None if quiet else _print_to_stderr


# --- winnow bench proxies, hashing ----------------------------------------------------------


def _chosen_proxies(text: str | None) -> tuple[str, ...]:
    from winnow.proxies import proxy_names

    known = proxy_names()
    if not text:
        return tuple(known)
    chosen = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        raise ValueError(f"unknown proxies {unknown}; allowed: {', '.join(known)}")
    return chosen


def cmd_bench_proxies(args: argparse.Namespace) -> int:
    """Rank correlation of each zero-cost proxy and the three ensembles with NB201 accuracy."""
    from winnow.bench.proxies import BenchConfig, run_proxy_bench
    from winnow.proxies.nb201_truth import read_nb201_truth, sample_cells
    from winnow.search_space.datasets import load_dataset

    cells = sample_cells(read_nb201_truth(args.nb201), args.sample, args.seed)
    load_dataset(args.dataset)  # bad names and missing files are input errors: fail before work
    config = BenchConfig(
        data=args.dataset,
        proxies=_chosen_proxies(args.proxies),
        seed=args.seed,
        batch_size=args.batch_size,
        n_batches=args.batches,
        device=args.device,
        calibration_fraction=args.calibration_fraction,
        no_share=args.no_share,
        no_share_limit=args.no_share_limit,
        folds=args.folds,
        calibration_fit=args.calibration_fit,
        report_near_copies=args.report_near_copies,
    )
    result = run_proxy_bench(cells, config, cache_path=args.cache, progress=not args.quiet)
    print_json(result) if args.json else _print_proxies_summary(result)
    return 0


def _print_proxies_summary(result: dict[str, Any]) -> None:
    def text(x: float | None) -> str:
        return "   n/a" if x is None else f"{x:+.3f}"

    split = result["split"]
    print(f"{result['sample']} NAS-Bench-201 cells on {result['device']}")
    print(
        f"Spearman on the {split['evaluation']} evaluation cells (the headline) and on all cells "
        f"(the calibrated ensemble's by a {split['folds']}-fold cross-fit)"
    )
    print(f"{'proxy':<20}{'eval':>9}{'all':>9}{'s/arch':>9}{'failed':>7}")
    for name, row in result["proxies"].items():
        print(
            f"{name:<20}{text(row['spearman_evaluation']):>9}{text(row['spearman_all']):>9}"
            f"{row['seconds_per_arch']:>9.3f}{row['failures']:>7}"
        )
    for name, row in result["ensembles"].items():
        figures = f"{text(row['spearman_evaluation']):>9}{text(row['spearman_all']):>9}"
        print(f"{name + ' ensemble':<20}{figures}")
    for row in result.get("near_copies", {}).get("pairs", []):
        print(f"near-copies? {' / '.join(row['proxies']):<30}{text(row['spearman']):>9}")
    print(f"suite: {result['suite_seconds_per_arch']:.3f} s/arch, wall {result['wall_seconds']} s")


def cmd_bench_hashing(args: argparse.Namespace) -> int:
    """Structural and functional hash classes, timings and agreement over a space."""
    from winnow.bench.hashing import run

    bits = [int(b) for b in args.mantissa_bits.split(",")] if args.mantissa_bits else []
    out = Path(args.out) if args.out else None
    print_json(run(args.space, args.sample, args.seed, bits, out, limit=args.limit))
    return 0


def cmd_bench_supernet(args: argparse.Namespace) -> int:
    """The nb201 supernet's ranking of cells against params, the proxies and their ensemble."""
    import torch

    from winnow.bench.supernet import SupernetBenchConfig, run_supernet_bench
    from winnow.proxies.nb201_truth import read_nb201_truth
    from winnow.search_space.datasets import load_dataset
    from winnow.supernet.nb201_training import TrainSettings

    truth = read_nb201_truth(args.nb201)
    load_dataset(args.dataset)  # bad names and missing files are input errors: fail before work
    if args.minutes <= 0 or (args.steps is not None and args.steps < 1):
        raise ValueError("--minutes must be positive and --steps at least 1")
    torch.set_num_threads(args.threads)
    config = SupernetBenchConfig(
        data=args.dataset,
        sample=args.sample,
        seed=args.seed,
        minutes=args.minutes,
        steps=args.steps,
        channels=args.channels,
        cells_per_stage=args.cells_per_stage,
        sampling=args.sampling,
        entangle=args.entangle,
        train=TrainSettings(**_given(lr=args.lr, batch_size=args.batch_size), seed=args.seed),
        validation_fraction=args.validation_fraction,
        recalibration_batches=args.recalibration_batches,
        proxies=_chosen_proxies(args.proxies) if args.proxies else (),
        calibration_fraction=args.calibration_fraction,
        device=args.device,
    )
    result = run_supernet_bench(
        truth, config, cache_path=args.cache, out=args.out, progress=not args.quiet
    )
    print_json(result)
    return 0


def _given(**values: Any) -> dict[str, Any]:
    """The options given on the command line (the others keep their defaults)."""
    return {k: v for k, v in values.items() if v is not None}


# --- winnow bench search, service, workers --------------------------------------------------


def cmd_bench_search(args: argparse.Namespace) -> int:
    from winnow.bench.search import WITH_SUPERNET, bench_supernet, run_search_bench
    from winnow.search_space.datasets import load_dataset
    from winnow.service.search_spec import Screen

    kind, _, path = args.oracle.partition(":")
    if kind != "nb201" or not path:
        raise ValueError(f"--oracle takes nb201:CSV, not {args.oracle!r}")
    load_dataset(args.dataset)  # a bad dataset is an input error: fail before any work
    screen_fields: dict[str, Any] = {}
    if args.screen_proxies:
        screen_fields["proxies"] = [p.strip() for p in args.screen_proxies.split(",")]
    if args.keep_fraction:
        screen_fields["keep_fraction"] = args.keep_fraction
    screen = Screen(**screen_fields)
    unknown = next(screen.name_problems(), None)  # an unknown proxy: fail before any work too
    if unknown is not None:
        raise ValueError(f"--screen-proxies: {unknown[1]}")
    strategies = [s.strip() for s in args.strategies.split(",")]
    if args.supernet and WITH_SUPERNET not in strategies:
        strategies.append(WITH_SUPERNET)
    result = run_search_bench(
        path,
        args.dataset,
        strategies,
        args.budget,
        args.seeds,
        objectives=[o.strip() for o in args.objectives.split(",")],
        store_url=args.db,
        screen=screen,
        progress=None if args.quiet else lambda line: print(line, file=sys.stderr, flush=True),
        supernet=bench_supernet(**_supernet_options(args, strategies)),
        artifacts=args.artifacts,
    )
    print_json(result)
    return 0


def _supernet_options(args: argparse.Namespace, strategies: list[str]) -> dict[str, Any]:
    """``bench_supernet``'s arguments from ``--supernet-*``, which set ``cascade+supernet``'s
    supernet: given without that strategy they would be ignored, so they are refused."""
    from winnow.bench.search import WITH_SUPERNET

    given = {
        "--supernet-minutes": args.supernet_minutes,
        "--supernet-cells-per-stage": args.supernet_cells_per_stage,
    }
    given = {flag: value for flag, value in given.items() if value is not None}
    if given and WITH_SUPERNET not in strategies:
        raise ValueError(
            f"{', '.join(given)} set the supernet of {WITH_SUPERNET}, which is not among the "
            f"strategies: add --supernet or name {WITH_SUPERNET} in --strategies"
        )
    options: dict[str, Any] = {}
    if args.supernet_minutes is not None:
        options["minutes"] = args.supernet_minutes
    if args.supernet_cells_per_stage is not None:  # 0: the space's own depth
        options["cells_per_stage"] = args.supernet_cells_per_stage or None
    return options


def cmd_bench_export(args: argparse.Namespace) -> int:
    """Every export format on random candidates of the joint spaces, checked against winnow."""
    from winnow.bench.export import run

    def progress(done: int) -> None:
        print(f"\rexported {done}/{args.sample}", end="", file=sys.stderr, flush=True)

    result = run(args.sample, args.seed, progress=None if args.quiet else progress)
    if not args.quiet:
        print(file=sys.stderr)
    print_json(result)
    return 0


def cmd_bench_service(args: argparse.Namespace) -> int:
    from winnow.bench.service import run_service_bench

    if args.trials < args.clients or args.clients < 1:
        raise ValueError("--trials must be at least --clients, and --clients at least 1")
    print_json(run_service_bench(args.trials, args.clients))
    return 0


def cmd_bench_workers(args: argparse.Namespace) -> int:
    from winnow.bench.workers import run_workers_bench

    if args.trials < 1:
        raise ValueError("--trials must be at least 1")
    print_json(run_workers_bench(args.executor, args.trials))
    return 0


def cmd_bench_ui(args: argparse.Namespace) -> int:
    from winnow.bench.ui import run_bench_ui
    from winnow.service.cli.ui import APP

    result = run_bench_ui(args.trials, args.seed, args.db, APP)
    if args.json:
        print_json(result)
    else:
        print(result, flush=True)
    return 0


# --- winnow bench supernet-quant --------------------------------------------------------------


def cmd_bench_supernet_quant(args: argparse.Namespace) -> int:
    """Inherited (elastic quantization supernet) against standalone accuracy on digits."""
    from winnow.bench.supernet_quantization import run

    if args.candidates < 2:
        raise ValueError("--candidates must be at least 2 (a rank correlation needs two)")
    if args.standalone_seeds < 1:
        raise ValueError(f"--standalone-seeds must be at least 1, got {args.standalone_seeds}")

    result = run(
        args.candidates,
        args.seed,
        args.minutes,
        ablation=not args.no_ablation,
        progress=_stderr_progress(args.quiet),
        standalone_seeds=args.standalone_seeds,
    )
    print_json(result)
    return 0


def _add_supernet_quant(bench_commands: Any) -> None:
    bq = bench_commands.add_parser(
        "supernet-quant",
        help="elastic quantization: inherited vs standalone accuracy of mlp x policy candidates",
    )
    bq.add_argument("--candidates", type=int, default=40)
    bq.add_argument("--seed", type=int, default=0)
    bq.add_argument("--minutes", type=float, help="time budget of each supernet's training")
    bq.add_argument("--no-ablation", action="store_true", help="only the main supernet")
    bq.add_argument(
        "--standalone-seeds",
        type=int,
        default=STANDALONE_SEEDS,
        help="seeds of each candidate's standalone training, the truth their mean "
        "(default %(default)s)",
    )
    bq.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    bq.add_argument("--quiet", action="store_true", help="no progress on stderr")
    bq.set_defaults(func=cmd_bench_supernet_quant)


# --- winnow bench rungs ---------------------------------------------------------------------


def cmd_bench_rungs(args: argparse.Namespace) -> int:
    """The same search with and without continued rungs: epochs and top-rung accuracy."""
    from winnow.bench.rungs import run

    rungs = tuple(int(e) for e in args.rungs.split(","))
    print_json(run(args.dataset, args.candidates, args.seed, rungs, args.reduction_factor))
    return 0


def _add_rungs(bench_commands: Any) -> None:
    br = bench_commands.add_parser(
        "rungs", help="epochs saved by continued rungs, and top-rung accuracy, on one search"
    )
    dataset_option(br, default="digits", help="e.g. digits, npz:PATH (the CIFAR-10 subset)")
    br.add_argument("--candidates", type=int, default=9, help="the search's fixed candidates")
    br.add_argument("--seed", type=int, default=0)
    br.add_argument("--rungs", default="1,3,9", help="epochs per rung, comma-separated")
    br.add_argument("--reduction-factor", type=int, default=3)
    br.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    br.set_defaults(func=cmd_bench_rungs)


# --- winnow bench kernels -------------------------------------------------------------------


def cmd_bench_kernels(args: argparse.Namespace) -> int:
    """Each Triton kernel against its eager fallback, and a quantized nb201 epoch on and off."""
    from winnow.bench.kernels import run

    result = run(
        args.dataset,
        args.min_run_time,
        args.epoch_steps,
        args.channels,
        args.cells_per_stage,
        progress=_stderr_progress(args.quiet),
    )
    print_json(result)
    return 0


def _add_kernels(bench_commands: Any) -> None:
    bk = bench_commands.add_parser(
        "kernels",
        help="Triton kernels against their torch fallbacks (the interpreter without a GPU)",
    )
    dataset_option(bk, default="digits", help="the epoch's data, e.g. npz:PATH (CIFAR-10)")
    bk.add_argument(
        "--epoch-steps",
        type=int,
        help="bound the end-to-end epoch to this many steps (default: a whole epoch on a GPU, "
        "1 in the interpreter)",
    )
    bk.add_argument("--channels", type=int, default=16, help="the nb201 candidate's channels")
    bk.add_argument("--cells-per-stage", type=int, default=5, help="the nb201 candidate's depth")
    bk.add_argument(
        "--min-run-time", type=float, default=0.5, help="seconds each timing repeats for"
    )
    bk.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    bk.add_argument("--quiet", action="store_true", help="no progress on stderr")
    bk.set_defaults(func=cmd_bench_kernels)


# --- the parsers ----------------------------------------------------------------------------


def add_bench_commands(commands: Any) -> None:
    """Register ``winnow bench`` and its subcommands."""
    bench = commands.add_parser("bench", help="benchmarks that print JSON")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True)
    _add_proxies(bench_commands)
    _add_hashing(bench_commands)
    _add_supernet(bench_commands)
    _add_search(bench_commands)
    _add_export(bench_commands)
    _add_service(bench_commands)
    _add_workers(bench_commands)
    _add_ui(bench_commands)
    _add_supernet_quant(bench_commands)
    _add_rungs(bench_commands)
    _add_kernels(bench_commands)


def _add_proxies(bench_commands: Any) -> None:
    bp = bench_commands.add_parser(
        "proxies", help="rank correlation of zero-cost proxies with NAS-Bench-201 accuracy"
    )
    bp.add_argument("--nb201", required=True, help="ground-truth CSV (arch, test_accuracy)")
    dataset_option(bp, required=True, help="images to score on, e.g. npz:PATH")
    bp.add_argument("--sample", type=int, default=1000, help="number of cells (CI smoke: 20)")
    bp.add_argument("--seed", type=int, default=0)
    bp.add_argument("--proxies", help="comma-separated names (default: every proxy)")
    bp.add_argument("--batches", type=int, default=2, help="number of fixed batches")
    bp.add_argument("--batch-size", type=int, default=64)
    bp.add_argument("--calibration-fraction", type=float, default=0.4)
    bp.add_argument(
        "--folds", type=int, default=5, help="K of the calibrated ensemble's all-cells cross-fit"
    )
    bp.add_argument(
        "--calibration-fit",
        choices=("bench", "default", "bench-normal"),
        default="bench",
        help="the calibrated ensemble's fit: bench (two bases, no early stop), the engine's "
        "FitSettings() (one basis, early-stopped) or bench with one basis",
    )
    bp.add_argument(
        "--report-near-copies",
        action="store_true",
        help="add the proxy-to-proxy Spearman table and the rank ensemble of every proxy",
    )
    bp.add_argument("--no-share", action="store_true", help="also time unshared scoring")
    bp.add_argument(
        "--no-share-limit", type=int, default=50, help="unshared scoring on the first N cells"
    )
    bp.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    bp.add_argument("--cache", help="JSON-lines score cache: resumes and repeats without rescoring")
    bp.add_argument("--json", action="store_true", help="print one JSON object")
    bp.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    bp.set_defaults(func=cmd_bench_proxies)


def _add_hashing(bench_commands: Any) -> None:
    bh = bench_commands.add_parser("hashing", help="structural vs functional hashing of a space")
    bh.add_argument("--space", default="nb201", help="nb201 (every cell) or a space to sample")
    bh.add_argument("--sample", type=int, help="sample N candidates instead of every nb201 cell")
    bh.add_argument("--limit", type=int, help="only the first N nb201 cells (smoke runs)")
    bh.add_argument("--seed", type=int, default=0)
    bh.add_argument("--mantissa-bits", help="comma-separated precisions to sweep, e.g. 8,12,16")
    bh.add_argument("--out", help="CSV of arch,structural_hash,functional_hash")
    bh.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    bh.set_defaults(func=cmd_bench_hashing)


def _add_supernet(bench_commands: Any) -> None:
    bs = bench_commands.add_parser(
        "supernet", help="nb201 supernet ranking against params, proxies and their ensemble"
    )
    bs.add_argument("--space", choices=["nb201"], default="nb201", help="the supernet's family")
    bs.add_argument("--nb201", required=True, help="ground-truth CSV (arch, test_accuracy)")
    dataset_option(bs, required=True, help="training images, e.g. npz:PATH (its test split unused)")
    bs.add_argument("--sample", type=int, default=300, help="functionally distinct cells")
    bs.add_argument("--seed", type=int, default=0)
    bs.add_argument("--minutes", type=float, default=45.0, help="supernet training time")
    bs.add_argument("--steps", type=int, help="at most this many training steps")
    bs.add_argument("--channels", type=int, default=16, help="the supernet's C")
    bs.add_argument("--cells-per-stage", type=int, default=5, help="the supernet's N")
    bs.add_argument("--sampling", choices=["uniform", "fair"], default="uniform")
    bs.add_argument("--entangle", action="store_true", help="conv1x1 = centre of conv3x3")
    bs.add_argument("--lr", type=float, help="SGD's learning rate (default: TrainSettings')")
    bs.add_argument("--batch-size", type=int, help="training batch (default: TrainSettings')")
    bs.add_argument("--validation-fraction", type=float, default=0.1, help="carved from train")
    bs.add_argument(
        "--recalibration-batches", type=int, default=8, help="BatchNorm re-estimation batches"
    )
    bs.add_argument("--proxies", help="comma-separated names (default: every proxy)")
    bs.add_argument("--calibration-fraction", type=float, default=0.4)
    bs.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    bs.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    bs.add_argument("--cache", help="JSON-lines proxy score cache (shared with bench proxies)")
    bs.add_argument("--out", help="CSV of every cell's figures")
    bs.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    bs.add_argument("--quiet", action="store_true", help="no progress on stderr")
    bs.set_defaults(func=cmd_bench_supernet)


def _add_export(bench_commands: Any) -> None:
    be = bench_commands.add_parser(
        "export", help="every export format on random candidates, checked against winnow"
    )
    be.add_argument("--sample", type=int, default=300, help="number of candidates")
    be.add_argument("--seed", type=int, default=0)
    be.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    be.add_argument("--quiet", action="store_true", help="no progress on stderr")
    be.set_defaults(func=cmd_bench_export)


def _add_search(bench_commands: Any) -> None:
    bs = bench_commands.add_parser("search", help="search strategies on the NB201 oracle")
    bs.add_argument("--oracle", required=True, help="nb201:CSV of arch,test_accuracy")
    dataset_option(bs, required=True, help="images the proxies score on, e.g. npz:PATH")
    bs.add_argument("--strategies", default="random,tpe,cascade")
    bs.add_argument("--budget", type=int, default=100, help="candidates per search (max_trials)")
    bs.add_argument("--seeds", type=int, default=10)
    bs.add_argument("--objectives", default="accuracy", help="e.g. accuracy,params")
    db_option(bs, default="sqlite:///runs/bench-search.db", help="store URL of the cache")
    bs.add_argument(
        "--screen-proxies",
        default="synflow,params,flops",
        help="the cascade's proxies, comma-separated (the data-independent ones below take about "
        "0.1 s a cell on one CPU core)",
    )
    bs.add_argument("--keep-fraction", type=float, help="the cascade's screening fraction")
    bs.add_argument(
        "--supernet",
        action="store_true",
        help="add the strategy cascade+supernet: the cascade with the supernet stage, its "
        "supernet trained once for real and reused by every seed",
    )
    bs.add_argument(
        "--supernet-minutes",
        type=float,
        help="the supernet's training time (default 10; needs cascade+supernet)",
    )
    bs.add_argument(
        "--supernet-cells-per-stage",
        type=int,
        help="the supernet's depth (default 1, 0: the space's 5; needs cascade+supernet): "
        "bench supernet's figures were taken at 1; a depth of 5 trains about 5x fewer epochs "
        "in the same time",
    )
    bs.add_argument(
        "--artifacts",
        type=Path,
        help="where the trained supernet is kept (default: beside the SQLite file)",
    )
    bs.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    bs.add_argument("--quiet", action="store_true", help="no per-search lines on stderr")
    bs.set_defaults(func=cmd_bench_search)


def _add_service(bench_commands: Any) -> None:
    bench = bench_commands.add_parser("service", help="trials/s through gRPC and the store")
    bench.add_argument("--trials", type=int, default=2000, help="trivial trials in all")
    bench.add_argument("--clients", type=int, default=8, help="concurrent clients (searches)")
    bench.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    bench.set_defaults(func=cmd_bench_service)


def _add_workers(bench_commands: Any) -> None:
    workers = bench_commands.add_parser("workers", help="trials/s with 1 and 2 workers")
    workers.add_argument("--executor", choices=_POOLS, default="local")
    workers.add_argument("--trials", type=int, default=200)
    workers.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    workers.set_defaults(func=cmd_bench_workers)


def _add_ui(bench_commands: Any) -> None:
    bench = bench_commands.add_parser("ui", help="how fast the Search page opens on a big search")
    bench.add_argument("--trials", type=int, default=10_000, help="proposals in the seeded search")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--db", help="seed into this store instead of a temporary SQLite file")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(func=cmd_bench_ui)
