"""Whether ``model.py`` (``pytorch_model.model_source``) is winnow's network without winnow:
``check_model_sources`` runs the exported files in one subprocess where ``import winnow`` fails
and compares them with winnow's own networks, bit for bit.

Per recipe: winnow's network is built under a seed, its parameters perturbed and a few
training-mode batches run through it (so that BatchNorm statistics, quantization observers and
SkipInit's data-dependent scale hold values a trained network would, not their defaults); its
``state_dict``, a fixed input batch and its eval-mode float32 outputs go to the subprocess,
which loads the state into ``build_model()`` with ``strict=True`` and compares the outputs. It
also checks that ``build_model()`` under the same seed starts from winnow's initial
parameters, and ``preprocess`` on the task's raw test inputs against winnow's loader. Both
processes run one thread (so that CPU kernels reduce in the same order, and because threads
only contend on networks this small).
``winnow bench export`` and the tests call it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from winnow.search_space.candidate import Candidate
from winnow.search_space.datasets import load_dataset
from winnow.service.export.pytorch_model import (
    FILE_NAME,
    ExportError,
    network_source,
    task_of,
)
from winnow.service.export.recipe import FORMAT as RECIPE_FORMAT

_PERTURBATION = 0.1  # std of the noise added to every parameter
_TRAINING_BATCHES = 2  # training-mode batches that set running statistics and observers
_BATCH = 4

# Run as a file by a fresh interpreter (-I: no PYTHONPATH, no script directory on the path).
_SCRIPT = r"""
import importlib.util
import json
import sys
import traceback

sys.modules["winnow"] = None  # model.py must run without winnow: importing it now fails
import torch


def difference(a, b):
    if a.shape != b.shape:
        return float("inf")
    both_nan = torch.isnan(a) & torch.isnan(b)
    gap = torch.where(both_nan, torch.zeros_like(a), (a.float() - b.float()).abs())
    return float(gap.max()) if gap.numel() else 0.0


def same_state(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def check(index, case):
    spec = importlib.util.spec_from_file_location(f"exported_model_{index}", case["path"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(case["seed"])
    model = module.build_model()
    init_equal = same_state(model.state_dict(), case["initial"])
    model.load_state_dict(case["state"], strict=True)
    model.eval()
    with torch.no_grad():
        outputs = model(case["inputs"])
        preprocessed = module.preprocess(case["raw"])
    return {
        "max_abs_diff": difference(outputs, case["expected"]),
        "init_equal": init_equal,
        "preprocess_diff": difference(preprocessed, case["preprocessed"]),
    }


def main():
    data = torch.load(sys.argv[1], weights_only=True)
    torch.set_num_threads(data["threads"])
    results = []
    for index, case in enumerate(data["cases"]):
        try:
            results.append(check(index, case))
        except Exception:
            results.append({"error": traceback.format_exc(limit=-3)})
    with open(sys.argv[2], "w") as out:
        json.dump(results, out)


main()
"""


@dataclass(frozen=True)
class SourceCheck:
    """One recipe's check. ``error``: why it did not export or run (then the numbers are
    None); ``export_seconds``: how long ``model_source`` took."""

    key: str  # the candidate's key
    max_abs_diff: float | None = None  # eval-mode outputs, model.py vs winnow
    init_equal: bool | None = None  # same initial parameters under the same seed
    preprocess_diff: float | None = None  # preprocess vs winnow's loader on raw test inputs
    error: str | None = None
    export_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.max_abs_diff == 0.0
            and bool(self.init_equal)
            and self.preprocess_diff == 0.0
        )


def candidate_recipe(candidate: Candidate, dataset: str, seed: int = 0) -> dict[str, Any]:
    """A recipe for a bare candidate (what ``readout.recipe`` gives for a trained trial, less
    the search it came from), for benchmarks and tests."""
    return {
        "format": RECIPE_FORMAT,
        "candidate": candidate.model_dump(mode="json"),
        "training": {"task": {"dataset": dataset}, "epochs": 1, "seed": seed},
    }


def _exercise(model: nn.Module, input_shape: tuple[int, ...], generator: torch.Generator) -> None:
    """Give every parameter and running statistic a value a default would not have."""
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(_PERTURBATION * noise)
        model.train()
        for _ in range(_TRAINING_BATCHES):
            model(torch.randn(2 * _BATCH, *input_shape, generator=generator))
    model.eval()


def _case(recipe: dict[str, Any], path: Path, seed: int) -> dict[str, Any]:
    """model.py written to ``path`` and what the subprocess compares it with."""
    candidate = Candidate.model_validate(recipe["candidate"])
    task = task_of(recipe)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = candidate.build_model(task.num_classes, task.input_shape)
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        source = network_source(recipe, model)  # what model_source(recipe) gives
        path.parent.mkdir(parents=True)
        path.write_text(source)
        generator = torch.Generator().manual_seed(seed)
        _exercise(model, task.input_shape, generator)
        inputs = torch.randn(_BATCH, *task.input_shape, generator=generator)
        with torch.no_grad():
            expected = model(inputs)
    dataset = load_dataset(task.dataset)
    raw = dataset.test_x[:_BATCH]
    return {
        "path": str(path),
        "seed": seed,
        "initial": initial,
        "state": model.state_dict(),
        "inputs": inputs,
        "expected": expected,
        "raw": raw,
        "preprocessed": dataset.normalize(raw),
    }


def check_model_sources(
    recipes: list[dict[str, Any]], seed: int = 0, timeout: float = 600.0
) -> list[SourceCheck]:
    """Export each recipe's model.py and compare it with winnow's network (see the module's
    docstring), all in one subprocess; one ``SourceCheck`` per recipe, in order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these networks are small: 10x faster on a busy 2-core machine
    try:
        return _check(recipes, seed, timeout)
    finally:
        torch.set_num_threads(threads)


def _check(recipes: list[dict[str, Any]], seed: int, timeout: float) -> list[SourceCheck]:
    keys = [Candidate.model_validate(recipe["candidate"]).key for recipe in recipes]
    checks: dict[int, SourceCheck] = {}
    cases, exported, seconds = [], [], []
    with tempfile.TemporaryDirectory(prefix="winnow-model-check-") as folder:
        root = Path(folder)
        for index, recipe in enumerate(recipes):
            started = time.perf_counter()
            try:
                cases.append(_case(recipe, root / f"case{index}" / FILE_NAME, seed + index))
            except ExportError as error:
                checks[index] = SourceCheck(keys[index], error=f"not exported: {error}")
                continue
            exported.append(index)
            seconds.append(time.perf_counter() - started)
        results = _run(cases, root, timeout) if cases else []
    for index, result, took in zip(exported, results, seconds, strict=True):
        checks[index] = SourceCheck(keys[index], export_seconds=took, **result)
    return [checks[index] for index in range(len(recipes))]


def _run(cases: list[dict[str, Any]], root: Path, timeout: float) -> list[dict[str, Any]]:
    script, data, results = root / "check.py", root / "cases.pt", root / "results.json"
    script.write_text(_SCRIPT)
    torch.save({"threads": torch.get_num_threads(), "cases": cases}, data)
    done = subprocess.run(
        [sys.executable, "-I", str(script), str(data), str(results)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the model.py check failed to run: {done.stderr[-2000:]}")
    return json.loads(results.read_text())


def check_model_source(recipe: dict[str, Any]) -> SourceCheck:
    """``check_model_sources`` for one recipe (``model_source(recipe)`` is the file checked)."""
    return check_model_sources([recipe])[0]
