"""The Ray Tune bridge, worker side: a winnow space as a Tune ``param_space`` and a trainable
that trains a candidate and reports per epoch, so that Tune's schedulers (ASHA, PBT's stopping)
work on winnow's recipes::

    tuner = tune.Tuner(
        tune.with_parameters(train_candidate, dataset="digits", max_epochs=9),
        param_space=to_param_space(space, seed=0),
        tune_config=tune.TuneConfig(metric="accuracy", mode="max", num_samples=20,
                                    scheduler=ASHAScheduler(max_t=9, grace_period=1)),
    )

To propose through winnow's cascade (hashing and proxy screening) instead of Tune's random
variants, pass ``winnow.service.engine.tune_searcher.WinnowSearcher`` as the ``search_alg``.
"""

from __future__ import annotations

import random
from typing import Any

from ray import tune

from winnow.search_space.accelerate import prepare_model
from winnow.search_space.candidate import Candidate
from winnow.search_space.datasets import load_dataset
from winnow.search_space.params import RandomChooser
from winnow.search_space.spec import SearchSpace
from winnow.search_space.training import (
    NonFiniteLossError,
    resolve_device,
    seed_everything,
    static_metrics,
    test_accuracy,
    train,
)
from winnow.search_space.trial import Fidelity


def to_param_space(space: SearchSpace, seed: int | None = None) -> dict[str, Any]:
    """``{"candidate": tune.sample_from(...)}``: each Tune variant is a candidate drawn by
    winnow's own sampler, as JSON. Tune's flat distributions cannot say "this range only for
    Lion" or "these bits only for live layers"; winnow's sampler keeps every draw valid."""
    rng = random.Random(seed)

    def draw(_: Any) -> dict[str, Any]:
        return space.suggest(RandomChooser(rng)).model_dump(mode="json")

    return {"candidate": tune.sample_from(draw)}


def train_candidate(
    config: dict[str, Any],
    dataset: str = "digits",
    max_epochs: int = 9,
    seed: int = 0,
    device: str = "auto",
) -> None:
    """A Tune function trainable: trains ``config["candidate"]`` for ``max_epochs`` (its
    schedule spans them all, so a trial stopped early by a scheduler saw the same learning
    rates as a full one) and reports ``accuracy``, ``loss``, ``epoch`` and the static costs
    after every epoch. A diverging candidate reports accuracy 0 and stops."""
    candidate = Candidate.model_validate(config["candidate"])
    torch_device = resolve_device(device)
    generator = seed_everything(seed)
    data = load_dataset(dataset)
    model = prepare_model(candidate.build_model(data.num_classes, data.input_shape), torch_device)
    costs = static_metrics(model, data.input_shape)

    def report(epoch: int, _epochs: int, loss: float, _seconds: float) -> None:
        accuracy = test_accuracy(model, data, torch_device)
        tune.report({"accuracy": accuracy, "loss": loss, "epoch": epoch, **costs})

    try:
        train(model, candidate, data, Fidelity(epochs=max_epochs), torch_device, generator, report)
    except NonFiniteLossError as error:
        tune.report({"accuracy": 0.0, "loss": float("nan"), "epoch": 0, "error": str(error)})
