"""The engine's evidence behind the cascade's stages (``cascade``): functional hashes memoised in
the store and computed by the executor's workers (``WorkerHashes``), results reused from the
equivalence cache (with the candidate's own costs), proxy scores (cached by functional hash,
else run on the executor) and the screen's rule (constraints that proxies know, then
``ProxyScreen``). Also the cache's keys, which training uses to store what it learns."""

from __future__ import annotations

from concurrent.futures import CancelledError, Future

from winnow.records import Fidelity
from winnow.search_space.archs import FAMILIES
from winnow.search_space.functional_hash import DEFAULT_MANTISSA_BITS, HASH_VERSION, Probe
from winnow.search_space.trial import Status, TrialResult, TrialSpec
from winnow.service.engine.cascade import Passage, Proposal
from winnow.service.engine.evidence_ladder import ZERO_WEIGHT
from winnow.service.engine.screening import ProxyScreen
from winnow.service.engine.state import SearchState
from winnow.service.search_spec import Objective, SearchSpec
from winnow.service.store import SqlEquivalenceCache, Store
from winnow.workers.executor import Executor

# The settings functional hashes are taken with; memoised hashes are keyed by it.
HASH_PROBE = f"v{HASH_VERSION}|{Probe()}|mantissa={DEFAULT_MANTISSA_BITS}"
# Objectives that the proxy stage already measures (its metric is ``proxy.<name>``).
STATIC_FROM_PROXIES = ("params", "flops")
# Metrics of the built network itself, not of the function it computes (see _own_costs).
STATIC_COSTS = ("params", "flops", "model_bytes", "bitops")
COSTS_FIDELITY = str(Fidelity("costs"))


class StoreHashMemo:
    """Functional hashes memoised in the store (which keeps what it read in memory), keyed by
    the probe (``hash_probe``)."""

    def __init__(self, store: Store, probe: str = HASH_PROBE) -> None:
        self.store, self.probe = store, probe

    def get(self, structural: str) -> str | None:
        return self.store.functional_hash(structural, self.probe)

    def put(self, structural: str, functional: str) -> None:
        self.store.remember_functional_hash(structural, self.probe, functional)


def hash_probe(spec: SearchSpec) -> str:
    """The memo's probe key for ``spec``: ``HASH_PROBE``, and the task for a family whose
    probe is of the task's shape (``Probe.for_task``), since one structure probed at two
    shapes is two hashes."""
    family = FAMILIES.get(spec.search_space.architecture.family)
    return f"{HASH_PROBE}|task={spec.task.key}" if family.probes_task_shape else HASH_PROBE


class WorkerHashes:
    """The hash stage's computation as a ``hash`` trial on the executor, so that the candidate
    is built in a worker, not in the engine's process (with a process or cluster executor);
    None (the stage falls back to the structural hash) when the trial failed."""

    def __init__(self, spec: SearchSpec, executor: Executor) -> None:
        self.spec, self.executor = spec, executor

    def __call__(self, proposal: Proposal) -> str | None:
        trial = TrialSpec(proposal.candidate, self.spec.task.dataset, stage="hash")
        result = result_of(self.executor.submit(trial))
        return result.value if result.status == Status.OK else None


class StoredResults:
    """The reuse stage's twins: a stored top-rung result for the same function on this task,
    stored by a cascade under its functional hash, or by a plain strategy under its structural
    one (see :func:`result_key`)."""

    def __init__(
        self, spec: SearchSpec, search_id: str, cache: SqlEquivalenceCache, executor: Executor
    ) -> None:
        self.spec, self.cache, self.executor = spec, cache, executor
        self.task = train_task(spec, search_id)
        self.fidelity = train_fidelity(spec.strategy.rungs[-1])

    def find(self, proposal: Proposal, passage: Passage) -> TrialResult | None:
        result = self.cache.get(self.task, self.fidelity, proposal.functional)
        if result is None and self.spec.reuses_across_searches:  # else only ours
            result = self.cache.get(self.task, self.fidelity, structural_key(proposal.structural))
        objectives = self.spec.objectives
        if result is None or result.status != Status.OK or missing(objectives, result.metrics):
            return None
        return TrialResult(Status.OK, self._own_costs(proposal, result.metrics, passage))

    def _own_costs(
        self, proposal: Proposal, metrics: dict[str, float], passage: Passage
    ) -> dict[str, float]:
        """A reused result's metrics with this candidate's own costs.

        Functionally equal candidates can differ in parameters that never reach the output (an
        nb201 cell whose convolutions feed nothing computes the identity cell's function with
        4.7x its parameters), so the costs stored with the result are its first candidate's.
        These are measured (a ``costs`` trial: the built network, no data) and cached by the
        candidate's key."""
        stale = [m for m in STATIC_COSTS if m in metrics]
        if not stale:
            return metrics
        key, task = f"candidate:{proposal.candidate.key}", self.spec.task.key
        costs = self.cache.get(task, COSTS_FIDELITY, key)
        if costs is None:
            spec = TrialSpec(proposal.candidate, self.spec.task.dataset, stage="costs")
            costs = passage.evaluate(lambda: result_of(self.executor.submit(spec)))
            if costs.status != Status.OK:  # the first candidate's costs are better than none
                return metrics
            self.cache.put(task, COSTS_FIDELITY, key, costs)
        return {**metrics, **{m: costs.metrics[m] for m in stale if m in costs.metrics}}


