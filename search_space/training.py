"""Train and evaluate one candidate at one fidelity; report accuracy and costs.

``evaluate(spec)`` never raises for a bad candidate: a NaN/Inf loss, running out of memory, or
a candidate that cannot be built for the data all end as a ``failed`` TrialResult with a reason
(and whatever metrics were already known, e.g. params and FLOPs), so a search goes on.
"""

from __future__ import annotations

import io
import logging
import math
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from winnow.search_space.accelerate import (
    autocast,
    prepare_input,
    prepare_model,
    uses_channels_last,
)
from winnow.search_space.accuracy import test_accuracy
from winnow.search_space.candidate import Candidate
from winnow.search_space.checkpoints import Checkpoint, capture, restore, saved_accuracy
from winnow.search_space.costs import bitops, count_flops, count_parameters, model_bytes
from winnow.search_space.datasets import Dataset, load_dataset
from winnow.search_space.optimizers import backward_and_step
from winnow.search_space.peak_memory import peak_memory_bytes, reset_peak_memory
from winnow.search_space.schedules import build_scheduler
from winnow.search_space.trainer import Fitted, TrainData, TrainFunction, fitted_of, load_trainer
from winnow.search_space.trial import EpochCallback, Fidelity, Status, TrialResult, TrialSpec

log = logging.getLogger(__name__)

# Weights larger than this are not returned (``TrialSpec.keep_weights``): they travel with the
# result through a worker's pipe (which the local pool's one dispatcher thread reads whole) or
# Ray's object store, and the server holds them while it writes them. 64 MiB is 16M float32
# parameters; an export reply carries at most 8 MiB of them (``export.weights``), so larger
# kept weights are copied from the server's artifact folder.
MAX_WEIGHTS_BYTES = 64 << 20
LATENCY_BATCH = 64  # inference latency is measured per batch of this many samples
LATENCY_REPEATS = 10


class NonFiniteLossError(ArithmeticError):
    """The training loss became NaN or infinite."""


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; asking for CUDA without it is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return torch.device(device)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def static_metrics(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """Costs known without training (per sample for FLOPs and BitOPs)."""
    return {
        "params": count_parameters(model),
        "flops": count_flops(model, input_shape),
        "model_bytes": model_bytes(model),
        "bitops": bitops(model, input_shape),
    }


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: TrainData,
    epochs: int,
    on_epoch: EpochCallback | None = None,
    checkpoint: Checkpoint | None = None,
    max_steps: int | None = None,
) -> Fitted:
    """Train ``model`` until it has ``epochs`` epochs in all (at most ``max_steps`` steps):
    winnow's training loop, the default :class:`~winnow.search_space.trainer.TrainFunction`
    (``task.trainer`` names another; ``trainer.py`` documents the interface). With a
    ``checkpoint``, its saved state is loaded first (a run that ended at epoch 3 of a 9-epoch
    schedule goes on with epoch 4) and the state is saved after every epoch
    (``checkpoints.capture``). ``scheduler`` is stepped once per optimizer step; its length
    is the caller's (a rung trains the top rung's schedule). ``on_epoch`` hears ``(epoch,
    epochs, loss, seconds)``, epochs counted from the start of the schedule. With
    ``data.epoch_accuracy`` the test accuracy is measured after every epoch
    (``TrainData.accuracy``, which leaves the training untouched) and saved with the curve;
    a checkpoint without them (saved with it off) gives a run without them: a curve is whole
    or absent. With ``data.final_follows`` the last epoch's is left to the caller, whose
    final accuracy is that same measurement (:data:`LEFT_TO_CALLER` holds its place, in the
    checkpoint too: a run resumed from it measures the restored network in its stead)."""
    curve: list[float] = []
    accuracy: list[float] = []
    resumed_at = 0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        resumed_at, curve = restore(saved, model, optimizer, scheduler, data.generator)
        accuracy = saved_accuracy(saved, resumed_at)
    measured = data.epoch_accuracy and len(accuracy) == resumed_at
    pending = measured and bool(accuracy) and _left_to_caller(accuracy[-1])
    if pending and (resumed_at < epochs or not data.final_follows):
        accuracy[-1] = data.accuracy(model)  # the network the last run's caller measured
    step = scheduler.last_epoch  # optimizer steps taken (the scheduler counts them)
    channels_last = uses_channels_last(model, data.device)
    for epoch in range(resumed_at, epochs):
        epoch_start = time.perf_counter()
        model.train()
        losses = []
        for x, y in data.batches():
            if len(y) < 2 or (max_steps is not None and step >= max_steps):
                continue  # batch statistics need two samples
            with autocast(data.device, data.candidate):
                loss = F.cross_entropy(model(prepare_input(x, channels_last)), y)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}"
                )
            backward_and_step(optimizer, loss)
            scheduler.step()
            losses.append(loss.item())
            step += 1
        curve.append(statistics.fmean(losses))
        if measured:
            last = epoch == epochs - 1 and data.final_follows
            accuracy.append(LEFT_TO_CALLER if last else data.accuracy(model))
        if checkpoint is not None:
            state = capture(model, optimizer, scheduler, data.generator, epoch + 1, curve, accuracy)
            checkpoint.save(state)
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs, curve[-1], time.perf_counter() - epoch_start)
    return Fitted(curve, len(curve) - resumed_at, accuracy if measured else [])


