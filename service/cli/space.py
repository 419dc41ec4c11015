"""``winnow space validate|sample|describe`` and ``winnow evaluate``.

    winnow space validate FILE
    winnow space sample FILE -n 5 --seed 0
    winnow space describe --space nb201 --archs-file FILE --json
    winnow evaluate --space FILE|nb201 [--candidate JSON | --arch NB201] --dataset NAME --epochs N

The spec language, candidates and training import torch: handlers import them when they run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from winnow.records import TRAIN_METRICS
from winnow.service.cli.output import print_json

if TYPE_CHECKING:
    from winnow.search_space.candidate import Candidate
    from winnow.search_space.spec import SearchSpace


# --- winnow space ---------------------------------------------------------------------------


def cmd_space_validate(args: argparse.Namespace) -> int:
    from winnow.search_space.spec import load_space

    space = load_space(args.file)
    first = space.sample(1, seed=0)[0]
    _, distributions = space.to_optuna(first)
    print(
        f"ok: space {space.name!r} ({space.architecture.family}), "
        f"{len(distributions)} searched decisions"
    )
    return 0


def cmd_space_sample(args: argparse.Namespace) -> int:
    from winnow.search_space.spec import load_space

    for candidate in load_space(args.file).sample(args.n, seed=args.seed):
        print(candidate.canonical_json())
    return 0


def cmd_space_describe(args: argparse.Namespace) -> int:
    """Params and FLOPs of each nb201 arch string in a file, without training."""
    from winnow.search_space.spec import load_space
    from winnow.search_space.training import static_metrics

    space = load_space(args.space)
    shape = tuple(int(d) for d in args.input_shape.split(","))
    for line in Path(args.archs_file).read_text().splitlines():
        if not line.strip():
            continue
        candidate = _candidate_for_arch(space, line.strip(), seed=0)
        metrics = static_metrics(candidate.build_model(args.num_classes, shape), shape)
        row = {"arch": line.strip(), "params": metrics["params"], "flops": metrics["flops"]}
        print_json(row) if args.json else print(
            f"{row['params']:>10,} params {row['flops']:>14,} FLOPs  {row['arch']}"
        )
    return 0


def _candidate_for_arch(space: SearchSpace, arch: str, seed: int) -> Candidate:
    """A candidate of ``space`` with its nb201 cell fixed to ``arch`` (other axes sampled)."""
    from winnow.search_space.spec import SpecError, parse_space

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
    from winnow.search_space.candidate import Candidate

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


def _progress(epoch: int, epochs: int, loss: float, seconds: float) -> None:
    line = f"  epoch {epoch}/{epochs}  train loss {loss:.4f}  ({seconds:.2f} s)"
    print(line, file=sys.stderr, flush=True)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from winnow.search_space.datasets import load_dataset
    from winnow.search_space.spec import load_space
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
        print_json(out)
    else:
        _print_summary(out)
    return 0 if result.status == Status.OK else 1


def _print_summary(out: dict[str, Any]) -> None:
    print(f"status      {out['status']}")
    if out.get("error"):
        print(f"error       {out['error']}")
    for name in TRAIN_METRICS:
        if name in out:
            print(
                f"{name:<18}{out[name]:,.4g}"
                if isinstance(out[name], float)
                else f"{name:<18}{out[name]:,}"
            )


# --- the parsers ----------------------------------------------------------------------------


def add_space_commands(commands: Any) -> None:
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
