"""``winnow space validate|sample|describe|docs`` and ``winnow evaluate``.

    winnow space validate FILE
    winnow space sample FILE -n 5 --seed 0
    winnow space describe --space nb201 --archs-file FILE --json
    winnow space docs > docs/spec.md        (the spec reference, generated from the models)
    winnow evaluate --space FILE|nb201 [--candidate JSON | --arch NB201] --dataset NAME --epochs N
    winnow evaluate --recipe recipe.json     (train an exported recipe again, compare its metrics)

The spec language, candidates and training import torch: handlers import them when they run.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from winnow.records import TRAIN_METRICS
from winnow.service.cli.output import print_json

if TYPE_CHECKING:
    from winnow.search_space.candidate import Candidate
    from winnow.search_space.spec import SearchSpace
    from winnow.service.export.recipe import Recipe


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


def cmd_space_docs(args: argparse.Namespace) -> int:
    """The spec reference (docs/spec.md), generated from the models and registries."""
    from winnow.service.spec_docs import generate

    sys.stdout.write(generate())
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

# Metrics that depend on the machine and its load, not on the recipe: a rerun never matches them.
MEASURED_METRICS = ("latency_ms", "peak_memory_bytes")


@dataclass(frozen=True)
class _Run:
    """What ``winnow evaluate`` trains, and the recipe it came from (or None)."""

    candidate: Candidate
    dataset: str
    epochs: int
    seed: int
    recipe: Recipe | None = None
    trainer: str | None = None  # a recipe's task.trainer: the user's training function
    epoch_accuracy: bool = True  # a recipe's task.eval_every_epoch, unless the flag says


def _read_json_argument(text: str) -> dict[str, Any]:
    """JSON given as text or as a file holding it."""
    path = Path(text)
    if not text.lstrip().startswith("{") and path.is_file():
        text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{text[:80]!r} is neither a JSON file nor JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError("a candidate or a recipe is a JSON object")
    return data


def _choose_run(args: argparse.Namespace) -> _Run:
    """The candidate and its training: from a recipe (``--recipe``, or ``--candidate`` given a
    recipe file), whose task, epochs and seed apply unless given; else from the space."""
    from winnow.search_space.spec import load_space
    from winnow.service.export import recipe as recipes

    data = (
        _read_json_argument(args.recipe or args.candidate)
        if (args.recipe or args.candidate)
        else None
    )
    if args.recipe or recipes.is_recipe(data):
        recipe = recipes.read(data)
        candidate = _candidate(recipe.candidate)
        if args.space:  # optional with a recipe: the candidate stands alone
            load_space(args.space).validate_candidate(candidate)
        training = recipe.training
        return _Run(
            candidate,
            args.dataset or training.task.dataset,
            args.epochs or training.epochs,
            training.seed if args.seed is None else args.seed,
            recipe,
            training.task.trainer,
            _flag(args.eval_every_epoch, training.task.eval_every_epoch),
        )
    if not (args.space and args.dataset):
        raise ValueError("winnow evaluate needs --space and --dataset, or a --recipe")
    space = load_space(args.space)
    seed = 0 if args.seed is None else args.seed
    if data is not None:
        candidate = space.validate_candidate(_candidate(data))
    elif args.arch:
        candidate = _candidate_for_arch(space, args.arch, seed)
    else:
        candidate = space.sample(1, seed=seed)[0]
    epoch_accuracy = _flag(args.eval_every_epoch, True)
    return _Run(candidate, args.dataset, args.epochs or 1, seed, epoch_accuracy=epoch_accuracy)


def _flag(given: bool | None, default: bool) -> bool:
    return default if given is None else given


def _candidate(data: dict[str, Any]) -> Candidate:
    """A candidate from its JSON mapping; ``SpecError`` lists every field at fault."""
    from pydantic import ValidationError

    from winnow.search_space.candidate import Candidate
    from winnow.search_space.specfile import SpecError, validation_problems

    try:
        return Candidate.model_validate(data)
    except ValidationError as error:
        raise SpecError.of("candidate", validation_problems(error, Candidate)) from None


def _progress(epoch: int, epochs: int, loss: float, seconds: float) -> None:
    line = f"  epoch {epoch}/{epochs}  train loss {loss:.4f}  ({seconds:.2f} s)"
    print(line, file=sys.stderr, flush=True)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from winnow.search_space.datasets import load_dataset
    from winnow.search_space.training import evaluate
    from winnow.search_space.trial import Status, TrialSpec

    run = _choose_run(args)
    load_dataset(run.dataset)  # bad names and missing files are input errors: fail before work
    print(
        f"winnow: evaluating {run.candidate.describe()} on {run.dataset} "
        f"({run.epochs} epochs, seed {run.seed})",
        file=sys.stderr,
    )
    spec = TrialSpec(
        run.candidate,
        run.dataset,
        "train",
        run.epochs,
        args.steps,
        run.seed,
        args.device,
        trainer=run.trainer,
        epoch_accuracy=run.epoch_accuracy,
    )
    result = evaluate(spec, on_epoch=None if args.quiet else _progress)
    out = result.to_json_dict() | {
        "key": run.candidate.key,
        "candidate": run.candidate.model_dump(),
    }
    if run.recipe is not None:
        out |= _comparison(out, run.recipe.metrics)
    if args.json:
        print_json(out)
    else:
        _print_summary(out)
    if out.get("reproduced") is False:
        print(
            f"winnow: the stored metrics were not reproduced: {', '.join(out['differ'])}",
            file=sys.stderr,
        )
    return 0 if result.status == Status.OK else 1


def _comparison(out: dict[str, Any], stored: dict[str, float]) -> dict[str, Any]:
    """The recipe's stored metrics, and whether this run reproduced them: every stored metric
    but the measured ones (latency, memory) must be equal, not close, since the same seed on
    the same kind of device trains the same network bit for bit."""
    compared = [m for m in stored if m not in MEASURED_METRICS and stored[m] is not None]
    differ = [m for m in compared if out.get(m) != stored[m]]
    return {"stored": stored, "reproduced": not differ, "differ": differ}


def _print_summary(out: dict[str, Any]) -> None:
    """One line per metric; beside it the recipe's stored value, when evaluating a recipe."""
    stored = out.get("stored")
    print(f"status      {out['status']}")
    if out.get("error"):
        print(f"error       {out['error']}")
    if stored is not None:
        print(f"{'':<18}{'this run':>14}{'stored':>14}")
    for name in TRAIN_METRICS:
        if name in out:
            line = f"{name:<18}{_number(out[name]):>14}"
            if stored is not None and name in stored:
                same = "" if name in MEASURED_METRICS or out[name] == stored[name] else "  differs"
                line += f"{_number(stored[name]):>14}{same}"
            print(line)
    if stored is not None:
        print(f"reproduced  {'yes' if out['reproduced'] else 'no'}")


