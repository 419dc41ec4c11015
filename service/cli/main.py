"""The ``winnow`` command line.

    winnow space validate FILE
    winnow space sample FILE -n 5 --seed 0
    winnow space describe --space nb201 --archs-file FILE --json
    winnow evaluate --space FILE|nb201 [--candidate JSON | --arch NB201] --dataset NAME --epochs N
    winnow bench proxies --nb201 CSV --data npz:PATH --sample 1000 --seed 0 --json [--no-share]
    winnow bench hashing --space nb201 --json --out hashes.csv
    winnow search run|resume|list ...  and  winnow bench search ...  (see cli_search.py)
    winnow serve | submit | status | list | pareto | cancel | export | demo  (see cli_service.py)

Exit codes: 0 success, 1 an evaluation or a server call that failed, 2 bad input (including
what a server refused as such: an invalid spec, an unknown search, a missing token).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from winnow.search_space.candidate import Candidate
from winnow.search_space.datasets import DatasetError, load_dataset
from winnow.search_space.params import CandidateNotInSpaceError
from winnow.search_space.registry import UnknownNameError
from winnow.search_space.spec import SearchSpace, SpecError, load_space, parse_space
from winnow.service.cli.search import add_search_commands
from winnow.service.cli.service import add_service_commands
from winnow.service.cli.ui import add_ui_commands

USAGE_ERRORS = (
    SpecError,
    CandidateNotInSpaceError,
    DatasetError,
    UnknownNameError,
    ValidationError,
    ValueError,
    OSError,
)


# gRPC statuses that mean the request itself was wrong (exit code 2)
CLIENT_MISTAKES = ("INVALID_ARGUMENT", "NOT_FOUND", "UNAUTHENTICATED", "PERMISSION_DENIED")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


# --- winnow space ---------------------------------------------------------------------------


def cmd_space_validate(args: argparse.Namespace) -> int:
    space = load_space(args.file)
    first = space.sample(1, seed=0)[0]
    _, distributions = space.to_optuna(first)
    print(
        f"ok: space {space.name!r} ({space.architecture.family}), "
        f"{len(distributions)} searched decisions"
    )
    return 0


def cmd_space_sample(args: argparse.Namespace) -> int:
    for candidate in load_space(args.file).sample(args.n, seed=args.seed):
        print(candidate.canonical_json())
    return 0


def cmd_space_describe(args: argparse.Namespace) -> int:
    """Params and FLOPs of each nb201 arch string in a file, without training."""
    from winnow.search_space.training import static_metrics

    space = load_space(args.space)
    shape = tuple(int(d) for d in args.input_shape.split(","))
    for line in Path(args.archs_file).read_text().splitlines():
        if not line.strip():
            continue
        candidate = _candidate_for_arch(space, line.strip(), seed=0)
        metrics = static_metrics(candidate.build_model(args.num_classes, shape), shape)
        row = {"arch": line.strip(), "params": metrics["params"], "flops": metrics["flops"]}
        _print_json(row) if args.json else print(
            f"{row['params']:>10,} params {row['flops']:>14,} FLOPs  {row['arch']}"
        )
    return 0


def _candidate_for_arch(space: SearchSpace, arch: str, seed: int) -> Candidate:
    """A candidate of ``space`` with its nb201 cell fixed to ``arch`` (other axes sampled)."""
    if space.architecture.family != "nb201":
        raise SpecError(
            f"--arch takes an nb201 arch string; space {space.name!r} is "
            f"{space.architecture.family}"
        )
    data = space.model_dump()
    data["architecture"]["cell"] = arch
    return parse_space(data).sample(1, seed=seed)[0]


# --- winnow evaluate ------------------------------------------------------------------------


def _read_candidate(text: str) -> Candidate:
    path = Path(text)
    if not text.lstrip().startswith("{") and path.is_file():
        text = path.read_text()
    return Candidate.from_json(text)


def _choose_candidate(args: argparse.Namespace, space: SearchSpace) -> Candidate:
    if args.candidate:
        return space.validate_candidate(_read_candidate(args.candidate))
    if args.arch:
        return _candidate_for_arch(space, args.arch, args.seed)
    return space.sample(1, seed=args.seed)[0]


def _progress(epoch: int, epochs: int, loss: float) -> None:
    print(f"  epoch {epoch}/{epochs}  train loss {loss:.4f}", file=sys.stderr, flush=True)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from winnow.search_space.training import evaluate
    from winnow.search_space.trial import Status, TrialSpec

    space = load_space(args.space)
    candidate = _choose_candidate(args, space)
    load_dataset(args.dataset)  # bad names and missing files are input errors: fail before work
    print(f"winnow: evaluating {candidate.describe()} on {args.dataset}", file=sys.stderr)
    spec = TrialSpec(
        candidate, args.dataset, "train", args.epochs, args.steps, args.seed, args.device
    )
    result = evaluate(spec, on_epoch=None if args.quiet else _progress)
    out = result.to_json_dict() | {"key": candidate.key, "candidate": candidate.model_dump()}
    if args.json:
        _print_json(out)
    else:
        _print_summary(out)
    return 0 if result.status == Status.OK else 1


def _print_summary(out: dict[str, Any]) -> None:
    print(f"status      {out['status']}")
    if out.get("error"):
        print(f"error       {out['error']}")
    for name in (
        "accuracy",
        "params",
        "flops",
        "model_bytes",
        "bitops",
        "latency_ms",
        "peak_memory_bytes",
    ):
        if name in out:
            print(
                f"{name:<18}{out[name]:,.4g}"
                if isinstance(out[name], float)
                else f"{name:<18}{out[name]:,}"
            )


# --- winnow bench ---------------------------------------------------------------------------


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
    """Rank correlation of each zero-cost proxy (and two ensembles) with NAS-Bench-201 accuracy."""
    from winnow.bench.proxies import BenchConfig, run_proxy_bench
    from winnow.proxies.nb201_truth import read_nb201_truth, sample_cells

    cells = sample_cells(read_nb201_truth(args.nb201), args.sample, args.seed)
    load_dataset(args.data)  # bad names and missing files are input errors: fail before work
    config = BenchConfig(
        data=args.data,
        proxies=_chosen_proxies(args.proxies),
        seed=args.seed,
        batch_size=args.batch_size,
        n_batches=args.batches,
        device=args.device,
        calibration_fraction=args.calibration_fraction,
        no_share=args.no_share,
        no_share_limit=args.no_share_limit,
    )
    result = run_proxy_bench(cells, config, cache_path=args.cache, progress=not args.quiet)
    _print_json(result) if args.json else _print_bench_summary(result)
    return 0


def cmd_bench_hashing(args: argparse.Namespace) -> int:
    """Structural and functional hash classes, timings and agreement over a space."""
    from winnow.bench.hashing import run

    bits = [int(b) for b in args.mantissa_bits.split(",")] if args.mantissa_bits else []
    out = Path(args.out) if args.out else None
    _print_json(run(args.space, args.sample, args.seed, bits, out, limit=args.limit))
    return 0


def _print_bench_summary(result: dict[str, Any]) -> None:
    def text(x: float | None) -> str:
        return "   n/a" if x is None else f"{x:+.3f}"

    print(f"{result['sample']} NAS-Bench-201 cells on {result['device']}")
    print(f"{'proxy':<20}{'spearman':>9}{'kendall':>9}{'s/arch':>9}{'failed':>7}")
    for name, row in result["proxies"].items():
        print(
            f"{name:<20}{text(row['spearman']):>9}{text(row['kendall']):>9}"
            f"{row['seconds_per_arch']:>9.3f}{row['failures']:>7}"
        )
    for name, row in result["ensembles"].items():
        print(f"{name + ' ensemble':<20}{text(row['spearman']):>9}{text(row['kendall']):>9}")
    print(f"suite: {result['suite_seconds_per_arch']:.3f} s/arch, wall {result['wall_seconds']} s")


# --- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="winnow", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    space = commands.add_parser("space", help="validate, sample and describe search spaces")
    space_commands = space.add_subparsers(dest="space_command", required=True)
    validate = space_commands.add_parser("validate", help="check a space file")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_space_validate)
    sample = space_commands.add_parser("sample", help="print candidates as JSON lines")
    sample.add_argument("file")
    sample.add_argument("-n", type=int, default=5)
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(func=cmd_space_sample)
    describe = space_commands.add_parser("describe", help="params and FLOPs of nb201 cells")
    describe.add_argument("--space", default="nb201", help="a space file or a built-in name")
    describe.add_argument("--archs-file", required=True, help="one arch string per line")
    describe.add_argument("--num-classes", type=int, default=10)
    describe.add_argument("--input-shape", default="3,32,32")
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(func=cmd_space_describe)

    ev = commands.add_parser("evaluate", help="train one candidate and report its metrics")
    ev.add_argument("--space", required=True, help="a space file or a built-in name (nb201)")
    which = ev.add_mutually_exclusive_group()
    which.add_argument("--candidate", help="candidate JSON (text or a file); default: sample one")
    which.add_argument("--arch", help="an nb201 arch string")
    ev.add_argument("--dataset", required=True, help="digits, npz:PATH, cifar10[:DIR], synthetic")
    ev.add_argument("--epochs", type=int, default=1)
    ev.add_argument("--steps", type=int, default=None, help="train this many steps instead")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--quiet", action="store_true", help="no per-epoch progress on stderr")
    ev.set_defaults(func=cmd_evaluate)

    bench = commands.add_parser("bench", help="benchmarks that print JSON")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True)
    bp = bench_commands.add_parser(
        "proxies", help="rank correlation of zero-cost proxies with NAS-Bench-201 accuracy"
    )
    bp.add_argument("--nb201", required=True, help="ground-truth CSV (arch, test_accuracy)")
    bp.add_argument("--data", required=True, help="images to score on, e.g. npz:PATH")
    bp.add_argument("--sample", type=int, default=1000, help="number of cells (CI smoke: 20)")
    bp.add_argument("--seed", type=int, default=0)
    bp.add_argument("--proxies", help="comma-separated names (default: every proxy)")
    bp.add_argument("--batches", type=int, default=2, help="number of fixed batches")
    bp.add_argument("--batch-size", type=int, default=64)
    bp.add_argument("--calibration-fraction", type=float, default=0.4)
    bp.add_argument("--no-share", action="store_true", help="also time unshared scoring")
    bp.add_argument(
        "--no-share-limit", type=int, default=50, help="unshared scoring on the first N cells"
    )
    bp.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    bp.add_argument("--cache", help="JSON-lines score cache: resumes and repeats without rescoring")
    bp.add_argument("--json", action="store_true", help="print one JSON object")
    bp.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    bp.set_defaults(func=cmd_bench_proxies)
    bh = bench_commands.add_parser("hashing", help="structural vs functional hashing of a space")
    bh.add_argument("--space", default="nb201", help="nb201 (every cell) or a space to sample")
    bh.add_argument("--sample", type=int, help="sample N candidates instead of every nb201 cell")
    bh.add_argument("--limit", type=int, help="only the first N nb201 cells (smoke runs)")
    bh.add_argument("--seed", type=int, default=0)
    bh.add_argument("--mantissa-bits", help="comma-separated precisions to sweep, e.g. 8,12,16")
    bh.add_argument("--out", help="CSV of arch,structural_hash,functional_hash")
    bh.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    bh.set_defaults(func=cmd_bench_hashing)
    add_search_commands(commands, bench_commands)
    add_service_commands(commands, bench_commands)
    add_ui_commands(commands, bench_commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from winnow.service.client import WinnowError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except WinnowError as error:
        print(f"winnow: error: {error}", file=sys.stderr)
        return 2 if error.code in CLIENT_MISTAKES else 1
    except USAGE_ERRORS as error:
        print(f"winnow: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