# The place of the last epoch's accuracy when winnow's loop leaves it to its caller
# (``TrainData.final_follows``): measured straight after the training, the final accuracy is
# that epoch's, so it is measured once, after the optimizer's state is freed, exactly as with
# ``task.eval_every_epoch`` off (the same accuracy and peak memory). NaN: no accuracy is one.
LEFT_TO_CALLER = math.nan


def _left_to_caller(value: float) -> bool:
    return math.isnan(value)


def final_accuracy_curve(accuracy: list[float], final: float) -> list[float]:
    """The per-epoch accuracy with the place :func:`fit` left to its caller filled with the
    final accuracy ``final``."""
    if accuracy and _left_to_caller(accuracy[-1]):
        return [*accuracy[:-1], final]
    return list(accuracy)


def train(
    model: nn.Module,
    candidate: Candidate,
    dataset: Dataset,
    fidelity: Fidelity,
    device: torch.device,
    generator: torch.Generator,
    on_epoch: EpochCallback | None = None,
    schedule_epochs: int | None = None,
    checkpoint: Checkpoint | None = None,
    trainer: str | None = None,
    epoch_accuracy: bool = True,
) -> Fitted:
    """Train with the candidate's optimizer, warmup and schedule (over ``schedule_epochs``,
    default the fidelity's epochs; a step fidelity's schedule is its steps) through
    :func:`fit`, or through the user's training function ``trainer`` (``"pkg.mod:fit"``,
    imported here, in the worker), called with the same arguments; ``epoch_accuracy`` asks
    for the test accuracy after every epoch (``TrainData.epoch_accuracy``). The caller
    measures the final accuracy: winnow's loop leaves its last epoch's to it
    (``TrainData.final_follows``, :data:`LEFT_TO_CALLER`: see :func:`final_accuracy_curve`)."""
    optimizer = candidate.build_optimizer(model)
    data = TrainData(
        dataset,
        candidate.batch_size,
        device,
        generator,
        candidate,
        epoch_accuracy,
        final_follows=trainer is None,
    )
    steps_per_epoch = data.steps_per_epoch
    epochs = math.ceil(fidelity.steps / steps_per_epoch) if fidelity.steps else fidelity.epochs
    total_steps = fidelity.steps or (schedule_epochs or fidelity.epochs) * steps_per_epoch
    warmup = round(candidate.optimizer.get("warmup_epochs", 0) * steps_per_epoch)
    scheduler = build_scheduler(
        optimizer, warmup, total_steps, candidate.optimizer.get("schedule", "cosine")
    )
    arguments = (model, optimizer, scheduler, data, epochs, on_epoch, checkpoint, fidelity.steps)
    if trainer is None:
        return fit(*arguments)
    function: TrainFunction = load_trainer(trainer)
    return fitted_of(trainer, function(*arguments), epochs, fidelity.steps)


