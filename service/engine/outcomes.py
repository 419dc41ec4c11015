"""How the engine settles a candidate: the sampler is told, the state counts it and the journal
stores it. The cascade's stages report here (``cascade.Outcomes``: reused, failed, screened),
and so does training (a completed top rung, a pruned rung).

Telling the sampler: a candidate is told once (``PRUNED`` at a rung it does not go up from, with
its value as an intermediate value for one objective); if it is promoted later and finishes the
top rung, the sampler is told that result as a new completed trial.

The evidence ladder (``evidence_ladder``) hears every screening row and completed result here,
and each ``front`` event carries it as measured after that completion."""

from __future__ import annotations

from dataclasses import replace

import optuna
from optuna.trial import TrialState, create_trial

from winnow.search_space.trial import Status, TrialResult
from winnow.service.engine.evidence import violations
from winnow.service.engine.evidence_ladder import EvidenceLadder
from winnow.service.engine.journal import Journal
from winnow.service.engine.pareto import search_hypervolume
from winnow.service.engine.readout import objective_values
from winnow.service.engine.rungs import SuccessiveHalving
from winnow.service.engine.state import SearchState, Tracked
from winnow.service.engine.weights import KeptWeights
from winnow.service.search_spec import SearchSpec


class Outcomes:
    def __init__(
        self,
        spec: SearchSpec,
        state: SearchState,
        journal: Journal,
        study: optuna.Study,
        ladder: SuccessiveHalving,
        weights: KeptWeights,
        evidence: EvidenceLadder | None = None,
    ) -> None:
        self.spec, self.objectives = spec, spec.objectives
        self.state, self.journal = state, journal
        self.study, self.ladder, self.weights = study, ladder, weights
        self.evidence = evidence

    # --- the cascade's outcomes (cascade.Outcomes) ----------------------------------------------

    def reused(self, tracked: Tracked, result: TrialResult) -> None:
        """A stored result of an equal function: stored as a ``duplicate`` top-rung row, or as
        a ``pruned`` one when it violates this search's constraints (the stored result may come
        from a search without them), as a trained result would be."""
        self.state.counts["cache_hits"] += 1
        epochs, top = self.ladder.rungs[-1], self.ladder.top
        violated = violations(self.spec, result.metrics)
        if violated:
            pruned = replace(result, status=Status.PRUNED, error="; ".join(violated))
            self.journal.write(tracked, "train", epochs, top, Status.PRUNED, pruned, True)
            self.state.counts["pruned"] += 1
            self.tell(tracked, TrialState.PRUNED)
            return
        self.journal.write(tracked, "train", epochs, top, "duplicate", result, True)
        self.complete(tracked, result.metrics)

    def failed(self, tracked: Tracked, stage: str, result: TrialResult) -> None:
        self.journal.write(tracked, stage, 0, -1, Status.FAILED, result)
        self.state.counts["failed"] += 1
        self.tell(tracked, TrialState.FAIL)

    def screened(self, tracked: Tracked, stage: str, result: TrialResult) -> None:
        """The stage's row, ``ok`` or ``pruned`` (then counted and told)."""
        self.journal.write(tracked, stage, 0, -1, str(result.status), result)
        if self.evidence is not None:
            self.evidence.scored(tracked.number, stage, result.metrics)
        if result.status == Status.PRUNED:
            self.state.counts["pruned"] += 1
            self.tell(tracked, TrialState.PRUNED)

    # --- completion and telling -----------------------------------------------------------------

    def complete(self, tracked: Tracked, metrics: dict[str, float]) -> None:
        """A top-rung (or reused) result: the sampler, the front and its hypervolume learn it,
        and the kept weights are those of the best trials again (``weights``)."""
        values = objective_values(self.objectives, metrics)
        self.state.completed[tracked.number] = values
        if tracked.told:  # pruned at a lower rung, promoted later: a new completed trial
            self.study.add_trial(
                create_trial(
                    params=tracked.params, distributions=tracked.distributions, values=values
                )
            )
        else:
            self.tell(tracked, TrialState.COMPLETE, values=values)
        self.state.hypervolume = search_hypervolume(self.objectives, self.state.points())
        payload = {"trial_id": tracked.number, "hypervolume": self.state.hypervolume}
        if self.evidence is not None:
            self.evidence.completed(tracked.number, metrics)
            payload["evidence_ladder"] = self.evidence.measure()
        self.journal.event("front", payload)
        if self.weights.kept:
            self.weights.retain(self.state.completed)

    def tell(
        self,
        tracked: Tracked,
        state: TrialState,
        values: list[float] | None = None,
        intermediate: tuple[int, dict[str, float]] | None = None,
    ) -> None:
        """Tell the sampler once; ``intermediate``: ``(rung, metrics)`` reported first (for
        one objective: Optuna's intermediate values are single-objective)."""
        if tracked.told or tracked.optuna_number is None:
            return
        if intermediate is not None and len(self.objectives) == 1 and tracked.trial is not None:
            rung, metrics = intermediate
            value = objective_values(self.objectives, metrics)[0]
            tracked.trial.report(value, self.ladder.rungs[rung])
        self.study.tell(tracked.optuna_number, values, state=state)
        tracked.told = True
        tracked.trial = None  # only reports before the tell; it caches a FrozenTrial

    def tell_waiting(self) -> None:
        """Candidates still open when the budget ends (none with a synchronous executor)."""
        for tracked in self.state.tracked.values():
            self.tell(tracked, TrialState.PRUNED)