class ProxyScores:
    """The proxy stage's scores: cached by functional hash for the task, else run on the
    executor (counted, and cached when they succeed)."""

    def __init__(
        self,
        spec: SearchSpec,
        cache: SqlEquivalenceCache,
        executor: Executor,
        device: str,
        state: SearchState,
    ) -> None:
        self.spec, self.cache, self.executor, self.device = spec, cache, executor, device
        self.state = state
        self.proxies = tuple(spec.strategy.screen.proxies)
        self.fidelity = str(Fidelity("proxy", proxies=self.proxies))

    def scores(self, proposal: Proposal, passage: Passage) -> TrialResult:
        task = self.spec.task.key
        cached = self.cache.get(task, self.fidelity, proposal.functional)
        if cached is not None:
            return cached
        spec = TrialSpec(
            proposal.candidate,
            self.spec.task.dataset,
            stage="proxy",
            seed=self.spec.seed,
            device=self.device,
            proxies=self.proxies,
        )
        result = passage.evaluate(lambda: result_of(self.executor.submit(spec)))
        self.state.counts["proxy"] += 1
        self.state.device_seconds += result.seconds
        if result.status == Status.OK:
            self.cache.put(task, self.fidelity, proposal.functional, result)
        return result


class ProxyRule:
    """The screen's rule: constraints that proxies already know (``params``, ``flops``), then
    ``ProxyScreen``'s ranking; the scores come back with ``screen.score``,
    ``screen.position`` and ``screen.calibrated`` (1 when a calibrated ensemble gave the score:
    the evidence ladder's ``ensemble`` tier), and with it ``screen.zero_weight.<proxy>`` (1) for
    each proxy that ensemble's fit gave weight 0 (the ladder shows that set)."""

    def __init__(self, spec: SearchSpec, screen: ProxyScreen) -> None:
        self.spec, self.screen = spec, screen

    def judge(self, proposal: Proposal, scores: TrialResult) -> TrialResult:
        settings = self.spec.strategy.screen
        values = {p: scores.metrics.get(f"proxy.{p}") for p in settings.proxies}
        violated = violations(self.spec, _static_metrics(scores.metrics))
        decision = self.screen.add(proposal.number, values)
        metrics = {**scores.metrics, "screen.score": decision.score}
        metrics["screen.position"] = decision.position
        metrics["screen.calibrated"] = float(decision.ensemble == "calibrated")
        if decision.ensemble == "calibrated":
            metrics |= {f"{ZERO_WEIGHT}{p}": 1.0 for p in self.screen.zero_weight}
        judged = TrialResult(Status.OK, metrics, error=scores.error, seconds=scores.seconds)
        if violated or not decision.keep:
            judged.status = Status.PRUNED
            judged.error = "; ".join(violated) or (
                f"proxy screen: place {decision.position + 1} of {decision.population} "
                f"({decision.ensemble} ensemble), keeping the top {settings.keep_fraction:.0%}"
            )
        return judged


# --- the cache's keys, constraints and objectives -------------------------------------------------


def train_task(spec: SearchSpec, search_id: str) -> str:
    """The task key trained results are cached under: the task's (``Task.training_key``), or
    this search's alone."""
    task = spec.task.training_key
    return task if spec.reuses_across_searches else f"{task}#{search_id}"


def train_fidelity(epochs: int) -> str:
    return str(Fidelity("train", epochs=epochs))


def structural_key(structural: str) -> str:
    return f"structural:{structural}"  # apart from functional hashes, which are bare


def result_key(proposal: Proposal) -> str:
    """The cache key of a trained result: the functional hash where the cascade computed it;
    plain strategies never hash functionally (milliseconds a trial that they do not need), so
    theirs go under the structural hash, which the cascade looks up as well."""
    return proposal.functional or structural_key(proposal.structural)


def violations(spec: SearchSpec, metrics: dict[str, float]) -> list[str]:
    return [f"violates {c}" for c in spec.constraints if c.satisfied(metrics) is False]


def missing(objectives: list[Objective], metrics: dict[str, float]) -> list[str]:
    """The objectives that ``metrics`` lacks."""
    return [o.name for o in objectives if o.name not in metrics]


def trained_status(spec: SearchSpec, result: TrialResult) -> tuple[Status, str | None]:
    """What a training run's row stores: ``failed`` when a successful run lacks an objective,
    ``pruned`` when it breaks a constraint (``violations``), else the run's own status and
    error. Every training run (a rung's, a confirmation's) is checked by it."""
    if result.status != Status.OK:
        return result.status, result.error
    lacking = missing(spec.objectives, result.metrics)
    if lacking:
        return Status.FAILED, f"missing objective(s) in metrics: {lacking}"
    violated = violations(spec, result.metrics)
    if violated:
        return Status.PRUNED, "; ".join(violated)
    return result.status, result.error


def _static_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Cost metrics the proxy stage measured, under their training-time names."""
    return {m: metrics[f"proxy.{m}"] for m in STATIC_FROM_PROXIES if f"proxy.{m}" in metrics}


def result_of(future: Future[TrialResult]) -> TrialResult:
    """A worker that raised is a failed trial, with the exception as its error."""
    try:
        return future.result()
    except CancelledError:
        return TrialResult(Status.FAILED, error="cancelled with the search")
    except Exception as error:
        return TrialResult(Status.FAILED, error=f"{type(error).__name__}: {error}")
