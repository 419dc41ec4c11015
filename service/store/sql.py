"""The store: everything a search learns, in SQL through SQLModel.

``Store(url)`` opens (and migrates to the newest schema with Alembic) a database: a SQLite file
by default (``sqlite:///path.db``; WAL journal, so readers never block the writer and several
processes may share it), or PostgreSQL (``postgresql+psycopg://user@host/db``) for searches
that span machines. Rows are in ``winnow.service.store.tables``; every write commits at once, so a
process killed at any point loses nothing that was written.

``SqlEquivalenceCache`` is the hashing issue's ``EquivalenceCache`` on the ``cache_entry``
table, shared by every search on the same task.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import bindparam, delete, event, insert, update
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine, select

from winnow.search_space.equivalence import EquivalenceCache
from winnow.search_space.trial import TrialResult
from winnow.service.store.tables import CacheEntryRow, EventRow, HashMemoRow, SearchRow, TrialRow
from winnow.service.store.urls import DEFAULT_URL

MIGRATIONS = Path(__file__).parent / "migrations"
HASH_MEMO_ENTRIES = 200_000  # functional hashes kept in memory (about 40 MB)


class StoreError(ValueError):
    """A database that cannot be opened or a search that is not in it (an input error)."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers (the dashboard, another search) work while a search writes; NORMAL
    sync is durable across process crashes in WAL mode (only a power cut may lose the last
    commits); the busy timeout makes concurrent writers wait rather than fail."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (a new database starts at nothing)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


class Store:
    """Searches, trials, cached results and events in one database; see the module docstring."""

    def __init__(self, url: str = DEFAULT_URL) -> None:
        self.url = url
        # per thread: the server runs several engines on one store, each with its own batches
        self._local = threading.local()
        # One writer at a time in this process, queued here: SQLite allows one anyway, and its
        # busy handler backs off in sleeps of up to 100 ms, which starved concurrent engines.
        self._write_lock = threading.RLock()
        self._hash_memo: dict[tuple[str, str], str] = {}  # see functional_hash
        self._memo_lock = threading.Lock()
        try:
            self.engine = create_db_engine(url)
            migrate(self.engine)
        except Exception as error:
            raise StoreError(f"cannot open the store at {url}: {error}") from error

    @property
    def _batch(self) -> Session | None:
        return getattr(self._local, "batch", None)

    @_batch.setter
    def _batch(self, session: Session | None) -> None:
        self._local.batch = session

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for reading, or the open batch's session inside :meth:`batch`."""
        if self._batch is not None:
            yield self._batch
            return
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A session whose writes are committed on exit, or at the end of the open batch."""
        with self._write_lock, self.session() as session:
            yield session
            if self._batch is None:
                session.commit()
            else:
                session.flush()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group writes into one transaction: one commit (one fsync) for a step of the engine,
        and all or nothing if the process dies inside it. Nested batches join the outer one."""
        if self._batch is not None:
            yield
            return
        with self._write_lock, Session(self.engine, expire_on_commit=False) as session:
            self._batch = session
            try:
                yield
                session.commit()
            finally:
                self._batch = None

    def close(self) -> None:
        self.engine.dispose()

    # --- searches -----------------------------------------------------------------------------

    def create_search(
        self,
        name: str,
        task_key: str,
        spec_json: str,
        status: str = "running",
        request_id: str | None = None,
    ) -> str:
        now = time.time()
        row = SearchRow(
            id=uuid.uuid4().hex[:12],
            name=name,
            task_key=task_key,
            spec_json=spec_json,
            status=status,
            created_at=now,
            updated_at=now,
            request_id=request_id,
        )
        self._save(row)
        return row.id

    def search_by_request(self, request_id: str) -> SearchRow | None:
        with self.session() as session:
            query = select(SearchRow).where(SearchRow.request_id == request_id)
            return session.exec(query).first()

    def searches_page(self, after: tuple[float, str] | None, limit: int) -> list[SearchRow]:
        """Newest first, starting after the (created_at, id) of the previous page's last row."""
        with self.session() as session:
            query = select(SearchRow)
            if after is not None:
                created_at, search_id = after
                query = query.where(
                    (SearchRow.created_at < created_at)
                    | ((SearchRow.created_at == created_at) & (SearchRow.id > search_id))
                )
            order = (SearchRow.created_at.desc(), SearchRow.id)
            return list(session.exec(query.order_by(*order).limit(limit)))

    def search(self, search_id: str) -> SearchRow:
        with self.session() as session:
            row = session.get(SearchRow, search_id)
        if row is None:
            raise StoreError(f"no search {search_id!r} in {self.url}")
        return row

    def searches(self) -> list[SearchRow]:
        with self.session() as session:
            return list(session.exec(select(SearchRow).order_by(SearchRow.created_at)))

    def set_search_status(self, search_id: str, status: str, error: str | None = None) -> None:
        with self.writing() as session:
            session.execute(
                update(SearchRow)
                .where(SearchRow.id == search_id)
                .values(status=status, error=error, updated_at=time.time())
            )

    # --- trials -------------------------------------------------------------------------------

    def add_trial(self, row: TrialRow) -> TrialRow:
        """Insert a row (its ``id`` is set)."""
        row.id = self.insert_trial(row.model_dump(exclude={"id"}))
        return row

    def insert_trial(self, columns: dict[str, Any]) -> int:
        """Insert a trial row given as its columns (all but ``id``); returns its id. The engine
        writes one per proposal, so this is a prepared Core insert on the session's connection:
        the ORM's unit of work, or an ``insert().values(...)`` built per row, cost 1.5 ms of the
        engine's overhead each (and building a ``TrialRow`` first 0.15 ms)."""
        with self.writing() as session:
            return session.connection().execute(_INSERT_TRIAL, columns).inserted_primary_key[0]

    def update_trial(self, row_id: int, **values: Any) -> None:
        """Set the given columns of one row (a prepared update, as :meth:`add_trial`)."""
        with self.writing() as session:
            session.connection().execute(_UPDATE_TRIAL, {"row_id": row_id, **values})

    def trials(self, search_id: str) -> list[TrialRow]:
        """Every row of a search, in the order they were written."""
        with self.session() as session:
            query = select(TrialRow).where(TrialRow.search_id == search_id).order_by(TrialRow.id)
            return list(session.exec(query))

    def trials_page(
        self, search_id: str, after_id: int, limit: int, **filters: Any
    ) -> list[TrialRow]:
        """Rows with ``id > after_id`` in id order, filtered by equal column values."""
        with self.session() as session:
            query = select(TrialRow).where(TrialRow.search_id == search_id, TrialRow.id > after_id)
            for column, value in filters.items():
                query = query.where(getattr(TrialRow, column) == value)
            return list(session.exec(query.order_by(TrialRow.id).limit(limit)))

    def requeue_running(self, search_id: str) -> int:
        """Rows left ``running`` by a process that died go back to ``queued``; returns how many."""
        with self.writing() as session:
            result = session.execute(
                update(TrialRow)
                .where(TrialRow.search_id == search_id, TrialRow.status == "running")
                .values(status="queued")
            )
        return result.rowcount

    # --- functional hashes by structural hash ---------------------------------------------------

    def functional_hash(self, structural: str, probe: str) -> str | None:
        """The functional hash memoised for a structural hash under ``probe`` settings, if any.
        Answers from memory what this store already read or wrote: a memoised hash never
        changes, and each search looks up hundreds of structures that the last one did."""
        functional = self._hash_memo.get((structural, probe))  # one step: threads share it
        if functional is not None:
            return functional
        with self.session() as session:  # a prepared select: see _FIND_ENTRY
            key = {"k_structural": structural, "k_probe": probe}
            functional = session.connection().execute(_FIND_MEMO, key).scalar_one_or_none()
        if functional is not None:
            self._remember_hash(structural, probe, functional)
        return functional

    def remember_functional_hash(self, structural: str, probe: str, functional: str) -> None:
        values = {"k_structural": structural, "k_probe": probe, "v_functional": functional}
        with self.writing() as session:
            _upsert(session, _SET_MEMO, _ADD_MEMO, values)
        self._remember_hash(structural, probe, functional)

    def _remember_hash(self, structural: str, probe: str, functional: str) -> None:
        with self._memo_lock:  # several engines (threads) share a store
            self._hash_memo[structural, probe] = functional
            if len(self._hash_memo) > HASH_MEMO_ENTRIES:
                self._hash_memo.pop(next(iter(self._hash_memo)))  # the oldest

    # --- events -------------------------------------------------------------------------------

    def add_event(self, search_id: str, kind: str, payload: dict[str, Any] | None = None) -> None:
        """Append an event (a prepared insert: the engine writes one or two per trial)."""
        values = {"search_id": search_id, "time": time.time(), "kind": kind}
        with self.writing() as session:
            session.connection().execute(
                _INSERT_EVENT, values | {"payload_json": json.dumps(payload or {})}
            )

    def events(self, search_id: str, after_id: int = 0) -> list[EventRow]:
        with self.session() as session:
            query = (
                select(EventRow)
                .where(EventRow.search_id == search_id, EventRow.id > after_id)
                .order_by(EventRow.id)
            )
            return list(session.exec(query))

    def _save(self, row: Any) -> Any:
        with self.writing() as session:
            session.add(row)
        return row


