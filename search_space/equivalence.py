"""The equivalence cache: results stored by (task key, fidelity, hash) and reused.

A search asks the cache before it evaluates a candidate; a hit (the same function, by
structural or functional hash, on the same task at the same fidelity) reuses the stored result.
The "forgetful" option (Gillard, Real et al.) re-evaluates an entry after it has been reused
``forget_after`` times, or on a hit with probability ``forget_probability``, so that one noisy
evaluation is not trusted forever: the hit is reported as a miss, the entry is dropped, and the
caller's fresh result is stored in its place.

``EquivalenceCache`` is the interface; ``InMemoryEquivalenceCache`` implements it here and the
SQL store implements it for searches that share a database.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass

from winnow.search_space.trial import TrialResult


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    puts: int = 0
    forgotten: int = 0

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


@dataclass
class _Entry:
    result: TrialResult
    uses: int = 0


class EquivalenceCache(ABC):
    """Results by (task key, fidelity, hash), with hit/miss statistics."""

    def __init__(
        self, forget_after: int | None = None, forget_probability: float = 0.0, seed: int = 0
    ) -> None:
        if forget_after is not None and forget_after < 1:
            raise ValueError("forget_after must be at least 1 (reuses before re-evaluating)")
        if not 0.0 <= forget_probability <= 1.0:
            raise ValueError("forget_probability must be in [0, 1]")
        self.forget_after = forget_after
        self.forget_probability = forget_probability
        self.stats = CacheStats()
        self._rng = random.Random(seed)

    def _forget_now(self, uses: int) -> bool:
        """Whether a hit on an entry reused ``uses`` times so far should be re-evaluated."""
        if self.forget_after is not None and uses >= self.forget_after:
            return True
        return self.forget_probability > 0 and self._rng.random() < self.forget_probability

    @abstractmethod
    def get(self, task: str, fidelity: str, hash_: str) -> TrialResult | None: ...

    @abstractmethod
    def put(self, task: str, fidelity: str, hash_: str, result: TrialResult) -> None: ...


class InMemoryEquivalenceCache(EquivalenceCache):
    """A dict in this process; see the module docstring."""

    def __init__(
        self, forget_after: int | None = None, forget_probability: float = 0.0, seed: int = 0
    ) -> None:
        super().__init__(forget_after, forget_probability, seed)
        self._entries: dict[tuple[str, str, str], _Entry] = {}

    def get(self, task: str, fidelity: str, hash_: str) -> TrialResult | None:
        entry = self._entries.get((task, fidelity, hash_))
        if entry is None:
            self.stats.misses += 1
            return None
        if self._forget_now(entry.uses):
            del self._entries[(task, fidelity, hash_)]
            self.stats.forgotten += 1
            self.stats.misses += 1
            return None
        entry.uses += 1
        self.stats.hits += 1
        return entry.result

    def put(self, task: str, fidelity: str, hash_: str, result: TrialResult) -> None:
        self._entries[(task, fidelity, hash_)] = _Entry(result)
        self.stats.puts += 1

    def __len__(self) -> int:
        return len(self._entries)
