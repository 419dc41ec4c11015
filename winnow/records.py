"""Plain value types every folder shares: statuses, fidelities and the stored records of
searches, trials and events (cf. OSS Vizier's ``pyvizier``: value types with no I/O, apart from
the service that moves them).

This module imports nothing heavy (no torch, optuna or SQL), so that the client SDK, the CLI's
start-up and the dashboard can use it. The store hands out these records, never its ORM rows;
the gRPC layer converts them to messages in one place (``winnow.service.api.convert``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """A trial's status: ``queued``/``running`` while a row waits or runs, then how it ended."""

    QUEUED = "queued"
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    PRUNED = "pruned"
    DUPLICATE = "duplicate"  # answered from the equivalence cache (a reused result)


class SearchStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A search in one of these will not change again (unless a user resumes it by hand).
TERMINAL = frozenset({SearchStatus.FINISHED, SearchStatus.FAILED, SearchStatus.CANCELLED})

# costs: static, of the built network. A confirmation run (``strategy.confirm``) is a ``train``
# trial whose row's stage is ``confirm:<seed>`` (:func:`confirm_stage`), not a stage of its own
STAGES = ("hash", "costs", "proxy", "supernet", "train")
CONFIRM = "confirm"  # the prefix of a confirmation row's stage

# The metrics of a trained result (``training.evaluate``; a test keeps the two in step): what a
# search's objectives and constraints may name.
TRAIN_METRICS = (
    "accuracy",
    "params",
    "flops",
    "model_bytes",
    "bitops",
    "latency_ms",
    "peak_memory_bytes",
)
# What a trained result also says about its run, not its network (never an objective): the
# epochs this run trained (a continued rung's are its own, not the network's total).
RUN_METRICS = ("epochs_run",)


# Importance over fewer trained results than this is a hint, not a ranking: the one threshold
# and wording of the dashboard's bars, ``winnow importance`` and the SDK's ``warning``.
NOISY_IMPORTANCE = 50


def importance_warning(trials: int) -> str | None:
    """What a reader of an importance over ``trials`` results is told (None: enough)."""
    if trials >= NOISY_IMPORTANCE:
        return None
    return f"fewer than {NOISY_IMPORTANCE} results ({trials}): a hint, not a ranking"


def confirm_stage(seed: int) -> str:
    """A confirmation row's stage, ``confirm:<seed>``: each seed's run is a fidelity of its
    own (a trial's rows are unique by stage and epochs)."""
    return f"{CONFIRM}:{seed}"


def confirm_seed(stage: str) -> int | None:
    """The seed of a confirmation row's stage (:func:`confirm_stage`), None for other stages."""
    kind, _, seed = stage.partition(":")
    return int(seed) if kind == CONFIRM and seed.isdigit() else None


@dataclass(frozen=True)
class Fidelity:
    """How much evidence an evaluation buys: a stage of the cascade (``STAGES``); for ``train``
    how long (``epochs``, or ``steps`` when set), for ``proxy`` which proxies.

    ``str(fidelity)`` is its one spelling, used as the equivalence cache's fidelity key:
    ``train[9 epochs]``, ``train[500 steps]``, ``proxy[synflow,naswot]``, ``costs``."""

    stage: str = "train"
    epochs: int = 1
    steps: int | None = None
    proxies: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; allowed: {', '.join(STAGES)}")

    def __str__(self) -> str:
        if self.stage == "train":
            return f"train[{self.steps} steps]" if self.steps else f"train[{self.epochs} epochs]"
        if self.stage == "proxy" and self.proxies is not None:
            return f"proxy[{','.join(self.proxies)}]"
        return self.stage


def epochs_text(epochs: int) -> str:
    """``1 epoch``, ``6 epochs``: the one wording of an epoch count that people read (a
    fidelity key, ``str(Fidelity)``, keeps its fixed spelling)."""
    return f"{epochs} epoch" if epochs == 1 else f"{epochs} epochs"


def front_note(epochs: int | None, top_epochs: int) -> str | None:
    """What a front below the top rung says of itself (no trial trained at the top rung yet,
    so the front is the highest rung reached), or None for a front of completed trials or an
    empty one."""
    if epochs is None or epochs >= top_epochs:
        return None
    return f"front at {epochs_text(epochs)} (top rung {top_epochs} never reached)"


@dataclass(frozen=True)
class SearchRecord:
    """One stored search."""

    id: str
    name: str
    task_key: str
    spec_json: str
    status: SearchStatus
    error: str | None
    created_at: float
    updated_at: float
    request_id: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class TrialRecord:
    """One stored trial: a candidate at one fidelity (``stage``, ``epochs``, ``rung``).

    ``candidate`` is the candidate's canonical JSON (``Candidate.from_json`` rebuilds it);
    ``params`` are the Optuna params that propose it; ``rung`` is -1 before training;
    ``weights_path`` is the file of its kept weights (``winnow export --format weights``)."""

    id: int | None
    search_id: str
    number: int
    stage: str
    status: Status
    candidate: str
    candidate_key: str
    epochs: int = 0
    rung: int = -1
    structural_hash: str | None = None
    functional_hash: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    loss_curve: list[float] = field(default_factory=list)
    # the test accuracy after each epoch of ``loss_curve`` (empty: not measured)
    accuracy_curve: list[float] = field(default_factory=list)
    error: str | None = None
    reused: bool = False
    seconds: float = 0.0
    device: str | None = None
    host: str | None = None
    created_at: float = 0.0
    finished_at: float | None = None
    # where the trial's trained weights are kept (``store.artifacts``): top-rung runs of the
    # search's best ``keep_weights`` trials only; None when not kept or no longer kept
    weights_path: str | None = None

    @property
    def trained(self) -> bool:
        """A training run with a result, at any rung: it ended ``ok``, or is a reused
        (``duplicate``) result. Any such trial can be exported."""
        return self.stage == "train" and self.status in (Status.OK, Status.DUPLICATE)

    def completed(self, top_rung: int) -> bool:
        """A trained result at the top rung (a reused result is stored at the top rung). The one
        definition of "completed" everyone calls; when no trial of a search is completed, its
        front is made of the trained results of the highest rung reached
        (``readout.front_trials``)."""
        return self.trained and self.rung == top_rung


@dataclass(frozen=True)
class EventRecord:
    """Something that happened to a search, in order (``id`` grows; None before it is stored)."""

    id: int | None
    search_id: str
    time: float
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
