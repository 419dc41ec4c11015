"""The supernet's two trial stages, for every family registered in ``winnow.supernet.registry``.

``supernet_train`` trains the supernet of (task, space, settings) once: a long trial that
reports each epoch (``on_epoch``), checkpoints after each to ``options["checkpoint"]`` so that a
re-run after a kill (the local pool retries a trial whose worker died) resumes where the last
epoch ended, and writes the trained weights to ``options["output"]`` (atomically: the file is
complete or absent). Its result's ``value`` is that path.

``supernet`` scores one candidate: its inherited accuracy (``supernet.accuracy``, a fraction) on
a validation split carved from the training data (``validation_split``: the supernet never
trained on it, and the test split that trained candidates are scored on is never read), its
BatchNorm statistics re-estimated on ``bn_batches`` training batches. A worker keeps the last
supernets it loaded, so scoring a stream of candidates reads the file once.

Both run on the CPU of the worker's process, whatever the spec's device (the supernets are
small, and it keeps one copy of the weights per worker); neither raises for a bad candidate.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from winnow.search_space.datasets import Dataset, load_dataset
from winnow.search_space.spec import parse_space
from winnow.search_space.trial import EpochCallback, Status, TrialResult, TrialSpec
from winnow.supernet.macro_training import batches, validation_split
from winnow.supernet.registry import SUPERNETS, TrainSettings, supernet_space

TRAIN_STAGE = "supernet_train"
SCORE_STAGE = "supernet"
# a scoring trial's error when the supernet's file cannot be loaded (not the candidate's fault:
# the engine's stage then goes on without the supernet)
LOAD_ERROR = "SupernetLoadError"
log = logging.getLogger("winnow.supernet")


def _options(spec: TrialSpec) -> dict[str, Any]:
    if spec.options is None:
        raise ValueError(f"a {spec.stage} trial needs its options (space, settings, files)")
    return json.loads(spec.options)


def _split(dataset: str, settings: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """The normalised training samples the supernet learns from and those held out
    (``dataset``: the trial's ``NAME:ARG``)."""
    return _split_of(dataset, settings["validation_fraction"], settings["seed"])


@functools.lru_cache(maxsize=1)
def _split_of(dataset_name: str, fraction: float, seed: int) -> tuple[torch.Tensor, ...]:
    """Kept for the next trial: a worker scores a stream of candidates on the same split, and
    normalising a CIFAR-sized training set each time would cost more than scoring."""
    dataset = load_dataset(dataset_name)
    x, y = dataset.normalize(dataset.train_x), dataset.train_y.long()
    fit, held = validation_split(len(y), fraction, seed)
    return x[fit], y[fit], x[held], y[held]


def training_samples(dataset_name: str, fraction: float, seed: int) -> int:
    """How many samples a supernet of these settings trains on: the task's training set less
    the validation split, as this module's trials carve it."""
    return len(_split_of(dataset_name, fraction, seed)[1])


def _build(options: dict[str, Any], dataset: Dataset) -> nn.Module:
    space = supernet_space(parse_space(options["space"]), options["settings"])
    entry = SUPERNETS.get(space.architecture.family)
    # the supernet's initial weights, seeded without reseeding the caller's generator (an
    # in-process executor runs this in the engine's process)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options["settings"]["seed"])
        return entry.build(space, dataset.num_classes, dataset.input_shape)


def _failed(error: Exception, start: float) -> TrialResult:
    message = f"{type(error).__name__}: {error}"
    return TrialResult(Status.FAILED, error=message, seconds=time.perf_counter() - start)


def train_supernet_trial(spec: TrialSpec, on_epoch: EpochCallback | None = None) -> TrialResult:
    """The ``supernet_train`` stage (``spec.candidate`` is not used: the space in ``options``
    says what the supernet covers)."""
    start = time.perf_counter()
    try:
        options = _options(spec)
        output, checkpoint = Path(options["output"]), Path(options["checkpoint"])
        if output.is_file():  # trained before the engine recorded it: nothing to redo
            return TrialResult(Status.OK, value=str(output), seconds=time.perf_counter() - start)
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        supernet, steps = _train_or_restart(spec, options, on_epoch, checkpoint)
        _save(supernet, output)
        checkpoint.unlink(missing_ok=True)
    except Exception as error:  # a failed trial must not end the caller's search
        return _failed(error, start)
    seconds = time.perf_counter() - start
    metrics = {"supernet.steps": float(steps), "supernet.train_seconds": seconds}
    return TrialResult(Status.OK, metrics, value=str(output), seconds=seconds)


def _train_or_restart(
    spec: TrialSpec, options: dict[str, Any], on_epoch: EpochCallback | None, checkpoint: Path
) -> tuple[nn.Module, int]:
    """The trained supernet and its steps. A checkpoint that cannot be resumed (other
    settings, an older format, a torch.load error: the training raises before its first
    epoch) is set aside as ``.ckpt.bad`` and the training starts afresh, once: otherwise every
    retry of the key would fail on it. An error that recurs on a fresh start is the trial's."""
    reported = [False]

    def epoch(*args: Any) -> None:
        reported[0] = True
        if on_epoch is not None:
            on_epoch(*args)

    resuming = checkpoint.is_file()
    try:
        return _train(spec, options, epoch, checkpoint)
    except Exception as error:
        if not resuming or reported[0]:
            raise
        bad = checkpoint.with_name(checkpoint.name + ".bad")
        os.replace(checkpoint, bad)
        log.warning(
            "supernet checkpoint %s not resumable (%s: %s): set aside as %s, training afresh",
            checkpoint,
            type(error).__name__,
            error,
            bad,
        )
        return _train(spec, options, on_epoch, checkpoint)


def _train(
    spec: TrialSpec, options: dict[str, Any], on_epoch: EpochCallback | None, checkpoint: Path
) -> tuple[nn.Module, int]:
    dataset = load_dataset(spec.dataset)
    x, y, _, _ = _split(spec.dataset, options["settings"])
    supernet = _build(options, dataset)
    settings = options["settings"]
    train = TrainSettings(
        settings["epochs"], settings["max_seconds"], settings["batch_size"], settings["seed"]
    )
    space = supernet_space(parse_space(options["space"]), options["settings"])
    family = SUPERNETS.get(space.architecture.family)
    return supernet, family.train(supernet, space, x, y, train, on_epoch, checkpoint)


def _save(supernet: nn.Module, output: Path) -> None:
    """Write the weights as ``.tmp``, fsync, rename: the file is complete or absent, also
    after a power loss (a recorded file is trusted by its existence)."""
    partial = output.with_name(output.name + ".tmp")
    with open(partial, "wb") as file:
        torch.save(supernet.state_dict(), file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, output)


@functools.lru_cache(maxsize=2)
def _loaded(path: str, modified: float, options_json: str, dataset_name: str) -> nn.Module:
    """A trained supernet, built and loaded once per worker (``modified``: a rewritten file
    is read again)."""
    options, dataset = json.loads(options_json), load_dataset(dataset_name)
    supernet = _build(options, dataset)
    supernet.load_state_dict(torch.load(path, weights_only=True))  # tensors, never code
    return supernet.eval()


def score_supernet_trial(spec: TrialSpec, on_epoch: EpochCallback | None = None) -> TrialResult:
    """The ``supernet`` stage: ``spec.candidate``'s inherited accuracy."""
    start = time.perf_counter()
    try:
        options = _options(spec)
        settings, path = options["settings"], options["path"]
        family = SUPERNETS.get(spec.candidate.architecture["family"])
        shared = json.dumps({"space": options["space"], "settings": settings}, sort_keys=True)
        try:
            supernet = _loaded(path, os.path.getmtime(path), shared, spec.dataset)
        except Exception as error:  # the file's fault, not the candidate's
            message = f"{LOAD_ERROR}: {path}: {type(error).__name__}: {error}"
            return TrialResult(Status.FAILED, error=message, seconds=time.perf_counter() - start)
        x, y, val_x, val_y = _split(spec.dataset, settings)
        # BatchNorm batches and the validation subset: seeded shuffles, so that they mix
        # classes whatever the file's order (the held-out indices are sorted)
        seed, size, cap = settings["seed"], settings["batch_size"], settings["validation_samples"]
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        held = torch.randperm(len(val_y), generator=torch.Generator().manual_seed(seed + 1))
        held = held[:cap]
        accuracy = family.score(
            supernet,
            spec.candidate,
            batches(x[order], y[order], size),
            batches(val_x[held], val_y[held], size),
            settings["bn_batches"],
        )
    except Exception as error:  # a failed candidate must not end the caller's search
        return _failed(error, start)
    seconds = time.perf_counter() - start
    return TrialResult(Status.OK, {"supernet.accuracy": accuracy}, seconds=seconds)
