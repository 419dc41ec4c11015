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

STAGES = ("hash", "costs", "proxy", "supernet", "train")  # costs: static, of the built network

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
    ``params`` are the Optuna params that propose it; ``rung`` is -1 before training."""

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
    error: str | None = None
    reused: bool = False
    seconds: float = 0.0
    device: str | None = None
    host: str | None = None
    created_at: float = 0.0
    finished_at: float | None = None

    def completed(self, top_rung: int) -> bool:
        """A result on the front: a top-rung training run that ended ``ok``, or a reused
        (``duplicate``) result. The one definition of "completed" everyone calls."""
        if self.stage != "train" or self.rung != top_rung:
            return False
        return self.status in (Status.OK, Status.DUPLICATE)


@dataclass(frozen=True)
class EventRecord:
    """Something that happened to a search, in order (``id`` grows; None before it is stored)."""

    id: int | None
    search_id: str
    time: float
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
