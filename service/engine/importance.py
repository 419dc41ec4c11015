"""Which axes and hyperparameters matter for each objective, at each fidelity.

Optuna's importance evaluators over an in-memory study rebuilt from the stored trials: one
single-objective study per fidelity (a training rung's epochs) and objective, holding that
rung's trained results (``TrialRecord.trained``, reused results included) with the objective's
value. Results of different fidelities are never mixed: a parameter that matters after 2 epochs
(the learning rate's warm-up) may not after 50.

The study is keyed by decision path (``decide``'s ``path``: ``optimizer.lr`` whichever
optimizer, as the slice and parallel plots name it), not by Optuna's per-optimizer names
(``optimizer.sgd.lr``), which would make the learning rate conditional in any space with two
optimizers and leave it unranked. A path decided with different ranges (each optimizer's
learning rate) gets one distribution spanning them all (same log flag); a path whose
distributions cannot be joined (log and linear, a range and a choice) is left out.

Evaluators (``EVALUATORS``): ``ped-anova`` (the default, Optuna's: PED-ANOVA, Watanabe et al.,
IJCAI 2023, which compares the parameters' distribution in the best ``target_quantile`` of the
trials with all of them; the quantile is raised on small studies so the best region holds at
least ``PED_ANOVA_BEST`` trials) and ``fanova`` (Hutter et al., ICML 2014: a random forest's
variance decomposition; 5.5 s on 500 trials, so it samples fewer). Only parameters every trial
has are ranked. Importances are normalised to sum to 1 per study (nothing when every raw
importance is zero: Optuna would spread 1/n); an axis's importance is the sum of its
parameters' (first-order, so a sum; an axis with many parameters collects more, and the page
says so). Pure functions of records: no store, no Streamlit.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna import distributions as od
from optuna.importance import (
    BaseImportanceEvaluator,
    FanovaImportanceEvaluator,
    PedAnovaImportanceEvaluator,
)
from optuna.search_space import intersection_search_space
from optuna.trial import FrozenTrial, create_trial

from winnow.records import NOISY_IMPORTANCE, TrialRecord
from winnow.search_space.candidate import Candidate
from winnow.search_space.params import CandidateNotInSpaceError, ReplayChooser
from winnow.search_space.spec import SearchSpace
from winnow.service.search_spec import Objective, SearchSpec

# Every create_study would log "A new study created in memory" (as engine/sampling.py mutes).
optuna.logging.set_verbosity(optuna.logging.WARNING)

PED_ANOVA_BEST = 10  # trials in PED-ANOVA's best region at the least (its docs: at least 5)


def _ped_anova(seed: int, n: int) -> BaseImportanceEvaluator:
    # The best tenth of 10 trials is one trial: raise the quantile to hold PED_ANOVA_BEST.
    return PedAnovaImportanceEvaluator(target_quantile=min(0.5, max(0.1, PED_ANOVA_BEST / n)))


EVALUATORS: dict[str, Callable[[int, int], BaseImportanceEvaluator]] = {
    "ped-anova": _ped_anova,
    "fanova": lambda seed, n: FanovaImportanceEvaluator(seed=seed),
}
DEFAULT_EVALUATOR = "ped-anova"
# The most trials a study samples per evaluator: a study costs about 0.6 ms a trial to
# rebuild; PED-ANOVA is then milliseconds, fANOVA's forest 5.5 s on 500.
SAMPLE = {"ped-anova": 500, "fanova": 150}
MIN_TRIALS = 10  # fewer results say nothing about importance
NOISY_TRIALS = NOISY_IMPORTANCE  # fewer than this: a ranking to read with care (it says so)


@dataclass(frozen=True)
class Importance:
    """How much each parameter (by decision path) matters for ``objective`` at ``epochs`` (one
    fidelity), over ``trials`` trained results of ``results`` (a seeded random sample of them
    when ``sampled``; fewer when some no longer parse); ``params`` highest first, summing to 1."""

    epochs: int
    objective: str
    trials: int
    evaluator: str
    params: dict[str, float] = field(default_factory=dict)
    left_out: tuple[str, ...] = ()  # conditional parameters: not set in every trial
    results: int = 0  # the fidelity's results with the objective's value (``trials``: those used)
    sampled: bool = False  # ``trials`` is a seeded random sample of the results

    @property
    def axes(self) -> dict[str, float]:
        """The importance of each axis (``architecture``, ``normalization``, ``optimizer``,
        ``quantization``): the sum of its parameters', highest first."""
        sums: dict[str, float] = {}
        for name, value in self.params.items():
            sums[axis_of(name)] = sums.get(axis_of(name), 0.0) + value
        return dict(sorted(sums.items(), key=lambda kv: -kv[1]))

    @property
    def noisy(self) -> bool:
        """Too few trials for a ranking to be more than a hint."""
        return self.trials < NOISY_TRIALS


def axis_of(param: str) -> str:
    """A parameter's axis: the first part of its decision path (``optimizer.lr``)."""
    return param.split(".", 1)[0]


class _ByPath:
    """Replays a candidate's flat form (``ReplayChooser``), remembering each decision's path,
    so its Optuna params and distributions can be keyed by path."""

    def __init__(self, flat: dict[str, Any]) -> None:
        self.inner, self.paths = ReplayChooser(flat), {}

    def categorical(self, name, choices, path):
        self.paths[name] = path
        return self.inner.categorical(name, choices, path)

    def float(self, name, low, high, log, path):
        self.paths[name] = path
        return self.inner.float(name, low, high, log, path)

    def int(self, name, low, high, step, log, path):
        self.paths[name] = path
        return self.inner.int(name, low, high, step, log, path)


