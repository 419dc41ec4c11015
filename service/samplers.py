"""Optuna samplers by strategy name, and the in-memory study the engine asks and tells.

The study is never the source of truth: the store is, and the engine rebuilds the study from
it after a restart (``Engine.resume``)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_sampler(name: str, seed: int, parallel: bool = False) -> optuna.samplers.BaseSampler:
    """The sampler of a strategy. ``parallel``: trials run concurrently, so TPE pretends the
    running ones scored badly (constant liar) rather than proposing the same point again."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        # Multivariate: nb201's edges interact, and so do a recipe's axes. (`group`, which
        # models define-by-run branches apart, doubled the cost of an ask at 900 trials.)
        with warnings.catch_warnings():  # multivariate and constant_liar are "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=parallel)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; allowed: random, tpe, nsga2, gp")


def make_study(
    sampler: str, directions: Sequence[str], seed: int, parallel: bool = False
) -> optuna.Study:
    return optuna.create_study(
        directions=list(directions), sampler=make_sampler(sampler, seed, parallel)
    )
