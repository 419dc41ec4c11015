"""The store: everything a search learns, in SQL through SQLModel.

``Store(url)`` opens (and migrates to the newest schema with Alembic) a database: a SQLite file
by default (``sqlite:///path.db``; WAL journal, so readers never block the writer and several
processes may share it), or PostgreSQL (``postgresql+psycopg://user@host/db``) for searches
that span machines. Rows are in ``winnow.service.tables``; every write commits at once, so a
process killed at any point loses nothing that was written.

``SqlEquivalenceCache`` is the hashing issue's ``EquivalenceCache`` on the ``cache_entry``
table, shared by every search on the same task.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
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
from winnow.service.tables import CacheEntryRow, EventRow, HashMemoRow, SearchRow, TrialRow

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_URL = "sqlite:///runs/winnow.db"


class StoreError(ValueError):
    """A database that cannot be opened or a search that is not in it (an input error)."""


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).expanduser()}"


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
        """Insert a row (its ``id`` is set); a Core insert, as the engine writes one per
        proposal and the ORM's unit of work cost about a millisecond each."""
        values = row.model_dump(exclude={"id"})
        with self.writing() as session:
            result = session.execute(insert(TrialRow).values(**values))
            row.id = result.inserted_primary_key[0]
        return row

    def update_trial(self, row_id: int, **values: Any) -> None:
        with self.writing() as session:
            session.execute(update(TrialRow).where(TrialRow.id == row_id).values(**values))

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
        with self.session() as session:  # a prepared select: see _FIND_ENTRY
            found = session.execute(_FIND_MEMO, {"k_structural": structural, "k_probe": probe})
            return found.scalar_one_or_none()

    def remember_functional_hash(self, structural: str, probe: str, functional: str) -> None:
        with self.writing() as session:
            session.merge(
                HashMemoRow(structural_hash=structural, probe=probe, functional_hash=functional)
            )

    # --- events -------------------------------------------------------------------------------

    def add_event(self, search_id: str, kind: str, payload: dict[str, Any] | None = None) -> None:
        row = EventRow(
            search_id=search_id, time=time.time(), kind=kind, payload_json=json.dumps(payload or {})
        )
        self._save(row)

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


# Statements built once, run with parameters: the engine looks up every proposal (mostly
# misses), and building the expressions and ORM loads anew cost ~2 ms of its overhead each.
_ENTRY_KEY = (
    (CacheEntryRow.task == bindparam("k_task"))
    & (CacheEntryRow.fidelity == bindparam("k_fidelity"))
    & (CacheEntryRow.hash == bindparam("k_hash"))
)
_FIND_ENTRY = select(CacheEntryRow.result_json, CacheEntryRow.uses).where(_ENTRY_KEY)
_USE_ENTRY = update(CacheEntryRow).where(_ENTRY_KEY).values(uses=CacheEntryRow.uses + 1)
_FORGET_ENTRY = delete(CacheEntryRow).where(_ENTRY_KEY)
_FIND_MEMO = select(HashMemoRow.functional_hash).where(
    (HashMemoRow.structural_hash == bindparam("k_structural"))
    & (HashMemoRow.probe == bindparam("k_probe"))
)


class SqlEquivalenceCache(EquivalenceCache):
    """The equivalence cache on the store's ``cache_entry`` table (see ``EquivalenceCache``).

    Hit/miss statistics are this object's (this process's); reuse counts are in the table, so
    the forgetful rule sees the reuses of every search that shares the store."""

    def __init__(
        self,
        store: Store,
        forget_after: int | None = None,
        forget_probability: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(forget_after, forget_probability, seed)
        self.store = store

    def get(self, task: str, fidelity: str, hash_: str) -> TrialResult | None:
        key = {"k_task": task, "k_fidelity": fidelity, "k_hash": hash_}
        with self.store.writing() as session:
            found = session.execute(_FIND_ENTRY, key).first()
            if found is None:
                self.stats.misses += 1
                return None
            if self._forget_now(found.uses):
                session.execute(_FORGET_ENTRY, key)
                self.stats.forgotten += 1
                self.stats.misses += 1
                return None
            session.execute(_USE_ENTRY, key)
        self.stats.hits += 1
        return TrialResult.from_dict(json.loads(found.result_json))

    def put(self, task: str, fidelity: str, hash_: str, result: TrialResult) -> None:
        row = CacheEntryRow(
            task=task,
            fidelity=fidelity,
            hash=hash_,
            result_json=json.dumps(result.to_dict()),
            uses=0,
            created_at=time.time(),
        )
        with self.store.writing() as session:
            session.merge(row)  # insert, or replace a forgotten entry's result
        self.stats.puts += 1
