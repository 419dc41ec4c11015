"""The cascade as stages: each proposal meets the cheapest evidence first.

    [size cap ->] hash -> reuse -> proxy -> screen -> supernet -> train

A :class:`Stage` takes a :class:`Proposal` one step: it returns True to let it go on to the next
stage, False when it has settled it (a reused result, a screened-out or failed candidate), which
it reports through the passage's :class:`Outcomes`. The last stage hands the proposal to
training. Plain strategies (``random``, ``tpe``, ``nsga2``, ``gp``) run ``[TrainStage]`` alone.
A server's size cap (``SizeCapStage``) goes first in either list.

The stages hold the decisions; what they ask is behind small protocols (``HashMemo``, ``Twins``,
``Scorer``, ``Rule``, ``Trainer``, ``Outcomes``), so that every cascade runs the same list
(:func:`cascade_stages`) with its own evidence behind it: the engine (the store, the equivalence
cache and its executor), ``WinnowSearcher`` (a Ray Tune searcher: proxies in its process, Tune
trains) and the dashboard's seeder (``winnow.bench.seed``: synthetic scores and training).

A stage that evaluates (hashing, proxies, a training run started in process) does it through
:meth:`Passage.evaluate`, which times it (evaluations are not engine overhead) and runs it
outside the transaction the other steps share (a SQLite write lock held during an evaluation
would stall every other search on the file).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from time import perf_counter
from typing import Protocol, TypeVar

from winnow.search_space.candidate import Candidate
from winnow.search_space.functional_hash import functional_hash, structural_fallback
from winnow.search_space.trial import Status, TrialResult

T = TypeVar("T")


@dataclass
class Proposal:
    """One candidate on its way through the stages; each fills in what it learnt."""

    number: int  # the candidate's number within the search
    candidate: Candidate
    structural: str  # its structural hash
    functional: str | None = None  # the hash stage's
    scores: TrialResult | None = field(default=None, compare=False)  # the proxy stage's


class Outcomes(Protocol):
    """What a cascade does when a stage settles a proposal (stores it, tells the sampler)."""

    def reused(self, proposal: Proposal, result: TrialResult) -> None:
        """``result`` (a twin's) answers for the proposal: ``OK`` with its metrics, or
        ``PRUNED`` when the twin is still running and the proposal is redundant."""

    def failed(self, proposal: Proposal, stage: str, result: TrialResult) -> None:
        """The evaluation of ``stage`` failed (``result`` says why)."""

    def screened(self, proposal: Proposal, stage: str, result: TrialResult) -> None:
        """``stage`` judged the proposal: ``OK`` goes on, ``PRUNED`` (``error`` says why) not."""


class Passage:
    """One proposal's way through the stages: where they report (``outcomes``), the
    transaction their writes share (``transaction``: a fresh context manager per use, such as
    ``Store.batch``; none by default) and the seconds spent evaluating."""

    def __init__(
        self,
        outcomes: Outcomes,
        transaction: Callable[[], AbstractContextManager] = nullcontext,
    ) -> None:
        self.outcomes, self.transaction = outcomes, transaction
        self.evaluation = 0.0
        self._open = ExitStack()

    def __enter__(self) -> Passage:
        self._open.enter_context(self.transaction())
        return self

    def __exit__(self, *error) -> bool | None:
        return self._open.__exit__(*error)

    def evaluate(self, work: Callable[[], T]) -> T:
        """Run ``work`` outside the transaction: what the stages wrote so far is committed
        first, and a new transaction opens after it."""
        self._open.close()
        start = perf_counter()
        try:
            return work()
        finally:
            self.evaluation += perf_counter() - start
            self._open.enter_context(self.transaction())


class Stage(Protocol):
    """One step of the cascade: True lets the proposal go on to the next stage."""

    name: str

    def __call__(self, proposal: Proposal, passage: Passage) -> bool: ...


def run_stages(stages: Sequence[Stage], proposal: Proposal, passage: Passage) -> bool:
    """The proposal through ``stages`` until one settles it; True when it reached the end
    (was handed to training)."""
    with passage:
        return all(stage(proposal, passage) for stage in stages)  # stops at the first False


# --- what the stages ask ------------------------------------------------------------------------


class HashMemo(Protocol):
    """Functional hashes by structural hash (equal structure computes the same function)."""

    def get(self, structural: str) -> str | None: ...

    def put(self, structural: str, functional: str) -> None: ...


class MemoryHashMemo(dict):
    """A :class:`HashMemo` in a dict, for one process."""

    def put(self, structural: str, functional: str) -> None:
        self[structural] = functional


class Twins(Protocol):
    def find(self, proposal: Proposal, passage: Passage) -> TrialResult | None:
        """A result of an equal function that answers for the proposal (see
        ``Outcomes.reused``), or None."""


class Scorer(Protocol):
    def scores(self, proposal: Proposal, passage: Passage) -> TrialResult:
        """The proposal's zero-cost proxy scores (``proxy.<name>`` metrics), or a failure."""


class Rule(Protocol):
    def judge(self, proposal: Proposal, scores: TrialResult) -> TrialResult:
        """``scores`` with the screen's decision: ``OK`` to keep, ``PRUNED`` with the reason."""


class Trainer(Protocol):
    def start(self, proposal: Proposal, passage: Passage) -> None:
        """Send the proposal to its first training rung."""


# --- the stages ---------------------------------------------------------------------------------


class SizeCapStage:
    """Fails a candidate whose network has more than ``cap`` parameters before anything builds
    it at full size: not hashed, scored or trained. ``count`` gives the parameters without
    allocating them (e.g. ``costs.parameters_of``: built on torch's meta device), or None when
    it cannot tell; such a candidate goes on, and the stage that builds it reports what is
    wrong with it."""

    name = "costs"  # the row it leaves: a static cost of the network

    def __init__(self, cap: int, count: Callable[[Candidate], int | None]) -> None:
        self.cap, self.count = cap, count

    def __call__(self, proposal: Proposal, passage: Passage) -> bool:
        parameters = self.count(proposal.candidate)
        if parameters is None or parameters <= self.cap:
            return True
        error = f"{parameters:,} parameters, over the server's cap of {self.cap:,}"
        result = TrialResult(Status.FAILED, {"params": float(parameters)}, error=error)
        passage.outcomes.failed(proposal, self.name, result)
        return False


class HashStage:
    """Fills in the functional hash: from the memo, else computed (an evaluation) and kept.

    ``compute`` returns None when it could not hash (a worker's hash trial failed): the
    proposal goes on under its structural hash (``structural_fallback``, as for a probe that
    diverges), which is not memoised, so the next equal structure tries again. An equal
    structure computes the same function, so the fallback never merges different functions;
    it only misses twins of other structures."""

    name = "hash"

    def __init__(
        self,
        memo: HashMemo,
        compute: Callable[[Proposal], str | None] = lambda proposal: functional_hash(
            proposal.candidate
        ),
    ) -> None:
        self.memo, self.compute = memo, compute

    def __call__(self, proposal: Proposal, passage: Passage) -> bool:
        functional = self.memo.get(proposal.structural)
        if functional is None:
            functional = passage.evaluate(lambda: self.compute(proposal))
            if functional is None:
                functional = structural_fallback(proposal.structural)
            else:
                self.memo.put(proposal.structural, functional)
        proposal.functional = functional
        return True


class ReuseStage:
    """A twin's result (an equal function's) answers for the proposal: it is not trained."""

    name = "reuse"

    def __init__(self, twins: Twins) -> None:
        self.twins = twins

    def __call__(self, proposal: Proposal, passage: Passage) -> bool:
        twin = self.twins.find(proposal, passage)
        if twin is None:
            return True
        passage.outcomes.reused(proposal, twin)
        return False


class ProxyStage:
    """Scores the proposal with zero-cost proxies (the screen judges them next)."""

    name = "proxy"

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def __call__(self, proposal: Proposal, passage: Passage) -> bool:
        proposal.scores = self.scorer.scores(proposal, passage)
        return True


class ScreenStage:
    """Keeps the proposals whose proxy scores the rule ranks high enough; a failed scoring
    stops the proposal as failed."""

    name = "screen"

    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    def __call__(self, proposal: Proposal, passage: Passage) -> bool:
        scores = proposal.scores
        assert scores is not None, "the screen judges the proxy stage's scores"
        if scores.status != Status.OK:
            passage.outcomes.failed(proposal, "proxy", scores)
            return False
        judged = self.rule.judge(proposal, scores)
        passage.outcomes.screened(proposal, "proxy", judged)
        return judged.status == Status.OK


class SupernetStage:
    """The supernet fidelity's slot, between the proxy screen and training: a stage here will
    score candidates with weights inherited from a trained supernet and stop the weak ones
    (``passage.outcomes.screened(proposal, "supernet", result)`` with a ``PRUNED`` result).
    Until the supernet exists it passes every candidate; give another stage as ``supernet``
    to :func:`cascade_stages` (``Engine``, ``WinnowSearcher``) to plug one in."""

    name = "supernet"

    def __call__(self, proposal: Proposal, passage: Passage) -> bool:
        return True


class TrainStage:
    """Hands the proposal to training (its first rung)."""

    name = "train"

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def __call__(self, proposal: Proposal, passage: Passage) -> bool:
        self.trainer.start(proposal, passage)
        return True


def cascade_stages(
    memo: HashMemo,
    twins: Twins,
    scorer: Scorer,
    rule: Rule,
    trainer: Trainer,
    supernet: Stage | None = None,
    compute_hash: Callable[[Proposal], str | None] | None = None,
) -> list[Stage]:
    """The cascade's stage list, in order (``compute_hash``: how the hash stage computes a
    functional hash the memo lacks, None when it could not; ``functional_hash`` in this
    process by default, the engine's ``WorkerHashes`` sends a ``hash`` trial to its
    executor)."""
    hashing = HashStage(memo) if compute_hash is None else HashStage(memo, compute_hash)
    return [
        hashing,
        ReuseStage(twins),
        ProxyStage(scorer),
        ScreenStage(rule),
        supernet or SupernetStage(),
        TrainStage(trainer),
    ]
