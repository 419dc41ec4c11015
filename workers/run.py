"""Run one trial at one fidelity, whatever the stage: the function every executor calls, and
the ``TRIAL_STAGES`` registry it looks the stage up in (a stage is one function from a
``TrialSpec`` and an optional ``EpochCallback`` to a ``TrialResult`` that never raises for a bad
candidate; stages that do not train ignore the callback).

``train`` trains and tests the candidate (``winnow.search_space.training.evaluate``); ``proxy``
scores it at initialisation with the zero-cost proxies (``winnow.proxies.score_model``) on fixed
real batches of the task's training data, returning each proxy's value as a metric
``proxy.<name>`` (failed proxies are listed in ``error``, the others still count); ``costs``
measures the built network's static costs (params, FLOPs, model bytes, BitOPs) on the CPU;
``hash`` takes the candidate's functional hash (``winnow.search_space.functional_hash``: fixed
probes, no data; of the task's input shape for a family that needs it, ``Probe.for_task``)
and returns it as the result's ``value``. ``supernet_train`` trains a family's supernet
(epochs reported, checkpointed, resumed after a kill) and ``supernet`` scores a candidate
by its inherited weights (``winnow.workers.supernet_trials``).

The stages that do not train free what they built before they return, reference cycles
included, so that a large candidate's network does not outlive its trial in a long-lived
process (``functional_hash.release``).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from winnow.proxies import score_model
from winnow.proxies.batches import fixed_batches
from winnow.search_space.costs import count_parameters
from winnow.search_space.datasets import load_dataset
from winnow.search_space.functional_hash import Probe, functional_hash, release
from winnow.search_space.registry import Registry
from winnow.search_space.training import (
    evaluate,
    resolve_device,
    seed_everything,
    static_metrics,
)
from winnow.search_space.trial import EpochCallback, Status, TrialResult, TrialSpec
from winnow.workers.supernet_trials import (
    SCORE_STAGE,
    TRAIN_STAGE,
    score_supernet_trial,
    train_supernet_trial,
)

PROXY_BATCHES = 2  # ZiCo needs two; the others use the first
PROXY_BATCH_SIZE = 64


TrialStage = Callable[[TrialSpec, EpochCallback | None], TrialResult]
TRIAL_STAGES: Registry[TrialStage] = Registry("trial stage")
TRIAL_STAGES.register("train", evaluate)
TRIAL_STAGES.register(TRAIN_STAGE, train_supernet_trial)
TRIAL_STAGES.register(SCORE_STAGE, score_supernet_trial)


def run_trial(spec: TrialSpec, on_epoch: EpochCallback | None = None) -> TrialResult:
    """Run ``spec`` with the function registered for its stage; a training stage calls
    ``on_epoch`` after each epoch. A stage of the cascade that no worker runs (e.g.
    ``supernet`` until it has one) is a programming error, not a failed trial: it raises
    ``NotImplementedError``."""
    if spec.stage not in TRIAL_STAGES:
        stages = ", ".join(TRIAL_STAGES.names())
        raise NotImplementedError(f"stage {spec.stage!r} has no worker yet ({stages})")
    return TRIAL_STAGES.get(spec.stage)(spec, on_epoch)


@TRIAL_STAGES.register("proxy")
def score_proxies(spec: TrialSpec, on_epoch: EpochCallback | None = None) -> TrialResult:
    """The proxy stage (no epochs: ``on_epoch`` is never called); never raises for a bad
    candidate."""
    start = time.perf_counter()
    try:
        device = resolve_device(spec.device)
        seed_everything(spec.seed)
        dataset = load_dataset(spec.dataset)
        batch_size = min(PROXY_BATCH_SIZE, len(dataset.train_y) // PROXY_BATCHES)
        batches = fixed_batches(dataset, PROXY_BATCHES, batch_size, spec.seed, device)
        model = spec.candidate.build_model(dataset.num_classes, dataset.input_shape).to(device)
        scores = score_model(model, batches, spec.proxies, seed=spec.seed)
        parameters = count_parameters(model)
        del model
        release(parameters)
    except Exception as exc:  # a failed candidate must not end the caller's search
        return TrialResult(
            Status.FAILED,
            error=f"{type(exc).__name__}: {exc}",
            seconds=time.perf_counter() - start,
            device=spec.device,
        )
    metrics = {f"proxy.{n}": s.value for n, s in scores.items() if s.value is not None}
    metrics |= {f"proxy_seconds.{n}": s.seconds for n, s in scores.items()}
    errors = [f"{n}: {s.error}" for n, s in scores.items() if s.error]
    status = Status.OK if any(s.value is not None for s in scores.values()) else Status.FAILED
    return TrialResult(
        status,
        metrics,
        error="; ".join(errors) or None,
        seconds=time.perf_counter() - start,
        device=str(device),
    )


@TRIAL_STAGES.register("costs")
def measure_costs(spec: TrialSpec, on_epoch: EpochCallback | None = None) -> TrialResult:
    """The costs stage: no data beyond the task's shapes, no training (``on_epoch`` is never
    called); never raises."""
    start = time.perf_counter()
    try:
        dataset = load_dataset(spec.dataset)
        model = spec.candidate.build_model(dataset.num_classes, dataset.input_shape)
        metrics = {k: float(v) for k, v in static_metrics(model, dataset.input_shape).items()}
        parameters = count_parameters(model)
        del model
        release(parameters)
    except Exception as exc:  # a failed candidate must not end the caller's search
        error = f"{type(exc).__name__}: {exc}"
        return TrialResult(Status.FAILED, error=error, seconds=time.perf_counter() - start)
    return TrialResult(Status.OK, metrics, seconds=time.perf_counter() - start)


@TRIAL_STAGES.register("hash")
def hash_candidate(spec: TrialSpec, on_epoch: EpochCallback | None = None) -> TrialResult:
    """The hash stage: the functional hash as the result's ``value`` (no data, no epochs:
    ``on_epoch`` is never called); never raises for a bad candidate."""
    start = time.perf_counter()
    try:
        value = functional_hash(spec.candidate, probe=Probe.for_task(spec.candidate, spec.dataset))
    except Exception as exc:  # a failed candidate must not end the caller's search
        error = f"{type(exc).__name__}: {exc}"
    else:
        return TrialResult(Status.OK, value=value, seconds=time.perf_counter() - start)
    # The exception's traceback held the probe's frames, network included, until now; a
    # failure is rare, so collect whatever of it sits in cycles whatever its size.
    gc.collect()
    return TrialResult(Status.FAILED, error=error, seconds=time.perf_counter() - start)
