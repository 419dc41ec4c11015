"""The store's tables (SQLModel). The schema's history lives in ``migrations/``: a change here
needs a new revision there (``tests/service/test_store.py`` checks that the two agree).

- ``search``: one row per search (its spec, status, task).
- ``trial``: one row per candidate per fidelity (``number`` is the candidate's number within its
  search; a proxy row and one row per training rung share it), with metrics, status, error,
  timings, device, host, hashes, the loss and accuracy per epoch and the path of its kept
  weights.
- ``cache_entry``: the equivalence cache, by (task, fidelity, hash), shared across searches.
- ``hash_memo``: functional hashes by structural hash, so each is computed once.
- ``supernet``: trained supernets by (task, what of the space they cover, settings): the
  weights' file, so that every later search on the task reuses them.
- ``event``: what happened, in order, for dashboards and ``watch``.
"""

from __future__ import annotations

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel


class SearchRow(SQLModel, table=True):
    __tablename__ = "search"
    id: str = Field(primary_key=True)
    name: str
    task_key: str = Field(index=True)
    spec_json: str
    status: str = "running"  # queued | running | finished | failed | cancelled
    error: str | None = None
    created_at: float
    updated_at: float
    # the client's idempotency key: a retried submission finds the search it created
    request_id: str | None = Field(default=None, unique=True, index=True)


class TrialRow(SQLModel, table=True):
    __tablename__ = "trial"
    __table_args__ = (
        UniqueConstraint("search_id", "number", "stage", "epochs", name="uq_trial_fidelity"),
        Index("ix_trial_search_status", "search_id", "status"),
    )
    id: int | None = Field(default=None, primary_key=True)
    search_id: str = Field(foreign_key="search.id")
    number: int
    stage: str  # hash | costs | proxy | supernet | train | confirm:<seed> (a confirmation run)
    epochs: int = 0
    rung: int = -1  # index into the strategy's rungs; -1 for stages before training
    status: str  # queued | running | ok | failed | pruned | duplicate
    candidate_json: str
    candidate_key: str
    structural_hash: str | None = None
    functional_hash: str | None = None
    params_json: str = "{}"  # the Optuna params that propose this candidate
    metrics_json: str = "{}"
    loss_curve_json: str = "[]"  # mean training loss per epoch (train rows)
    # test accuracy after each of those epochs ("[]": not measured; task.eval_every_epoch)
    accuracy_curve_json: str = "[]"
    error: str | None = None
    reused: bool = False  # answered from the equivalence cache, not run
    seconds: float = 0.0
    device: str | None = None
    host: str | None = None  # the machine that ran it
    created_at: float
    finished_at: float | None = None
    weights_path: str | None = None  # the kept weights' file (``artifacts``), if any


class CacheEntryRow(SQLModel, table=True):
    __tablename__ = "cache_entry"
    task: str = Field(primary_key=True)
    fidelity: str = Field(primary_key=True)
    hash: str = Field(primary_key=True)
    result_json: str
    uses: int = 0
    created_at: float


class HashMemoRow(SQLModel, table=True):
    """Functional hashes by structural hash: structure decides the function (the hashing
    issue's guarantee), so a candidate's functional hash is computed once per database."""

    __tablename__ = "hash_memo"
    structural_hash: str = Field(primary_key=True)
    probe: str = Field(primary_key=True)  # the probe and precision the hash was taken with
    functional_hash: str


class SupernetRow(SQLModel, table=True):
    """A trained supernet: ``key`` digests the task, what of the space the family's supernet
    covers (``SupernetEntry.covers``) and the training settings
    (``service.engine.supernet.supernet_key``); ``path`` is its weights' file in the store's
    artifact folder; ``created_at`` tells a retrained file from the one before."""

    __tablename__ = "supernet"
    key: str = Field(primary_key=True)
    task: str = Field(index=True)
    family: str
    settings_json: str
    path: str
    metrics_json: str = "{}"  # the training trial's (steps, seconds)
    created_at: float


class EventRow(SQLModel, table=True):
    __tablename__ = "event"
    id: int | None = Field(default=None, primary_key=True)
    search_id: str = Field(index=True, foreign_key="search.id")
    time: float
    kind: str
    payload_json: str = "{}"


metadata = SQLModel.metadata
