"""The nb201 and mlp supernets through the registry, as the engine's trials use them: built from
a space, trained a tiny epoch with a checkpoint (a killed run resumes after the epoch it
reported), and a candidate of the family's joint space scored in [0, 1]."""

from __future__ import annotations

import random

import pytest
import torch

from winnow.search_space.builtin_spaces import BUILTIN_SPACES
from winnow.search_space.datasets import load_dataset
from winnow.search_space.params import RandomChooser
from winnow.search_space.spec import SearchSpace
from winnow.supernet.macro_training import batches
from winnow.supernet.mlp_entry import supernet_norm
from winnow.supernet.registry import SUPERNETS, TrainSettings

SETTINGS = TrainSettings(epochs=2, batch_size=32, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


class Killed(BaseException):  # as a kill -9 would: nothing after the report runs
    pass


def _nb201_space() -> SearchSpace:
    data = BUILTIN_SPACES["nb201-joint"]
    arch = {"family": "nb201", "channels": 4, "cells_per_stage": 1}
    return SearchSpace.model_validate(data | {"architecture": arch})


def _nb201_task() -> tuple[torch.Tensor, torch.Tensor]:
    """A tiny synthetic task whose label is the sign pattern of two channels' means."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 3, 8, 8, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()
    return x, y


def _digits(n: int = 320) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = load_dataset("digits")
    return dataset.normalize(dataset.train_x[:n]), dataset.train_y[:n].long()


def _draw(space: SearchSpace, keep=lambda c: True):
    rng = random.Random(0)
    return next(c for c in iter(lambda: space.suggest(RandomChooser(rng)), None) if keep(c))


def _train_killed_then_resumed(family, space, x, y, shape, classes, tmp_path):
    """Train with a kill in the first epoch's report, then again: the epochs each run saw."""
    entry, checkpoint = SUPERNETS.get(family), tmp_path / "s.ckpt"

    def die(epoch, *rest):
        raise Killed

    torch.manual_seed(0)
    with pytest.raises(Killed):
        entry.train(entry.build(space, classes, shape), space, x, y, SETTINGS, die, checkpoint)
    assert checkpoint.is_file()
    seen: list[int] = []
    torch.manual_seed(0)
    supernet = entry.build(space, classes, shape)
    steps = entry.train(
        supernet, space, x, y, SETTINGS, lambda e, *rest: seen.append(e), checkpoint
    )
    return supernet, steps, seen


def _score(family, supernet, candidate, x, y):
    return SUPERNETS.get(family).score(
        supernet.eval(), candidate, batches(x, y, 32), batches(x[:64], y[:64], 32), 2
    )


def test_nb201_trains_resumes_and_scores_a_joint_candidate(tmp_path):
    space, (x, y) = _nb201_space(), _nb201_task()
    supernet, steps, seen = _train_killed_then_resumed("nb201", space, x, y, (3, 8, 8), 4, tmp_path)
    assert seen == [2]  # epoch 1 is not trained again
    assert steps == SETTINGS.epochs * (len(y) // SETTINGS.batch_size)
    assert supernet.channels == 4 and supernet.cells_per_stage == 1
    candidate = _draw(space)
    assert 0 <= _score("nb201", supernet, candidate, x, y) <= 1


def test_mlp_trains_resumes_and_scores_another_norm_under_its_own(tmp_path):
    space, (x, y) = SearchSpace.model_validate(BUILTIN_SPACES["digits-joint"]), _digits()
    supernet, steps, seen = _train_killed_then_resumed("mlp", space, x, y, (1, 8, 8), 10, tmp_path)
    assert seen == [2] and steps == SETTINGS.epochs * (len(y) // SETTINGS.batch_size)
    assert supernet.normalization == "batchnorm"
    other = _draw(space, lambda c: c.normalization != "batchnorm")
    score = _score("mlp", supernet, other, x, y)
    assert 0 <= score <= 1
    # scored as its architecture x quantization under the supernet's norm
    same = other.model_copy(update={"normalization": "batchnorm"})
    assert score == _score("mlp", supernet, same, x, y)


def test_mlp_supernet_norm_prefers_batchnorm_else_the_first_sliceable_choice():
    def space(norm):
        return SearchSpace.model_validate(BUILTIN_SPACES["digits-joint"] | {"normalization": norm})

    assert supernet_norm(space(["layernorm", "batchnorm"])) == "batchnorm"
    assert supernet_norm(space(["evonorm_b0", "rmsnorm", "layernorm"])) == "rmsnorm"
    with pytest.raises(ValueError, match="no elastic-width form|none of the space's norms"):
        supernet_norm(space(["evonorm_b0", "evonorm_s0"]))


def test_the_mlp_supernet_covers_its_norm_and_quantization_axis():
    data = BUILTIN_SPACES["digits-joint"]
    covers = SUPERNETS.get("mlp").covers
    base = covers(SearchSpace.model_validate(data))
    fewer_bits = data | {"quantization": data["quantization"] | {"weight_bits": [8, 32]}}
    assert covers(SearchSpace.model_validate(fewer_bits)) != base
    other_norm = data | {"normalization": ["layernorm", "none"]}
    assert covers(SearchSpace.model_validate(other_norm))["normalization"] == "layernorm"


def test_nb201_scores_a_candidate_without_cells_per_stage_at_the_supernets_depth():
    space, (x, y) = _nb201_space(), _nb201_task()
    torch.manual_seed(0)
    supernet = SUPERNETS.get("nb201").build(space, 4, (3, 8, 8))  # one cell a stage
    candidate = _draw(space)
    bare = {k: v for k, v in candidate.architecture.items() if k != "cells_per_stage"}
    without = candidate.model_copy(update={"architecture": bare})
    # read at the family's default depth (5) the supernet of 1 would refuse it
    assert _score("nb201", supernet, without, x, y) == _score("nb201", supernet, candidate, x, y)
