"""The in-memory equivalence cache: lookups by (task, fidelity, hash), statistics, forgetting."""

from __future__ import annotations

import pytest

from winnow.search_space.equivalence import InMemoryEquivalenceCache
from winnow.search_space.trial import Status, TrialResult


def result(accuracy: float) -> TrialResult:
    return TrialResult(Status.OK, {"accuracy": accuracy})


def test_hits_and_misses_are_keyed_by_task_fidelity_and_hash():
    cache = InMemoryEquivalenceCache()
    cache.put("cifar10", "train[1 epochs]", "abc", result(0.5))
    assert cache.get("cifar10", "train[1 epochs]", "abc").metrics["accuracy"] == 0.5
    assert cache.get("cifar10", "train[3 epochs]", "abc") is None
    assert cache.get("digits", "train[1 epochs]", "abc") is None
    assert cache.get("cifar10", "train[1 epochs]", "abd") is None
    assert (cache.stats.hits, cache.stats.misses, cache.stats.puts) == (1, 3, 1)
    assert cache.stats.hit_rate == pytest.approx(0.25)


def test_forgetful_after_k_reuses_re_evaluates_then_serves_the_new_result():
    cache = InMemoryEquivalenceCache(forget_after=2)
    cache.put("t", "f", "h", result(0.5))
    assert cache.get("t", "f", "h") is not None
    assert cache.get("t", "f", "h") is not None
    assert cache.get("t", "f", "h") is None  # third reuse: evaluate again
    assert cache.stats.forgotten == 1 and len(cache) == 0
    cache.put("t", "f", "h", result(0.7))
    assert cache.get("t", "f", "h").metrics["accuracy"] == 0.7


def test_forgetful_with_probability_is_seeded():
    def forgotten(seed: int) -> int:
        cache = InMemoryEquivalenceCache(forget_probability=0.3, seed=seed)
        for _ in range(200):
            if cache.get("t", "f", "h") is None:
                cache.put("t", "f", "h", result(0.1))
        return cache.stats.forgotten

    assert forgotten(0) == forgotten(0)
    assert 30 < forgotten(0) < 90  # about 0.3 of ~200 hits


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        InMemoryEquivalenceCache(forget_after=0)
    with pytest.raises(ValueError):
        InMemoryEquivalenceCache(forget_probability=1.5)