# Statements built once and run with parameters on the session's connection: the engine
# writes and looks up every proposal, and building expressions and ORM loads anew cost
# milliseconds of its overhead each.
_INSERT_TRIAL = insert(TrialRow.__table__)  # type: ignore[attr-defined]
# the SET clause is the parameters' other keys
_UPDATE_TRIAL = update(TrialRow.__table__).where(  # type: ignore[attr-defined]
    TrialRow.__table__.c.id == bindparam("row_id")  # type: ignore[attr-defined]
)
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
_MEMO_KEY = (HashMemoRow.structural_hash == bindparam("k_structural")) & (
    HashMemoRow.probe == bindparam("k_probe")
)
_FIND_MEMO = select(HashMemoRow.functional_hash).where(_MEMO_KEY)
_SET_MEMO = update(HashMemoRow).where(_MEMO_KEY).values(functional_hash=bindparam("v_functional"))
_ADD_MEMO = insert(HashMemoRow).values(
    structural_hash=bindparam("k_structural"),
    probe=bindparam("k_probe"),
    functional_hash=bindparam("v_functional"),
)
_INSERT_EVENT = insert(EventRow.__table__)  # type: ignore[attr-defined]


def _upsert(session: Session, set_row: Any, add_row: Any, values: dict[str, Any]) -> None:
    """Update the row with this key, or insert it when there is none (in the session's
    transaction; portable, where ``session.merge`` cost a select and an ORM flush)."""
    connection = session.connection()
    if connection.execute(set_row, values).rowcount == 0:
        connection.execute(add_row, values)


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
            _upsert(session, _SET_ENTRY, _ADD_ENTRY, values)
        self._remember(task, fidelity, hash_, result)
        self.stats.puts += 1
