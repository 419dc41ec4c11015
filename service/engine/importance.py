"""Which axes and hyperparameters matter for each objective, at each fidelity.

Optuna's importance evaluators over an in-memory study rebuilt from the stored trials, the way
the restore rebuilds its study (``state.optuna_params``: a candidate's Optuna params and the
space's distributions): one single-objective study per fidelity (a training rung's epochs) and
objective, holding that rung's trained results (``TrialRecord.trained``, reused results
included) with the objective's value. Results of different fidelities are never mixed: a
parameter that matters after 2 epochs (the learning rate's warm-up) may not after 50.

Evaluators (``EVALUATORS``): ``ped-anova`` (the default, Optuna's: PED-ANOVA, Watanabe et al.,
IJCAI 2023, which compares the parameters' distribution in the best ``target_quantile`` of the
trials with all of them and, in Optuna 5, takes conditional parameters such as one optimizer's
learning rate over the trials that have them) and ``fanova`` (Hutter et al., ICML 2014: a
random forest's variance decomposition, over the parameters every trial has). Importances are
normalised to sum to 1 per study; an axis's importance is the sum of its parameters'
(first-order, so a sum, not an interaction). Pure functions of records: no store, no Streamlit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.importance import (
    BaseImportanceEvaluator,
    FanovaImportanceEvaluator,
    PedAnovaImportanceEvaluator,
)
from optuna.search_space import intersection_search_space
from optuna.trial import FrozenTrial, create_trial

from winnow.records import TrialRecord
from winnow.search_space.candidate import Candidate
from winnow.search_space.spec import SearchSpace
from winnow.service.engine.state import optuna_params
from winnow.service.search_spec import Objective, SearchSpec

EVALUATORS: dict[str, Callable[[int], BaseImportanceEvaluator]] = {
    "ped-anova": lambda seed: PedAnovaImportanceEvaluator(),
    "fanova": lambda seed: FanovaImportanceEvaluator(seed=seed),
}
DEFAULT_EVALUATOR = "ped-anova"
# Fewer results than this say nothing about importance (PED-ANOVA's best tenth is one trial).
MIN_TRIALS = 10


@dataclass(frozen=True)
class Importance:
    """How much each parameter matters for ``objective`` at ``epochs`` (one fidelity), over
    ``trials`` trained results (of ``results``: the latest, when capped); ``params`` highest
    first, summing to 1."""

    epochs: int
    objective: str
    trials: int
    evaluator: str
    params: dict[str, float] = field(default_factory=dict)
    left_out: tuple[str, ...] = ()  # conditional parameters: not set in every trial
    results: int = 0  # the fidelity's results with the objective's value (``trials``: those used)

    @property
    def axes(self) -> dict[str, float]:
        """The importance of each axis (``architecture``, ``normalization``, ``optimizer``,
        ``quantization``): the sum of its parameters', highest first."""
        sums: dict[str, float] = {}
        for name, value in self.params.items():
            sums[axis_of(name)] = sums.get(axis_of(name), 0.0) + value
        return dict(sorted(sums.items(), key=lambda kv: -kv[1]))


def axis_of(param: str) -> str:
    """A parameter's axis: the first part of its decision path (``optimizer.sgd.lr``)."""
    return param.split(".", 1)[0]


def decisions(space: SearchSpace, candidate_json: str) -> dict[str, Any]:
    """A stored candidate's decided values by decision path (``SearchSpace.flatten``: one
    ``optimizer.lr`` whichever optimizer, unlike Optuna's per-optimizer names), for plotting
    parameters against objectives; empty when the candidate no longer parses."""
    try:
        return space.flatten(Candidate.from_json(candidate_json))
    except ValueError:  # pydantic's ValidationError: an older winnow's row
        return {}