def _number(value: float | int | None) -> str:
    """Whole numbers in full (a recipe's JSON stores params as 85004.0), others to 4 digits,
    ``-`` for a stored null (a non-finite value)."""
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.4g}"
    return f"{int(value):,}"


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
    docs = space_commands.add_parser(
        "docs", help="print the spec reference (docs/spec.md) generated from the models"
    )
    docs.set_defaults(func=cmd_space_docs)

    ev = commands.add_parser("evaluate", help="train one candidate and report its metrics")
    ev.add_argument(
        "--space", help="a space file or a built-in name (nb201); optional with a recipe"
    )
    which = ev.add_mutually_exclusive_group()
    which.add_argument(
        "--candidate",
        help="candidate JSON (text or a file; an exported recipe too); default: sample one",
    )
    which.add_argument("--arch", help="an nb201 arch string")
    which.add_argument(
        "--recipe",
        help="a recipe file `winnow export` wrote: train it as stored, compare its metrics",
    )
    ev.add_argument(
        "--dataset", help="digits, npz:PATH, cifar10[:DIR], synthetic; default: the recipe's"
    )
    ev.add_argument("--epochs", type=int, default=None, help="default: the recipe's, else 1")
    ev.add_argument("--steps", type=int, default=None, help="train this many steps instead")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ev.add_argument("--seed", type=int, default=None, help="default: the recipe's, else 0")
    ev.add_argument(
        "--eval-every-epoch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure the test accuracy after every epoch too (accuracy_curve; it changes no "
        "trained result); default: the recipe's task.eval_every_epoch, else on",
    )
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--quiet", action="store_true", help="no per-epoch progress on stderr")
    ev.set_defaults(func=cmd_evaluate)
