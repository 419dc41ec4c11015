"""Optuna samplers by strategy name (the ``SAMPLERS`` registry), and the in-memory study the
engine asks and tells.

The study is never the source of truth: the store is, and the engine rebuilds the study from
it after a restart (``Engine.resume``)."""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable, Sequence

import optuna
from optuna.storages import InMemoryStorage
from optuna.trial import FrozenTrial, TrialState

from winnow.search_space.registry import Registry

optuna.logging.set_verbosity(optuna.logging.WARNING)


class SamplerViewStorage(InMemoryStorage):
    """Optuna's in-memory storage for one study, whose samplers see only the ``window`` newest
    screened-out trials (pruned with no intermediate value: by the proxy screen, or over a
    constraint) besides every other trial.

    Why: TPE refits on every trial it sees at every ask, so an ask costs time linear in them
    (8 ms at 900 trials on this machine), and a cascade prunes most proposals at the proxy
    screen (550 of 890 in one nb201 search, with 240 more repeats of trained cells); TPE's own
    weights already count old trials less. Every trial is still told and kept by the engine's
    store; trials pruned at a rung keep their intermediate value and are always seen.
    (Showing repeated parameters once as well made TPE propose its best cell for ever: a
    repeat it cannot see does not change its model.)"""

    def __init__(self, window: int | None = None) -> None:
        super().__init__()
        if window is not None and window < 1:
            raise ValueError(f"the screened-out window must be at least 1, got {window}")
        self.window = window
        self._hidden: set[int] = set()
        self._screened: deque[int] = deque()

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        if template_trial is not None:
            self._finished(trial_id)
        return trial_id

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)
        if changed:
            self._finished(trial_id)
        return changed

    def get_all_trials(self, study_id, deepcopy=True, states=None) -> list[FrozenTrial]:
        trials = super().get_all_trials(study_id, deepcopy, states)
        if not self._hidden:
            return trials
        # FrozenTrial has no public trial id; a storage is keyed by it (Optuna's own storages
        # read ``_trial_id`` the same way).
        return [t for t in trials if t._trial_id not in self._hidden]

    def _finished(self, trial_id: int) -> None:
        if self.window is None or not _screened_out(self.get_trial(trial_id)):
            return
        self._screened.append(trial_id)
        while len(self._screened) > self.window:
            self._hidden.add(self._screened.popleft())


def _screened_out(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.PRUNED and not trial.intermediate_values


SamplerFactory = Callable[[int, bool], optuna.samplers.BaseSampler]
"""Builds a sampler from a seed and ``parallel`` (trials run concurrently)."""

SAMPLERS: Registry[SamplerFactory] = Registry("sampler")


@SAMPLERS.register("random")
def _random(seed: int, parallel: bool) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


@SAMPLERS.register("tpe")
def _tpe(seed: int, parallel: bool) -> optuna.samplers.BaseSampler:
    """Multivariate: nb201's edges interact, and so do a recipe's axes. (`group`, which models
    define-by-run branches apart, doubled the cost of an ask at 900 trials.) ``parallel``: TPE
    pretends the running trials scored badly (constant liar) rather than proposing the same
    point again."""
    with warnings.catch_warnings():  # multivariate and constant_liar are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=parallel)


@SAMPLERS.register("nsga2")
def _nsga2(seed: int, parallel: bool) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed)


@SAMPLERS.register("gp")
def _gp(seed: int, parallel: bool) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed)


def make_sampler(name: str, seed: int, parallel: bool = False) -> optuna.samplers.BaseSampler:
    """The sampler registered as ``name`` (an ``UnknownNameError`` lists the allowed ones)."""
    return SAMPLERS.get(name)(seed, parallel)


def make_study(
    sampler: str,
    directions: Sequence[str],
    seed: int,
    parallel: bool = False,
    storage: InMemoryStorage | None = None,
) -> optuna.Study:
    """A study in ``storage`` (a fresh in-memory one by default)."""
    return optuna.create_study(
        storage=storage, directions=list(directions), sampler=make_sampler(sampler, seed, parallel)
    )
