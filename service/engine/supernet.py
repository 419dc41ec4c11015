"""The supernet stage (``strategy.supernet``): candidates that passed the proxy screen are scored
by the accuracy they inherit from a trained weight-sharing supernet, and the weak ones stop.

The supernet of (task, what of the space its family covers, settings: ``supernet_key``) is
trained once, as a trial of its own on the executor (``supernet_train``: epochs reported as
``supernet_epoch`` events, checkpointed, resumed after a kill), stored in the artifact folder and
recorded in the store (``Store.remember_supernet``): every later search on the task whose space
covers the same and with the same settings finds it and trains nothing. A search whose key
another search of this process is training waits for it (``supernet_waiting``), seeing its own
cancel and budget meanwhile.

**Trains before it passes any candidate.** The first proposal that reaches the stage starts the
training and waits for it (progress: ``supernet_training``, one ``supernet_epoch`` event per epoch,
then ``supernet_trained``). Passing candidates on unscored meanwhile would spend training on exactly
those the stage exists to stop, and would leave the stage's population (and the evidence ladder's
tier) without them; the proxy screen's cost until then is small beside the supernet's. A training
that fails is reported (``supernet_failed``) and the stage then passes every candidate: the search
goes on as a cascade without the supernet; so does a trained file that cannot be loaded (a scoring
trial's ``LOAD_ERROR``), reported once. A training stopped with the search is
``supernet_cancelled``.

**The rule** (``supernet_rule``). Each scored candidate gets a ``supernet`` row with
``supernet.accuracy`` (its inherited accuracy on a validation split carved from the training
data). The first ``warmup`` scored candidates go on; after them, one below the
``1 - keep_fraction`` quantile of the scores of every candidate scored so far (itself included;
rebuilt from the rows on resume) is pruned. With objectives after the first that the screen's
proxies know (``objectives: accuracy, params``), it decides as the proxy screen does: kept at
the population's best on one of those, else by its place by domination count on (score, those
objectives) (``screening.position``). The score is the inherited accuracy until the
screen's ``calibrate_after`` of those candidates have trained results, then a calibrated
ensemble over the screen's proxies and the inherited accuracy fitted on them, in which a feature
that ranks them worse than params gets weight 0; the row records which (``supernet.calibrated``,
``supernet.combined``, ``supernet.zero_weight.<feature>``). Scores are cached by functional hash
under the supernet's key and the trained file's record (``fidelity``), as proxy scores are.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Callable
from concurrent.futures import wait
from typing import Any

from winnow.records import TrialRecord
from winnow.search_space.trial import Status, TrialResult, TrialSpec
from winnow.service.engine.cascade import Passage, Proposal
from winnow.service.engine.evidence import result_of
from winnow.service.engine.journal import Journal
from winnow.service.engine.state import SearchState
from winnow.service.engine.supernet_rule import METRIC, ProxyValues, SupernetRule, TrainedResults
from winnow.service.search_spec import SearchSpec
from winnow.service.store import SqlEquivalenceCache, Store
from winnow.service.store.sql import SupernetRecord
from winnow.supernet.registry import SUPERNETS
from winnow.workers.executor import Executor
from winnow.workers.supernet_trials import LOAD_ERROR, SCORE_STAGE, TRAIN_STAGE

POLL_SECONDS = 0.5  # how often a waiting engine writes the training's epochs as events
LOCK_POLL_SECONDS = 0.5  # how soon a search waiting on another's training sees its stop
# One training per supernet key in this process: two searches of a server on the same task
# would otherwise train the same supernet at once, into the same checkpoint file.
_TRAINING: dict[str, threading.Lock] = {}
_TRAINING_GUARD = threading.Lock()


def _training_lock(key: str) -> threading.Lock:
    with _TRAINING_GUARD:
        return _TRAINING.setdefault(key, threading.Lock())


def training_settings(spec: SearchSpec) -> dict[str, Any]:
    """What the trained supernet depends on (its key), besides the task and the space."""
    s = spec.strategy.supernet
    assert s is not None, "the spec has no strategy.supernet"
    max_seconds = None if s.minutes is None else s.minutes * 60
    settings = {
        "epochs": s.epochs,
        "max_seconds": max_seconds,
        "batch_size": s.batch_size,
        "seed": s.seed,
        "validation_fraction": s.validation_fraction,
    }
    own = getattr(spec.search_space.architecture, "cells_per_stage", None)
    # only when set and not the space's own depth: the keys of earlier supernets stay, and an
    # identical supernet is not trained again under another key
    if s.cells_per_stage is not None and s.cells_per_stage != own:
        settings["cells_per_stage"] = s.cells_per_stage
    return settings


def supernet_key(spec: SearchSpec) -> str:
    """The stored supernet's key: the task, what of the space the supernet covers (its
    family's ``covers``: the architecture section, and for ``mlp`` its norm and quantization
    axis too) and the training settings."""
    space = spec.search_space
    covered = SUPERNETS.get(space.architecture.family).covers(space)
    what = {"task": spec.task.key, **covered, **training_settings(spec)}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


class TrainedSupernet:
    """The search's supernet file: the store's, else trained now on the executor (see the
    module docstring); None when its training failed."""

    def __init__(
        self,
        spec: SearchSpec,
        store: Store,
        executor: Executor,
        journal: Journal,
        state: SearchState,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        if store.artifacts is None:
            raise ValueError(
                "strategy.supernet keeps the trained supernet in the store's artifact folder: "
                "use a SQLite file, or serve with --artifacts DIR"
            )
        self.spec, self.store, self.executor = spec, store, executor
        self.journal, self.state, self.cancelled = journal, state, cancelled
        self.key, self.settings = supernet_key(spec), training_settings(spec)
        space = spec.search_space
        self.family = space.architecture.family
        self._options = {"space": space.model_dump(mode="json"), "settings": self.settings}
        self._path: str | None = None
        self.identity = ""  # the trained file's (``_resolve``), once it is known
        self._failed = False

    def path(self, proposal: Proposal, passage: Passage) -> str | None:
        if self._path is None and not self._failed:
            passage.evaluate(lambda: self._find_or_train(proposal))
        return None if self._failed else self._path

    def _find_or_train(self, proposal: Proposal) -> None:
        lock = _training_lock(self.key)
        if not self._acquire(lock):  # stopped while another search trained it
            return
        try:
            record = self.store.supernet(self.key)
            if record is None:
                self._train(proposal)
                return
        finally:
            lock.release()
        self._resolve(record)
        self.journal.event("supernet_reused", {"key": self.key, "path": record.path})

    def _acquire(self, lock: threading.Lock) -> bool:
        """Wait for another search's training of the same key, seeing this search's stop
        meanwhile (cancel or budget): False when it stopped first."""
        waiting = False
        while not lock.acquire(timeout=LOCK_POLL_SECONDS):
            if self.cancelled():
                return False
            if not waiting:
                waiting = True
                self.journal.event("supernet_waiting", {"key": self.key})
        return True

    def _resolve(self, record: SupernetRecord) -> None:
        self._path = record.path
        # which training made the file: a supernet retrained under the same key (its file
        # lost; a ``minutes`` budget makes the weights clock-dependent) is not the cached one's
        self.identity = f"{record.created_at:.6f}"

    def unusable(self, error: str | None) -> None:
        """The trained file could not be loaded: reported once, and the stage then passes
        every candidate, as after a failed training."""
        if not self._failed:
            self._failed = True
            self.journal.event("supernet_failed", {"key": self.key, "error": error})

    def options(self) -> dict[str, Any]:
        """The space and the training settings, as the trial stages read them (a copy)."""
        return {"space": self._options["space"], "settings": dict(self.settings)}

    def _train(self, proposal: Proposal) -> None:
        artifacts = self.store.artifacts
        assert artifacts is not None
        options = self.options() | {
            "output": str(artifacts.supernet(self.key)),
            "checkpoint": str(artifacts.supernet(self.key, ".ckpt")),
        }
        trial = TrialSpec(
            proposal.candidate,  # not used: the space in options says what the supernet covers
            self.spec.task.dataset,
            stage=TRAIN_STAGE,
            epochs=self.settings["epochs"],
            seed=self.settings["seed"],
            options=json.dumps(options, sort_keys=True),
        )
        payload = {"key": self.key, "family": self.family, "epochs": self.settings["epochs"]}
        self.journal.event("supernet_training", payload)
        epochs: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        owner = threading.get_ident()

        def on_epoch(epoch: int, total: int, loss: float, seconds: float) -> None:
            payload = {"epoch": epoch, "epochs": total, "loss": float(loss)}
            epochs.put(payload | {"seconds": float(seconds)})
            if threading.get_ident() == owner:  # an in-process executor trains in submit
                self._flush(epochs)

        future = self.executor.submit(trial, on_epoch)
        while not wait([future], POLL_SECONDS).done:  # epochs as events while it trains
            self._flush(epochs)
            if self.cancelled():  # the search was cancelled: the training stops with it
                future.cancel()
        self._flush(epochs)
        self._record(result_of(future))

    def _flush(self, epochs: queue.SimpleQueue[dict[str, Any]]) -> None:
        while not epochs.empty():
            self.journal.event("supernet_epoch", {"key": self.key, **epochs.get_nowait()})

    def _record(self, result: TrialResult) -> None:
        self.state.device_seconds += result.seconds
        if result.status != Status.OK or result.value is None:
            self._failed = True  # no second training in this run, either way
            # stopped with the search (its checkpoint trains on when it resumes), or failed
            kind = "supernet_cancelled" if self.cancelled() else "supernet_failed"
            self.journal.event(kind, {"key": self.key, "error": result.error})
            return
        self.store.remember_supernet(
            self.key, self.spec.task.key, self.family, self.settings, result.value, result.metrics
        )
        record = self.store.supernet(self.key)
        if record is None:  # its file vanished as it was recorded
            self.unusable(f"the trained supernet {result.value} is missing")
            return
        self._resolve(record)
        self.journal.event("supernet_trained", {"key": self.key, **result.metrics})


class SupernetScreen:
    """The cascade's supernet stage (``cascade.SupernetStage``'s slot; see the module
    docstring). ``rows``: a resumed search's, whose ``supernet`` rows rebuild the rule;
    ``results``: the search's trained results (the engine's ``ProxyScreen``, rebuilt from the
    same rows on resume), which calibrate the combined score; ``cancelled``: whether the search
    was cancelled (a training under way is stopped)."""

    name = "supernet"

    def __init__(
        self,
        spec: SearchSpec,
        store: Store,
        cache: SqlEquivalenceCache,
        executor: Executor,
        journal: Journal,
        state: SearchState,
        rows: list[TrialRecord] | None = None,
        cancelled: Callable[[], bool] = lambda: False,
        results: TrainedResults | None = None,
    ) -> None:
        settings = spec.strategy.supernet
        assert settings is not None, "the spec has no strategy.supernet"
        self.spec, self.cache, self.executor, self.state = spec, cache, executor, state
        self.settings = settings
        self.trained = TrainedSupernet(spec, store, executor, journal, state, cancelled)
        screen = spec.strategy.screen
        self.rule = SupernetRule(
            settings.keep_fraction,
            settings.warmup,
            screen.proxies,
            screen.calibrate_after,
            results,
            spec.seed,
            spec.objectives,  # with proxy-known objectives after the first: the screen's rule
        )
        self.rule.rebuild(rows or [], self.name)  # a failed scoring's row has no score: left out

    @property
    def fidelity(self) -> str:
        """The score cache's: the supernet's key, the trained file's identity (known once its
        path resolves) and the scoring settings."""
        s = self.settings
        return (
            f"supernet:{self.trained.key}@{self.trained.identity}|bn={s.bn_batches}"
            f"|val={s.validation_samples}"
        )

    def __call__(self, proposal: Proposal, passage: Passage) -> bool:
        path = self.trained.path(proposal, passage)
        if path is None:  # no supernet (its training failed): the cascade goes on without it,
            # unless the search was cancelled meanwhile: the proposal stays unsettled (a
            # resumed search re-queues it, and trains the supernet on from its checkpoint)
            return not self.trained.cancelled()
        result = self._score(proposal, path, passage)
        if result.status != Status.OK and (result.error or "").startswith(LOAD_ERROR):
            self.trained.unusable(result.error)  # not the candidate's fault: it goes on
            return True
        if result.status != Status.OK:
            passage.outcomes.failed(proposal, self.name, result)
            return False
        verdict = self.rule.judge(proposal.number, _proxy_values(proposal), result.metrics[METRIC])
        metrics = dict(result.metrics) | verdict.metrics()
        judged = TrialResult(Status.OK, metrics, seconds=result.seconds)
        if not verdict.keep:
            judged.status = Status.PRUNED
            judged.error = verdict.reason(self.settings.keep_fraction)
        passage.outcomes.screened(proposal, self.name, judged)
        return verdict.keep

    def _score(self, proposal: Proposal, path: str, passage: Passage) -> TrialResult:
        task = self.spec.task.key
        cached = self.cache.get(task, self.fidelity, proposal.functional)
        if cached is not None:
            return cached
        s = self.settings
        options = self.trained.options() | {"path": path}
        options["settings"] |= {
            "bn_batches": s.bn_batches,
            "validation_samples": s.validation_samples,
        }
        trial = TrialSpec(
            proposal.candidate,
            self.spec.task.dataset,
            stage=SCORE_STAGE,
            seed=s.seed,
            options=json.dumps(options, sort_keys=True),
        )
        result = passage.evaluate(lambda: result_of(self.executor.submit(trial)))
        self.state.device_seconds += result.seconds
        if result.status == Status.OK:
            self.cache.put(task, self.fidelity, proposal.functional, result)
        return result


def _proxy_values(proposal: Proposal) -> ProxyValues:
    """The proposal's proxy values by proxy name (the proxy stage's ``proxy.<name>``)."""
    metrics = proposal.scores.metrics if proposal.scores is not None else {}
    prefix = "proxy."
    return {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}
