"""``WinnowSearcher``: winnow's cascade as a Ray Tune ``Searcher``, so that Tune users get
functional hashing and zero-cost proxy screening inside their own experiments.

``suggest`` asks an Optuna sampler for a candidate, then runs the engine's stage list
(``cascade.cascade_stages``) with this searcher's evidence behind it:

1. **hash** — structural, then functional (memoised in this process);
2. **reuse** — a candidate computing the same function as one already finished is not run
   again: the sampler is told the stored value and asked again; one identical to a trial still
   running is skipped (told ``PRUNED``);
3. **proxy**, **screen** — the screen's zero-cost proxies, run in this process (``run_trial``),
   and ``ProxyScreen``: only candidates in the top fraction are kept; others are told
   ``PRUNED``;
4. **supernet** — the slot (``supernet=``; passes every candidate by default);
5. **train** — ``{"candidate": ...}`` goes back to Tune for ``winnow.workers.tune.train_candidate``.

Results come back through ``on_trial_complete``. A trial that ran its ``max_epochs`` is told
to the sampler as complete, remembered by functional hash and shown to the screen; one that a
Tune scheduler stopped early is told ``PRUNED`` with its last value as an intermediate report,
as the engine does with its own rungs. After ``max_attempts`` proposals in a row that are all
duplicates or screened out, with nothing running, the space is taken as exhausted
(``FINISHED``).

This lives in ``winnow.service`` (not with the trainable in ``winnow.workers.tune``) because it
is the engine's cascade, and workers never import the service. It takes no search spec, so a
spec's ``strategy.confirm`` (the engine's confirmation of its front) has no counterpart here:
Tune's trials stay single runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from winnow.search_space.candidate import Candidate
from winnow.search_space.canonical import structural_hash
from winnow.search_space.functional_hash import Probe, functional_hash
from winnow.search_space.spec import SearchSpace
from winnow.search_space.trial import Status, TrialResult, TrialSpec
from winnow.service.engine.cascade import (
    MemoryHashMemo,
    Passage,
    Proposal,
    Stage,
    cascade_stages,
    run_stages,
)
from winnow.service.engine.evidence_ladder import BASELINE
from winnow.service.engine.sampling import make_study
from winnow.service.engine.screening import ProxyScreen
from winnow.service.search_spec import Objective, Screen
from winnow.workers.run import run_trial


@dataclass
class _Proposal(Proposal):
    trial: optuna.trial.Trial | None = field(default=None, compare=False)
    tune_id: str = ""  # the Tune trial it was suggested for


class WinnowSearcher(Searcher):
    """See the module docstring. ``max_attempts`` bounds the proposals one ``suggest`` may
    discard (duplicates, screened out) before it gives up: for now (``None``) while trials run,
    for good (``FINISHED``) when none does. ``max_epochs`` is the trainable's full length;
    ``supernet`` a stage for the cascade's supernet slot; ``warm_start``: candidates (e.g. an
    exported recipe's ``candidate``) the study asks first, in order, as a spec's
    ``warm_start`` does for winnow's own engine (one outside the space raises
    ``CandidateNotInSpaceError``)."""

    def __init__(
        self,
        space: SearchSpace,
        dataset: str,
        metric: str = "accuracy",
        mode: str = "max",
        screen: Screen | None = None,
        sampler: str = "tpe",
        seed: int = 0,
        max_attempts: int = 100,
        max_epochs: int | None = None,
        supernet: Stage | None = None,
        warm_start: Sequence[Candidate | dict[str, Any]] = (),
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        direction = "maximize" if mode == "max" else "minimize"
        self.space, self.dataset, self.seed = space, dataset, seed
        self.settings = screen or Screen(proxies=["synflow", "naswot", "params"])
        self.screen = ProxyScreen(self.settings, [Objective(name=metric, direction=direction)])
        self.study = make_study(sampler, [direction], seed)
        for candidate in warm_start:
            known = candidate if isinstance(candidate, Candidate) else Candidate(**candidate)
            self.study.enqueue_trial(space.to_optuna(known)[0])
        self.max_attempts, self.max_epochs = max_attempts, max_epochs
        self.live: dict[str, _Proposal] = {}  # Tune trial id -> its proposal
        self.finished: dict[str, float] = {}  # functional hash -> its metric
        self.memo = MemoryHashMemo()  # structural hash -> functional hash
        self.counts = {"proposals": 0, "duplicates": 0, "screened_out": 0, "suggested": 0}
        self.stages = cascade_stages(
            self.memo, self, self, self, self, supernet, compute_hash=self._functional_hash
        )

    def _functional_hash(self, proposal: Any) -> str:
        """In this process, on the probe of this task (a custom family's is of its shape)."""
        candidate = proposal.candidate
        return functional_hash(candidate, probe=Probe.for_task(candidate, self.dataset))

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **_):
        """Tune's ``TuneConfig(metric=..., mode=...)`` must agree with the searcher's own."""
        return (not metric or metric == self.metric) and (not mode or mode == self.mode)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        for _ in range(self.max_attempts):
            trial = self.study.ask()
            candidate = self.space.suggest_optuna(trial)
            number = self.counts["proposals"]
            self.counts["proposals"] += 1
            proposal = _Proposal(
                number, candidate, structural_hash(candidate), trial=trial, tune_id=trial_id
            )
            if run_stages(self.stages, proposal, Passage(self)):
                return {"candidate": candidate.model_dump(mode="json")}
        return None if self.live else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        proposal = self.live.pop(trial_id, None)
        if proposal is None:
            return
        value = None if error or not result else result.get(self.metric)
        if value is None:
            self.study.tell(proposal.trial, state=TrialState.FAIL)
            return
        epoch = result.get("epoch", result.get("training_iteration", 0))
        if self.max_epochs is not None and epoch < self.max_epochs:  # stopped by a scheduler
            proposal.trial.report(float(value), int(epoch))
            self.study.tell(proposal.trial, state=TrialState.PRUNED)
            return
        self.study.tell(proposal.trial, float(value))
        self.finished.setdefault(proposal.functional, float(value))
        # the trainable reports the static costs: params is the screen's baseline for its rule
        observed = {self.metric: float(value)}
        if result.get(BASELINE) is not None:
            observed[BASELINE] = float(result[BASELINE])
        self.screen.observe(proposal.number, observed)

    # --- the evidence behind the stages (cascade.Twins, Scorer, Rule, Trainer, Outcomes) ------

    def find(self, proposal: _Proposal, passage: Passage) -> TrialResult | None:
        """A finished twin answers for the candidate; a running twin makes it redundant."""
        if proposal.functional in self.finished:
            return TrialResult(Status.OK, {self.metric: self.finished[proposal.functional]})
        if any(p.functional == proposal.functional for p in self.live.values()):
            return TrialResult(Status.PRUNED, error="an equal function is running")
        return None

    def scores(self, proposal: _Proposal, passage: Passage) -> TrialResult:
        proxies = tuple(self.settings.proxies)
        spec = TrialSpec(
            proposal.candidate, self.dataset, stage="proxy", seed=self.seed, proxies=proxies
        )
        return passage.evaluate(lambda: run_trial(spec))

    def judge(self, proposal: _Proposal, scores: TrialResult) -> TrialResult:
        values = {p: scores.metrics.get(f"proxy.{p}") for p in self.settings.proxies}
        keep = self.screen.add(proposal.number, values).keep
        return TrialResult(Status.OK if keep else Status.PRUNED, scores.metrics)

    def start(self, proposal: _Proposal, passage: Passage) -> None:
        self.live[proposal.tune_id] = proposal
        self.counts["suggested"] += 1

    def reused(self, proposal: _Proposal, result: TrialResult) -> None:
        self.counts["duplicates"] += 1
        if result.status == Status.OK:
            self.study.tell(proposal.trial, result.metrics[self.metric])
        else:
            self.study.tell(proposal.trial, state=TrialState.PRUNED)

    def failed(self, proposal: _Proposal, stage: str, result: TrialResult) -> None:
        self.screened(proposal, stage, TrialResult(Status.PRUNED, error=result.error))

    def screened(self, proposal: _Proposal, stage: str, result: TrialResult) -> None:
        if result.status != Status.OK:
            self.counts["screened_out"] += 1
            self.study.tell(proposal.trial, state=TrialState.PRUNED)
