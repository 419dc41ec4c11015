"""``winnow bench export``: every export format on random candidates of the joint spaces, each
export checked against winnow's own network.

The candidates are drawn round-robin from three joint spaces (``SPACES``: an MLP on the
digits, a macro network and an NB-201 network on synthetic images), each with every
normalization, every optimizer and every quantization policy (off, per-channel and per-tensor,
symmetric and affine). Per candidate and format:

- ``recipe``: ``recipe.json`` read back (``recipe.read``) gives the same candidate, whose
  network under the recipe's seed computes what the original computes (``max_abs_diff``);
- ``pytorch``: the bundle is written and its ``model.py`` run where ``import winnow`` fails
  (``pytorch_check``): winnow's state_dict loads with ``strict=True``, and the eval outputs,
  the initial parameters and ``preprocess`` must equal winnow's exactly;
- ``weights``: the exporter on a state_dict kept as a search keeps one: its ``weights.pt``
  loads with ``strict=True`` into a fresh network of the candidate (built under another seed),
  which then computes the original's outputs (``model.py``'s module has the same keys: the
  pytorch check loads winnow's state into it strictly);
- ``lightning``: the bundle is written and each of its Python files compiles (the module wraps
  ``model.py``, checked above; it is not trained here: the tests fit it on the digits), so its
  ``max_abs_diff`` is null;
- ``onnx``: ``model.onnx`` run by ONNX Runtime against winnow's torch model in eval mode: ok
  within 1e-5 for a model without activation quantization, else within one quantization step
  of the output. The network exported is the candidate's with its activation ranges
  calibrated (one train-mode batch, disjoint from the inputs compared), kept as a search keeps
  a trial's weights: every trained trial's ranges are calibrated. An uncalibrated network
  quantizes each batch on the batch's own range, so one float-rounding flip (ONNX Runtime and
  torch sum in different orders) moves every later layer's range and the whole output with it
  (at 3ca7b04's seed-0 sample, 6 of the 300 were off by 1 to 2.3 steps that way). ONNX
  Runtime runs the graph as written (``onnx_export.run_onnx``: optimizations off). A float
  failure's reason gives torch's own float32 error against float64, to tell conditioning
  (e.g. a GroupNorm over two channels) from a wrong graph.

``seconds_per_export`` is each format's mean seconds to write one bundle.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import itertools
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from winnow.search_space.builtin_spaces import BUILTIN_SPACES
from winnow.search_space.candidate import Candidate
from winnow.search_space.norms import NORMS
from winnow.search_space.optimizers import OPTIMIZERS
from winnow.search_space.spec import parse_space
from winnow.search_space.training import seed_everything
from winnow.service.export import EXPORT_FORMATS, recipe
from winnow.service.export.pytorch_check import candidate_recipe, check_model_sources
from winnow.service.search_spec import Task

FLOAT_TOLERANCE = 1e-5  # ONNX Runtime against torch, for models without activation quantization
QUANTIZATION = {
    "weight_bits": [4, 8, 32],
    "scope": "group",
    "activation_bits": [4, 8, 32],
    "granularity": ["per_channel", "per_tensor"],
    "symmetric": [True, False],
}
# The families at sizes a 2-core machine exports 300 of in minutes, on the data they need.
SPACES: dict[str, tuple[dict[str, Any], str]] = {
    "mlp": (BUILTIN_SPACES["digits-joint"]["architecture"], "digits"),
    "macro": (
        {
            "family": "macro",
            "base_channels": [8, 16],
            "strides": [1, 2],
            "stem_channels": 8,
            "head_channels": 16,
            "depth": [1, 2],
            "kernel_size": [3, 5],
            "expand_ratio": [3, 6],
            "resolution": [8],
        },
        "digits",
    ),
    "nb201": ({"family": "nb201", "channels": 8, "cells_per_stage": 1}, "synthetic:3x16x16"),
}


def joint_space(family: str):
    """``family``'s architecture with every norm, every optimizer and every quantization."""
    architecture, _ = SPACES[family]
    optimizer = copy.deepcopy(BUILTIN_SPACES["digits-joint"]["optimizer"])
    optimizer["name"] = OPTIMIZERS.names()
    return parse_space(
        {
            "name": f"{family}-export",
            "architecture": architecture,
            "normalization": NORMS.names(),
            "optimizer": optimizer,
            "quantization": QUANTIZATION,
        }
    )