def path_params(space: SearchSpace, candidate_json: str) -> tuple[dict, dict]:
    """A stored candidate's Optuna params and distributions keyed by decision path (what
    ``SearchSpace.to_optuna`` gives keyed by Optuna's names). Raises ValueError when the
    candidate no longer parses or is not in ``space``."""
    candidate = Candidate.from_json(candidate_json)
    chooser = _ByPath(space.flatten(candidate))
    if space.suggest(chooser).canonical_json() != candidate.canonical_json():
        raise CandidateNotInSpaceError("the candidate is not in the space")
    inner, paths = chooser.inner, chooser.paths
    return (
        {paths[n]: v for n, v in inner.params.items()},
        {paths[n]: d for n, d in inner.distributions.items()},
    )


def _joined(found: list[od.BaseDistribution]) -> od.BaseDistribution | None:
    """One distribution spanning ``found`` (one path's, across optimizers), or None when they
    cannot be joined (different kinds, log flags or steps)."""
    first = found[0]
    if all(d == first for d in found):
        return first
    if all(isinstance(d, od.CategoricalDistribution) for d in found):
        return od.CategoricalDistribution(list(dict.fromkeys(c for d in found for c in d.choices)))
    kinds = {(type(d), getattr(d, "log", None), getattr(d, "step", None)) for d in found}
    if len(kinds) != 1 or not isinstance(first, od.FloatDistribution | od.IntDistribution):
        return None
    low, high = min(d.low for d in found), max(d.high for d in found)
    if isinstance(first, od.FloatDistribution):
        return od.FloatDistribution(low, high, log=first.log, step=first.step)
    return od.IntDistribution(low, high, log=first.log, step=first.step)


def study_trials(
    space: SearchSpace, results: Iterable[tuple[str, float | None]]
) -> list[FrozenTrial]:
    """Completed Optuna trials, keyed by decision path, of ``(candidate JSON, objective
    value)`` pairs of one fidelity's trained results (one joined distribution per path:
    :func:`_joined`); a result without the value, or whose candidate is no longer in ``space``
    or no longer parses (a changed space, an older winnow's row), is left out."""
    kept, parsed = [], {}
    for candidate, value in results:
        if value is None:
            continue
        if candidate not in parsed:
            try:
                parsed[candidate] = path_params(space, candidate)
            except ValueError:  # CandidateNotInSpaceError, or pydantic's ValidationError
                parsed[candidate] = None
        if parsed[candidate] is not None:
            kept.append((*parsed[candidate], float(value)))
    found: dict[str, list] = {}
    for _, distributions, _ in kept:
        for path, dist in distributions.items():
            found.setdefault(path, []).append(dist)
    joined = {path: _joined(list(dict.fromkeys(d))) for path, d in found.items()}
    trials = []
    for params, _, value in kept:
        usable = [p for p in params if joined[p] is not None]
        trials.append(
            create_trial(
                params={p: params[p] for p in usable},
                distributions={p: joined[p] for p in usable},
                value=value,
            )
        )
    return trials


def shared_params(trials: Sequence[FrozenTrial]) -> tuple[list[str], tuple[str, ...]]:
    """The parameters every trial has (with one distribution), and the others, sorted."""
    shared = sorted(intersection_search_space(trials))
    every = {name for t in trials for name in t.params}
    return shared, tuple(sorted(every - set(shared)))


def rank_params(
    trials: Sequence[FrozenTrial],
    direction: str,
    evaluator: str = "ped-anova",
    seed: int = 0,
    params: Sequence[str] | None = None,
) -> dict[str, float]:
    """The normalised importance (highest first) of each of ``params`` (by default those every
    one of ``trials`` has: :func:`shared_params`) in a study of ``trials``; empty when the
    objective does not vary, there is no parameter, or no parameter explains anything (every
    raw importance zero); ``evaluator``: a name of ``EVALUATORS``."""
    if evaluator not in EVALUATORS:
        raise ValueError(f"unknown evaluator {evaluator!r}; allowed: {', '.join(EVALUATORS)}")
    params = list(shared_params(trials)[0] if params is None else params)
    if len({t.value for t in trials}) < 2 or not params:
        return {}
    study = optuna.create_study(direction=direction)
    study.add_trials(trials)
    with warnings.catch_warnings():  # PED-ANOVA's experimental warning, once per study
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        raw = optuna.importance.get_param_importances(
            study,
            evaluator=EVALUATORS[evaluator](seed, len(trials)),
            params=params,
            normalize=False,  # normalised here: Optuna turns all zeros into 1/n each
        )
    total = sum(raw.values())
    if not total > 0:
        return {}
    ranked = sorted(raw.items(), key=lambda kv: -kv[1])
    return {name: float(value / total) for name, value in ranked}


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
    sample: int | None = None,
) -> Importance | None:
    """The :class:`Importance` of one fidelity's trained results (``(candidate JSON, value of
    objective)`` pairs, as :func:`study_trials` takes them) over a seeded random sample of at
    most ``sample`` of them (by default ``SAMPLE[evaluator]``: the latest would favour what a
    TPE or cascade search converged on), or None with fewer than ``min_trials``."""
    results = [(c, v) for c, v in results if v is not None]
    cap = SAMPLE.get(evaluator, 500) if sample is None else sample
    used = random.Random(seed).sample(results, cap) if len(results) > cap else results
    trials = study_trials(space, used)
    if len(trials) < min_trials:
        return None
    shared, left_out = shared_params(trials)
    found = rank_params(trials, objective.direction, evaluator, seed, shared)
    return Importance(
        epochs,
        objective.name,
        len(trials),
        evaluator,
        found,
        left_out,
        results=len(results),
        sampled=len(used) < len(results),
    )
