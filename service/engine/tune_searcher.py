"""``WinnowSearcher``: winnow's cascade as a Ray Tune ``Searcher``, so that Tune users get
functional hashing and zero-cost proxy screening inside their own experiments.

``suggest`` asks an Optuna sampler for a candidate, then, as the engine does:

1. hashes it (structural, then functional); a candidate computing the same function as one
   already finished is not run again: the sampler is told the stored value and asked again;
   one identical to a trial still running is skipped (told ``PRUNED``);
2. scores it with the screen's zero-cost proxies (in this process, at initialisation) and keeps
   it only when ``ProxyScreen`` ranks it in the top fraction; others are told ``PRUNED``;
3. returns ``{"candidate": ...}`` for ``winnow.workers.tune.train_candidate``.

Results come back through ``on_trial_complete``. A trial that ran its ``max_epochs`` is told
to the sampler as complete, remembered by functional hash and shown to the screen; one that a
Tune scheduler stopped early is told ``PRUNED`` with its last value as an intermediate report,
as the engine does with its own rungs. After ``max_attempts`` proposals in a row that are all
duplicates or screened out, with nothing running, the space is taken as exhausted
(``FINISHED``).

This lives in ``winnow.service`` (not with the trainable in ``winnow.workers.tune``) because it
is the engine's cascade, and workers never import the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from winnow.search_space.canonical import structural_hash
from winnow.search_space.functional_hash import functional_hash
from winnow.search_space.spec import SearchSpace
from winnow.search_space.trial import Status, TrialSpec
from winnow.service.engine.sampling import make_study
from winnow.service.engine.screening import ProxyScreen
from winnow.service.search_spec import Objective, Screen
from winnow.workers.run import run_trial


@dataclass
class _Proposal:
    trial: optuna.trial.Trial
    number: int
    functional: str


class WinnowSearcher(Searcher):
    """See the module docstring. ``max_attempts`` bounds the proposals one ``suggest`` may
    discard (duplicates, screened out) before it gives up: for now (``None``) while trials run,
    for good (``FINISHED``) when none does. ``max_epochs`` is the trainable's full length."""

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
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        direction = "maximize" if mode == "max" else "minimize"
        self.space, self.dataset, self.seed = space, dataset, seed
        self.settings = screen or Screen(proxies=["synflow", "naswot", "params"])
        self.screen = ProxyScreen(self.settings, [Objective(name=metric, direction=direction)])
        self.study = make_study(sampler, [direction], seed)
        self.max_attempts, self.max_epochs = max_attempts, max_epochs
        self.live: dict[str, _Proposal] = {}  # Tune trial id -> its proposal
        self.finished: dict[str, float] = {}  # functional hash -> its metric
        self.memo: dict[str, str] = {}  # structural hash -> functional hash
        self.counts = {"proposals": 0, "duplicates": 0, "screened_out": 0, "suggested": 0}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **_):
        """Tune's ``TuneConfig(metric=..., mode=...)`` must agree with the searcher's own."""
        return (not metric or metric == self.metric) and (not mode or mode == self.mode)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        for _ in range(self.max_attempts):
            trial = self.study.ask()
            candidate = self.space.suggest_optuna(trial)
            number = self.counts["proposals"]
            self.counts["proposals"] += 1
            functional = self._functional_hash(candidate)
            if self._known(trial, functional):
                continue
            if not self._passes_screen(candidate, number):
                self.study.tell(trial, state=TrialState.PRUNED)
                continue
            self.live[trial_id] = _Proposal(trial, number, functional)
            self.counts["suggested"] += 1
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
        self.screen.observe(proposal.number, {self.metric: float(value)})

    def _functional_hash(self, candidate: Any) -> str:
        """Memoised by structural hash: equal structure computes the same function."""
        structural = structural_hash(candidate)
        if structural not in self.memo:
            self.memo[structural] = functional_hash(candidate)
        return self.memo[structural]

    def _known(self, trial: optuna.trial.Trial, functional: str) -> bool:
        """A finished twin answers for the candidate; a running twin makes it redundant."""
        if functional in self.finished:
            self.counts["duplicates"] += 1
            self.study.tell(trial, self.finished[functional])
            return True
        if any(p.functional == functional for p in self.live.values()):
            self.counts["duplicates"] += 1
            self.study.tell(trial, state=TrialState.PRUNED)
            return True
        return False

    def _passes_screen(self, candidate: Any, number: int) -> bool:
        proxies = tuple(self.settings.proxies)
        spec = TrialSpec(candidate, self.dataset, stage="proxy", seed=self.seed, proxies=proxies)
        scores = run_trial(spec)
        values = {p: scores.metrics.get(f"proxy.{p}") for p in self.settings.proxies}
        if scores.status == Status.OK and self.screen.add(number, values).keep:
            return True
        self.counts["screened_out"] += 1
        return False
