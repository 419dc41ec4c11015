"""``SqlEquivalenceCache``: the hashing issue's ``EquivalenceCache`` on the store's
``cache_entry`` table, shared by every search on the same task."""

from __future__ import annotations

import json
import time
from collections import OrderedDict

from sqlalchemy import bindparam, delete, insert, select, update

from winnow.search_space.equivalence import EquivalenceCache
from winnow.search_space.trial import TrialResult
from winnow.service.store.sql import Store, upsert
from winnow.service.store.tables import CacheEntryRow

# Prepared statements, as the store's own (see sql.py): the engine looks up every proposal.
_ENTRY_KEY = (
    (CacheEntryRow.task == bindparam("k_task"))
    & (CacheEntryRow.fidelity == bindparam("k_fidelity"))
    & (CacheEntryRow.hash == bindparam("k_hash"))
)
_FIND_ENTRY = select(CacheEntryRow.result_json, CacheEntryRow.uses).where(_ENTRY_KEY)
_USE_ENTRY = update(CacheEntryRow).where(_ENTRY_KEY).values(uses=CacheEntryRow.uses + 1)
_FORGET_ENTRY = delete(CacheEntryRow).where(_ENTRY_KEY)
_SET_ENTRY = (
    update(CacheEntryRow)
    .where(_ENTRY_KEY)
    .values(result_json=bindparam("v_result"), uses=0, created_at=bindparam("v_created"))
)
_ADD_ENTRY = insert(CacheEntryRow).values(
    task=bindparam("k_task"),
    fidelity=bindparam("k_fidelity"),
    hash=bindparam("k_hash"),
    result_json=bindparam("v_result"),
    uses=0,
    created_at=bindparam("v_created"),
)


class SqlEquivalenceCache(EquivalenceCache):
    """The equivalence cache on the store's ``cache_entry`` table (see ``EquivalenceCache``).

    Hit/miss statistics are this object's (this process's); reuse counts are in the table, so
    the forgetful rule sees the reuses of every search that shares the store.

    Without forgetting, an entry this object has read or written is answered from memory the
    next time (up to ``MEMO_ENTRIES``, least recently used dropped): a stored result never
    changes then, and a search re-proposes the same candidates often (TPE proposed 890 times
    for 499 different nb201 cells in one search). Such repeat hits are not counted in the
    table's ``uses``, which only the forgetful rule reads."""

    MEMO_ENTRIES = 50_000

    def __init__(
        self,
        store: Store,
        forget_after: int | None = None,
        forget_probability: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(forget_after, forget_probability, seed)
        self.store = store
        self._memo: OrderedDict[tuple[str, str, str], TrialResult] | None = (
            OrderedDict() if forget_after is None and forget_probability == 0 else None
        )

    def get(self, task: str, fidelity: str, hash_: str) -> TrialResult | None:
        if self._memo is not None and (task, fidelity, hash_) in self._memo:
            self._memo.move_to_end((task, fidelity, hash_))
            self.stats.hits += 1
            return self._memo[task, fidelity, hash_]
        result = self._get_stored(task, fidelity, hash_)
        if result is not None:
            self._remember(task, fidelity, hash_, result)
        return result

    def _remember(self, task: str, fidelity: str, hash_: str, result: TrialResult) -> None:
        if self._memo is not None:
            self._memo[task, fidelity, hash_] = result
            if len(self._memo) > self.MEMO_ENTRIES:
                self._memo.popitem(last=False)

    def _get_stored(self, task: str, fidelity: str, hash_: str) -> TrialResult | None:
        key = {"k_task": task, "k_fidelity": fidelity, "k_hash": hash_}
        with self.store.writing() as session:
            connection = session.connection()
            found = connection.execute(_FIND_ENTRY, key).first()
            if found is None:
                self.stats.misses += 1
                return None
            if self._forget_now(found.uses):
                connection.execute(_FORGET_ENTRY, key)
                self.stats.forgotten += 1
                self.stats.misses += 1
                return None
            connection.execute(_USE_ENTRY, key)
        self.stats.hits += 1
        return TrialResult.from_dict(json.loads(found.result_json))

    def put(self, task: str, fidelity: str, hash_: str, result: TrialResult) -> None:
        values = {"k_task": task, "k_fidelity": fidelity, "k_hash": hash_}
        values |= {"v_result": json.dumps(result.to_dict()), "v_created": time.time()}
        with self.store.writing() as session:  # insert, or replace a forgotten entry's result
            upsert(session, _SET_ENTRY, _ADD_ENTRY, values)
        self._remember(task, fidelity, hash_, result)
        self.stats.puts += 1
