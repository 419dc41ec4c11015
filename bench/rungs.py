"""``winnow bench rungs``: what continued rungs save (``strategy.continue_rungs``).

The same search runs twice, each in a store of its own (nothing reused between them): the same
seed, the same candidates (a fixed list drawn once from the space with ``--seed`` and given as
the spec's ``warm_start``, which the engine proposes first and in order; ``max_trials`` is
their number, so nothing else is proposed), rungs ``[1, 3, 9]``, reduction factor 3, one
training at a time on the in-process executor (``reproducible``), so results arrive in one
order. Once from scratch (``continue_rungs: false``: rung ``r`` trains ``rungs[r]`` epochs under
a ``rungs[r]``-epoch schedule) and once continued (each rung trains on from the last one's
checkpoint under the top rung's schedule).

What is compared: the epochs each search trained (the engine's count: the ``epochs_run`` of its
rows), their ratio as ``saving``, and the top-rung accuracy of each search (its best completed
trial's). Successive halving here is asynchronous (ASHA): which candidates go up depends on the
rung's results and the order they arrive in, and a continued first rung ranks the candidates
after the first epoch of a 9-epoch schedule, not after a 1-epoch schedule, so left alone the two
searches may promote different candidates (and a different number of them). So the continued
search is *forced* to make the from-scratch search's promotions (``force_promotions``):
``same_promotions`` checks it did. Then its top-rung networks are the same candidates trained 9
epochs under the same 9-epoch schedule, which a continued training reproduces bit for bit
(``tests/search_space/test_checkpoints.py``): the accuracies agree, and the saving is the
epochs that were trained twice. A third search, continued and left to its own promotions,
is reported under ``continued_own_promotions``. With 9 candidates and 3 + 1 promotions
successive halving trains 9 x 1 + 3 x 3 + 1 x 9 = 27 epochs from scratch and 9 + 3 x 2 + 1 x 6
= 21 continued: a 22 % saving (ASHA may promote more than a third in the end; the saving is
then larger).
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

from winnow.search_space.params import RandomChooser
from winnow.search_space.spec import parse_space
from winnow.service.engine import Engine
from winnow.service.engine.rungs import SuccessiveHalving
from winnow.service.search_spec import parse_search_spec
from winnow.service.store import Store, sqlite_url
from winnow.workers.executor import InProcessExecutor

SPACE = {
    "architecture": {
        "family": "mlp",
        "depth": [1, 2],
        "width": [16, 32, 64, 128, 256],
        "activation": "relu",
    },
    "optimizer": {"name": "adamw", "lr": {"low": 1e-3, "high": 1e-2, "log": True}},
}


def candidates(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` distinct candidates of the space, drawn with ``seed``."""
    space, rng = parse_space(SPACE), random.Random(seed)
    drawn: dict[str, dict[str, Any]] = {}
    for _ in range(100 * count):
        candidate = space.suggest(RandomChooser(rng))
        drawn.setdefault(candidate.key, json.loads(candidate.canonical_json()))
        if len(drawn) == count:
            return list(drawn.values())
    raise ValueError(f"the space has fewer than {count} distinct candidates")


def search_spec(
    dataset: str,
    warm: list[dict[str, Any]],
    rungs: list[int],
    reduction_factor: int,
    seed: int,
    continued: bool,
) -> dict[str, Any]:
    strategy = {"name": "random", "rungs": rungs, "reduction_factor": reduction_factor}
    return {
        "name": f"rungs-{'continued' if continued else 'from-scratch'}",
        "space": SPACE,
        "task": {"dataset": dataset},
        "budget": {"max_trials": len(warm)},
        "strategy": strategy | {"continue_rungs": continued},
        "warm_start": warm,
        "reproducible": True,
        "keep_weights": 0,
        "seed": seed,
    }


def run_search(
    spec: dict[str, Any], folder: Path, forced: list[tuple[int, int]] | None = None
) -> dict[str, Any]:
    """One search in a fresh store: its epochs, promotions (``(number, rung)`` in order) and
    top-rung accuracies. ``forced``: promote exactly these (see :func:`force_promotions`)."""
    store = Store(sqlite_url(folder / "bench.db"))
    engine = Engine.create(parse_search_spec(spec), store, InProcessExecutor())
    if forced is not None:
        force_promotions(engine.ladder, forced)
    report = engine.run()
    rows = [r for r in store.trials(report.search_id) if r.stage == "train" and r.status == "ok"]
    top = len(spec["strategy"]["rungs"]) - 1
    promotions = [(r.number, r.rung) for r in sorted(rows, key=lambda r: r.id) if r.rung > 0]
    accuracy = {r.number: r.metrics["accuracy"] for r in rows if r.rung == top}
    return {"epochs": report.epochs, "promotions": promotions, "top": accuracy}


def force_promotions(ladder: SuccessiveHalving, promotions: list[tuple[int, int]]) -> None:
    """Make ``ladder`` promote exactly ``promotions`` (``(number, rung)``: another search's),
    each once its result at the rung below is in. The engine, its training and its outcomes
    share this one ladder object, so its ``promotable`` is replaced on the instance (a bench's
    hook: the engine has no setting for it)."""

    def promotable(rung: int) -> list[int]:
        due = [n for n, r in promotions if r == rung + 1 and n in ladder.results[rung]]
        return [n for n in due if n not in ladder.promoted[rung]]

    ladder.promotable = promotable  # type: ignore[method-assign]


def best(accuracies: dict[int, float]) -> float | None:
    return max(accuracies.values()) if accuracies else None


def run(
    dataset: str = "digits",
    count: int = 9,
    seed: int = 0,
    rungs: tuple[int, ...] = (1, 3, 9),
    reduction_factor: int = 3,
) -> dict[str, Any]:
    """The searches of the module docstring; the JSON ``winnow bench rungs`` prints."""
    torch.set_num_threads(1)
    warm = candidates(count, seed)

    def search(continued: bool, forced: list[tuple[int, int]] | None = None) -> dict[str, Any]:
        spec = search_spec(dataset, warm, list(rungs), reduction_factor, seed, continued)
        with tempfile.TemporaryDirectory(prefix="winnow-bench-rungs-") as folder:
            return run_search(spec, Path(folder), forced)

    scratch = search(False)
    continued = search(True, forced=scratch["promotions"])
    free = search(True)
    top_scratch, top_continued = best(scratch["top"]), best(continued["top"])
    gap = None if None in (top_scratch, top_continued) else top_continued - top_scratch
    return {
        "dataset": dataset,
        "candidates": count,
        "seed": seed,
        "rungs": list(rungs),
        "reduction_factor": reduction_factor,
        "epochs_from_scratch": scratch["epochs"],
        "epochs_continued": continued["epochs"],
        "saving": 1 - continued["epochs"] / scratch["epochs"],
        "top_rung_accuracy_from_scratch": top_scratch,
        "top_rung_accuracy_continued": top_continued,
        "accuracy_gap_points": None if gap is None else 100 * gap,
        "same_promotions": sorted(scratch["promotions"]) == sorted(continued["promotions"]),
        "promotions": scratch["promotions"],
        "continued_own_promotions": {  # the continued search left to its own decisions
            "epochs": free["epochs"],
            "saving": 1 - free["epochs"] / scratch["epochs"],
            "top_rung_accuracy": best(free["top"]),
            "promotions": free["promotions"],
        },
    }