@torch.no_grad()
def measure_latency(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> float:
    """Median wall time of one inference forward pass on a batch, in milliseconds."""
    model.eval()
    x = torch.randn(LATENCY_BATCH, *input_shape, device=device)
    x = prepare_input(x, uses_channels_last(model, device))
    times = []
    for i in range(LATENCY_REPEATS + 2):  # two warm-up passes
        synchronize(device)
        start = time.perf_counter()
        model(x)
        synchronize(device)
        if i >= 2:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that wall-clock timings measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_out_of_memory(error: BaseException) -> bool:
    return (
        isinstance(error, torch.OutOfMemoryError)
        or "out of memory" in str(error).lower()
        or ("can't allocate memory" in str(error))
    )


def evaluate(spec: TrialSpec, on_epoch: EpochCallback | None = None) -> TrialResult:
    """Train ``spec.candidate`` at ``spec.fidelity`` and measure it; never raises for a bad
    candidate (see the module docstring)."""
    if spec.stage != "train":
        raise ValueError(f"training.evaluate runs the train stage, not {spec.stage!r}")
    start = time.perf_counter()
    metrics: dict[str, float] = {}
    curve: list[float] = []
    accuracy_curve: list[float] = []
    weights: bytes | None = None
    device_name = spec.device
    try:
        device = resolve_device(spec.device)
        device_name = str(device)
        generator = seed_everything(spec.seed)
        dataset = load_dataset(spec.dataset)
        reset_peak_memory(device)  # after the (cached) load: every trial of a dataset alike
        model = spec.candidate.build_model(dataset.num_classes, dataset.input_shape)
        model = prepare_model(model, device)
        metrics.update(static_metrics(model, dataset.input_shape))

        def record(epoch: int, epochs: int, loss: float, seconds: float) -> None:
            curve.append(loss)
            if on_epoch is not None:
                on_epoch(epoch, epochs, loss, seconds)

        fitted = train(
            model,
            spec.candidate,
            dataset,
            spec.fidelity,
            device,
            generator,
            record,
            spec.schedule_epochs,
            trial_checkpoint(spec),
            spec.trainer,
            spec.epoch_accuracy,
        )
        curve[:] = fitted.curve  # a resumed run's curve starts at epoch 1
        metrics["epochs_run"] = fitted.epochs_run
        metrics["accuracy"] = test_accuracy(model, dataset, device)
        accuracy_curve = final_accuracy_curve(fitted.accuracy, metrics["accuracy"])
        metrics["latency_ms"] = measure_latency(model, dataset.input_shape, device)
        metrics["peak_memory_bytes"] = peak_memory_bytes(device)
        status, error = Status.OK, None
        weights, error = kept_weights(model) if spec.keep_weights else (None, None)
    except Exception as exc:  # a failed candidate must not end the caller's search
        status, error = Status.FAILED, _failure_reason(exc)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # give an out-of-memory trial's blocks back to the next one
        log.info("evaluation of %s failed: %s", spec.candidate.key, error, exc_info=True)
    seconds = time.perf_counter() - start
    accuracy_curve = accuracy_curve if status == Status.OK else []  # a failed run has no curve
    return TrialResult(
        status,
        metrics,
        curve,
        error,
        seconds,
        device_name,
        weights=weights,
        accuracy_curve=accuracy_curve,
    )


def trial_checkpoint(spec: TrialSpec) -> Checkpoint | None:
    """The trial's checkpoint (``TrialSpec.checkpoint``), tagged with what its state belongs
    to: the candidate, the dataset, the seed, the schedule's length and the training function
    (a user's keeps its own state in it)."""
    if spec.checkpoint is None:
        return None
    schedule = spec.schedule_epochs or spec.epochs
    tag = f"{spec.candidate.key}|{spec.dataset}|seed={spec.seed}|schedule={schedule}"
    if spec.trainer is not None:
        tag += f"|trainer={spec.trainer}"
    return Checkpoint(Path(spec.checkpoint), tag)


def serialize_weights(model: nn.Module) -> bytes:
    """The model's ``state_dict`` as ``torch.save`` bytes: contiguous CPU tensors (a CUDA or
    ``channels_last`` model's load anywhere, into the module ``Candidate.build_model`` makes,
    with ``strict=True``)."""
    state = {k: _portable(v) for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _portable(value: object) -> object:
    """A state entry as a contiguous CPU tensor (a module's extra state passes as it is)."""
    return value.detach().cpu().contiguous() if isinstance(value, torch.Tensor) else value


def kept_weights(model: nn.Module) -> tuple[bytes | None, str | None]:
    """The trained weights to return and, when they are too large to, why not (the result's
    ``error``: what failed in part)."""
    tensors = [t for t in model.state_dict().values() if isinstance(t, torch.Tensor)]
    size = sum(t.numel() * t.element_size() for t in tensors)
    if size > MAX_WEIGHTS_BYTES:  # measured before serializing: no second copy of a huge one
        mib, limit = size / 2**20, MAX_WEIGHTS_BYTES / 2**20
        return None, f"weights not kept: {mib:.1f} MiB, over the {limit:.1f} MiB a result carries"
    try:
        return serialize_weights(model), None
    except Exception as error:  # noqa: BLE001 - the training counts; only its weights are lost
        return None, f"weights not kept: {type(error).__name__}: {error}"


def _failure_reason(error: Exception) -> str:
    if isinstance(error, NonFiniteLossError):
        return f"non-finite loss: {error}"
    if _is_out_of_memory(error):
        return f"out of memory: {error}"
    return f"{type(error).__name__}: {error}"