def study_trials(
    space: SearchSpace, results: Iterable[tuple[str, float | None]]
) -> list[FrozenTrial]:
    """Completed Optuna trials of ``(candidate JSON, objective value)`` pairs of one fidelity's
    trained results; a result without the value, or whose candidate is no longer in ``space``
    or no longer parses (a changed space, an older winnow's row), is left out."""
    trials, parsed = [], {}
    for candidate, value in results:
        if value is None:
            continue
        if candidate not in parsed:
            try:
                parsed[candidate] = optuna_params(space, candidate)[1:]
            except ValueError:  # CandidateNotInSpaceError, or pydantic's ValidationError
                parsed[candidate] = None
        if parsed[candidate] is not None:
            params, distributions = parsed[candidate]
            trials.append(
                create_trial(params=params, distributions=distributions, value=float(value))
            )
    return trials


def shared_params(trials: Sequence[FrozenTrial]) -> tuple[list[str], tuple[str, ...]]:
    """The parameters every trial has (with one distribution), and the others, sorted."""
    shared = sorted(intersection_search_space(trials))
    every = {name for t in trials for name in t.params}
    return shared, tuple(sorted(every - set(shared)))


def importance(
    trials: Sequence[FrozenTrial],
    direction: str,
    evaluator: str = "ped-anova",
    seed: int = 0,
    params: Sequence[str] | None = None,
) -> dict[str, float]:
    """The normalised importance (highest first) of each of ``params`` (by default those every
    one of ``trials`` has: :func:`shared_params`) in a study of ``trials``; empty when the
    objective does not vary or there is no parameter (nothing to explain); ``evaluator``: a
    name of ``EVALUATORS``."""
    if evaluator not in EVALUATORS:
        raise ValueError(f"unknown evaluator {evaluator!r}; allowed: {', '.join(EVALUATORS)}")
    params = list(shared_params(trials)[0] if params is None else params)
    if len({t.value for t in trials}) < 2 or not params:
        return {}
    study = optuna.create_study(direction=direction)
    study.add_trials(trials)
    with warnings.catch_warnings():  # PED-ANOVA's experimental warning, once per study
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        found = optuna.importance.get_param_importances(
            study,
            evaluator=EVALUATORS[evaluator](seed),
            params=params,
        )
    return {name: float(value) for name, value in found.items()}


def importances(
    spec: SearchSpec,
    rows: Iterable[TrialRecord],
    evaluator: str = "ped-anova",
    seed: int = 0,
    min_trials: int = MIN_TRIALS,
) -> list[Importance]:
    """:class:`Importance` for every fidelity (a training rung's epochs, lowest first) and
    objective with at least ``min_trials`` trained results."""
    by_epochs: dict[int, list[TrialRecord]] = {}
    for row in rows:
        if row.trained:
            by_epochs.setdefault(row.epochs, []).append(row)
    space, out = spec.search_space, []
    for epochs in sorted(by_epochs):
        for objective in spec.objectives:
            pairs = [(r.candidate, r.metrics.get(objective.name)) for r in by_epochs[epochs]]
            found = fidelity_importance(
                space, epochs, objective, pairs, evaluator, seed, min_trials
            )
            out += [found] if found is not None else []
    return out


def fidelity_importance(
    space: SearchSpace,
    epochs: int,
    objective: Objective,
    results: Iterable[tuple[str, float | None]],
    evaluator: str = "ped-anova",
    seed: int = 0,
    min_trials: int = MIN_TRIALS,
    latest: int | None = None,
) -> Importance | None:
    """The :class:`Importance` of one fidelity's trained results (``(candidate JSON, value of
    objective)`` pairs in completion order, as :func:`study_trials` takes them; ``latest``: of
    the last so many only), or None with fewer than ``min_trials`` of them."""
    results = [(c, v) for c, v in results if v is not None]
    used = results[-latest:] if latest else results
    trials = study_trials(space, used)
    if len(trials) < min_trials:
        return None
    shared, left_out = shared_params(trials)
    found = importance(trials, objective.direction, evaluator, seed, shared)
    return Importance(
        epochs, objective.name, len(trials), evaluator, found, left_out, results=len(results)
    )