def sample_recipes(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` recipes, round-robin over the families, each space sampled with ``seed``."""
    per_family = {f: joint_space(f).sample(n // len(SPACES) + 1, seed=seed) for f in SPACES}
    order = itertools.cycle(SPACES)
    taken = {family: 0 for family in SPACES}
    recipes = []
    for family in itertools.islice(order, n):
        candidate = per_family[family][taken[family]]
        taken[family] += 1
        recipes.append(candidate_recipe(candidate, SPACES[family][1], seed=seed))
    return recipes


@dataclass
class FormatTally:
    ok: int = 0
    failed: int = 0
    max_abs_diff: float | None = None  # over the candidates measured (None: not measured)
    seconds: list[float] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)  # why the failures failed

    def add(self, passed: bool, diff: float | None, reason: str | None = None) -> None:
        self.ok += passed
        self.failed += not passed
        if diff is not None:
            self.max_abs_diff = max(diff, self.max_abs_diff or 0.0)
        if reason:
            self.reasons[reason[:200]] = self.reasons.get(reason[:200], 0) + 1

    def report(self) -> dict[str, Any]:
        seconds = sum(self.seconds) / len(self.seconds) if self.seconds else None
        return {
            "ok": self.ok,
            "failed": self.failed,
            "max_abs_diff": self.max_abs_diff,
            "seconds_per_export": seconds,
            "failures": self.reasons,
        }


def _timed(work: Callable[[], Any], tally: FormatTally) -> Any:
    start = time.perf_counter()
    try:
        return work()
    finally:
        tally.seconds.append(time.perf_counter() - start)


def _network(data: dict[str, Any]) -> torch.nn.Module:
    task = Task.model_validate(data["training"]["task"])
    input_shape, num_classes = task.shape()
    seed_everything(data["training"]["seed"])
    return Candidate(**data["candidate"]).build_model(num_classes, input_shape).eval()


def check_recipe(data: dict[str, Any], tally: FormatTally) -> None:
    files = _timed(lambda: EXPORT_FORMATS.get("recipe")(data), tally)
    read = recipe.read(json.loads(files[recipe.FILE_NAME]))
    again = {**data, "candidate": read.candidate}
    inputs = _inputs(data)
    with torch.no_grad():
        diff = float((_network(data)(inputs) - _network(again)(inputs)).abs().max())
    tally.add(read.candidate == data["candidate"] and diff == 0.0, diff, None)


def check_lightning(data: dict[str, Any], tally: FormatTally) -> None:
    files = _timed(lambda: EXPORT_FORMATS.get("lightning")(data), tally)
    for name, text in files.items():
        if name.endswith(".py"):
            compile(text, name, "exec")
    tally.add(True, None)


def check_onnx(data: dict[str, Any], tally: FormatTally, folder: Path) -> None:
    """The registered exporter on the candidate's network with calibrated activation ranges
    (kept as a search keeps a trial's weights), run by ONNX Runtime against that network."""
    from winnow.service.export import onnx_export

    task = Task.model_validate(data["training"]["task"])
    candidate = Candidate(**data["candidate"])
    model = onnx_export.build(candidate, task, data["training"]["seed"])
    _calibrate(model, task)
    path = folder / f"{candidate.key}-onnx.pt"
    torch.save(model.state_dict(), path)
    kept = {**data, "artifacts": {"weights": str(path)}}
    files = _timed(lambda: EXPORT_FORMATS.get("onnx")(kept), tally)
    inputs = torch.randn((16, *task.shape()[0]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(inputs)
    got = onnx_export.run_onnx(files[onnx_export.FILE_NAME], inputs)
    diff, step = float((got - expected).abs().max()), onnx_export.output_step(model, inputs)
    if step > 0:
        passed, reason = diff <= step, f"off by {diff:.3g} (step {step:.3g})"
    else:
        passed = diff <= FLOAT_TOLERANCE * max(1.0, float(expected.abs().max()))
        reason = f"off by {diff:.3g}; {_float64_error(model, inputs, expected, got)}"
    tally.add(passed, diff, None if passed else reason)


def _calibrate(model: torch.nn.Module, task: Task) -> None:
    """Observe activation ranges (and BatchNorm statistics) on one train-mode batch."""
    batch = torch.randn((64, *task.shape()[0]), generator=torch.Generator().manual_seed(1))
    model.train()
    with torch.no_grad():
        model(batch)
    model.eval()


def _float64_error(
    model: torch.nn.Module, inputs: torch.Tensor, torch32: torch.Tensor, ort32: torch.Tensor
) -> str:
    """How far torch's and ONNX Runtime's float32 outputs each are from float64's."""
    try:
        with torch.no_grad():
            exact = copy.deepcopy(model).double()(inputs.double())
    except RuntimeError as error:  # an op without a float64 kernel
        return f"no float64 reference ({error})"[:120]
    torch_error = float((torch32.double() - exact).abs().max())
    ort_error = float((ort32.double() - exact).abs().max())
    return f"from float64: torch {torch_error:.3g}, ONNX Runtime {ort_error:.3g}"


def check_weights(data: dict[str, Any], tally: FormatTally, folder: Path) -> None:
    """The ``weights`` exporter on a state_dict kept as a search keeps one (a file the recipe's
    ``artifacts`` names): its ``weights.pt`` loads with ``strict=True`` into a fresh network of
    the candidate, which then computes the original's outputs."""
    original = _network(data)
    path = folder / f"{Candidate(**data['candidate']).key}.pt"
    torch.save(original.state_dict(), path)
    kept = {**data, "artifacts": {"weights": str(path)}}
    files = _timed(lambda: EXPORT_FORMATS.get("weights")(kept), tally)
    fresh = _network(
        {**data, "training": {**data["training"], "seed": data["training"]["seed"] + 1}}
    )
    fresh.load_state_dict(
        torch.load(io.BytesIO(files["weights.pt"]), weights_only=True), strict=True
    )
    inputs = _inputs(data)
    with torch.no_grad():
        diff = float((fresh(inputs) - original(inputs)).abs().max())
    tally.add(diff == 0.0, diff, None if diff == 0.0 else "outputs differ after loading")


def _inputs(data: dict[str, Any]) -> torch.Tensor:
    task = Task.model_validate(data["training"]["task"])
    return torch.randn((4, *task.shape()[0]), generator=torch.Generator().manual_seed(0))


def run(sample: int, seed: int, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)  # small networks: one thread beats two contended ones
    recipes = sample_recipes(sample, seed)
    tallies = {
        name: FormatTally() for name in ("recipe", "pytorch", "weights", "lightning", "onnx")
    }
    with tempfile.TemporaryDirectory() as folder:
        checks = {
            "recipe": check_recipe,
            "weights": functools.partial(check_weights, folder=Path(folder)),
            "lightning": check_lightning,
            "onnx": functools.partial(check_onnx, folder=Path(folder)),
        }
        bundles = tallies["pytorch"]  # timed here; checked in one subprocess below
        for index, data in enumerate(recipes):
            for name, check in checks.items():
                try:
                    check(data, tallies[name])
                except Exception as error:  # noqa: BLE001 - a failed export is counted, with why
                    tallies[name].add(False, None, f"{type(error).__name__}: {error}")
            with contextlib.suppress(Exception):  # the subprocess check below says why
                _timed(lambda data=data: EXPORT_FORMATS.get("pytorch")(data), bundles)
            if progress:
                progress(index + 1)
    for source in check_model_sources(recipes, seed=seed):
        reason = source.error or (None if source.ok else "outputs, init or preprocess differ")
        tallies["pytorch"].add(source.ok, source.max_abs_diff, reason)
    formats = {name: tally.report() for name, tally in tallies.items()}
    exports = [s for t in tallies.values() for s in t.seconds]
    return {
        "candidates": len(recipes),
        "seed": seed,
        "families": {family: dataset for family, (_, dataset) in SPACES.items()},
        "formats": formats,
        "seconds_per_export": sum(exports) / len(exports) if exports else None,
    }
