"""The store: everything a search learns, in SQL through SQLModel.

``Store(url)`` opens (and migrates to the newest schema with Alembic) a database: a SQLite file
by default (``sqlite:///path.db``; WAL journal, so readers never block the writer and several
processes may share it), or PostgreSQL (``postgresql+psycopg://user@host/db``) for searches
that span machines. Every write commits at once, so a process killed at any point loses
nothing that was written.

The tables (``tables``) never leave this package: reads return ``winnow.records`` values and
writes take them, converted in one place (``convert``). The dashboard's aggregate and paged
reads are in ``reads``; the equivalence cache on the same database is in ``cache``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import bindparam, delete, event, insert, select, update
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

from winnow.records import EventRecord, SearchRecord, SearchStatus, Status, TrialRecord
from winnow.service.store.artifacts import Artifacts, default_root
from winnow.service.store.convert import (
    EVENTS,
    SEARCHES,
    TRIALS,
    trial_columns,
    trial_update,
)
from winnow.service.store.tables import EventRow, HashMemoRow, SearchRow, SupernetRow, TrialRow
from winnow.service.store.urls import DEFAULT_URL


@dataclass(frozen=True)
class SupernetRecord:
    key: str
    task: str
    family: str
    path: str  # the trained weights (``Artifacts.supernet``)
    metrics: dict[str, float]
    created_at: float  # when it was recorded: tells a retrained file from the one before


log = logging.getLogger("winnow.store")
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
            _warn_if_new_and_relative(Path(parsed.database), url)
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _warn_if_new_and_relative(path: Path, url: str) -> None:
    """``sqlite:///tmp/x.db`` means ``./tmp/x.db``: a new store at a relative path is often a
    slash short of the absolute one meant, so creating one says where it goes."""
    if not path.is_absolute() and not path.exists():
        log.warning(
            "creating a new SQLite store at %s (relative to %s; %s has three slashes, "
            "sqlite:////%s with four is the absolute path)",
            path.absolute(),
            Path.cwd(),
            url,
            path,
        )


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (a new database starts at nothing)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


class Store:
    """Searches, trials, cached results and events in one database; see the module docstring.

    ``artifacts``: the folder of kept trial weights (``artifacts.Artifacts``; default: beside a
    SQLite file, none for PostgreSQL); ``self.artifacts`` is None when weights are kept nowhere.
    """

    def __init__(self, url: str = DEFAULT_URL, artifacts: Path | None = None) -> None:
        self.url = url
        root = artifacts if artifacts is not None else default_root(url)
        self.artifacts = Artifacts(root) if root is not None else None
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

    # --- searches ---------------------------------------------------------------------------------

    def create_search(
        self,
        name: str,
        task_key: str,
        spec_json: str,
        status: SearchStatus = SearchStatus.RUNNING,
        request_id: str | None = None,
    ) -> str:
        now = time.time()
        search_id = uuid.uuid4().hex[:12]
        record = SearchRecord(
            search_id, name, task_key, spec_json, status, None, now, now, request_id
        )
        with self.writing() as session:
            session.execute(insert(_SEARCH), SEARCHES.row(record, with_id=True))
        return search_id

    def search_by_request(self, request_id: str) -> SearchRecord | None:
        found = self._searches(select(_SEARCH).where(_SEARCH.c.request_id == request_id))
        return found[0] if found else None

    def searches_page(self, after: tuple[float, str] | None, limit: int) -> list[SearchRecord]:
        """Newest first, starting after the (created_at, id) of the previous page's last row."""
        query, c = select(_SEARCH), _SEARCH.c
        if after is not None:
            created_at, search_id = after
            query = query.where(
                (c.created_at < created_at) | ((c.created_at == created_at) & (c.id > search_id))
            )
        return self._searches(query.order_by(c.created_at.desc(), c.id).limit(limit))

    def search(self, search_id: str) -> SearchRecord:
        found = self._searches(select(_SEARCH).where(_SEARCH.c.id == search_id))
        if not found:
            raise StoreError(f"no search {search_id!r} in {self.url}")
        return found[0]

    def searches(self) -> list[SearchRecord]:
        return self._searches(select(_SEARCH).order_by(_SEARCH.c.created_at))

    def _searches(self, query: Any) -> list[SearchRecord]:
        with self.session() as session:
            return SEARCHES.records(session.execute(query))

    def set_search_status(
        self, search_id: str, status: SearchStatus, error: str | None = None
    ) -> None:
        values = SEARCHES.columns(status=status, error=error, updated_at=time.time())
        with self.writing() as session:
            session.execute(update(_SEARCH).where(_SEARCH.c.id == search_id).values(values))

    # --- trials -------------------------------------------------------------------------------

    def add_trial(self, record: TrialRecord) -> int:
        """Insert a trial (its ``id`` is ignored); returns the new row's id. The engine writes
        one per proposal, so this is a prepared Core insert on the session's connection: the
        ORM's unit of work, or an ``insert().values(...)`` built per row, cost 1.5 ms of the
        engine's overhead each (and building a ``TrialRow`` first 0.15 ms)."""
        with self.writing() as session:
            result = session.connection().execute(_INSERT_TRIAL, trial_columns(record))
            return result.inserted_primary_key[0]

    def add_trials(self, records: Iterable[TrialRecord]) -> None:
        """Insert many trials in one statement (seeded and copied searches)."""
        rows = [trial_columns(record) for record in records]
        if rows:
            with self.writing() as session:
                session.execute(insert(_TRIAL), rows)

    def update_trial(self, row_id: int, **fields: Any) -> None:
        """Set the given fields of one trial (record field names: ``metrics={...}``); a
        prepared update, as :meth:`add_trial`."""
        with self.writing() as session:
            session.connection().execute(
                _UPDATE_TRIAL, {"row_id": row_id, **trial_update(**fields)}
            )

    def trials(self, search_id: str) -> list[TrialRecord]:
        """Every trial of a search, in the order they were written."""
        return self._trials(select(_TRIAL).where(_TRIAL.c.search_id == search_id))

    def trials_page(
        self, search_id: str, after_id: int, limit: int, **filters: Any
    ) -> list[TrialRecord]:
        """Trials with ``id > after_id`` in id order, filtered by equal field values."""
        query = select(_TRIAL).where(_TRIAL.c.search_id == search_id, _TRIAL.c.id > after_id)
        for name, value in filters.items():
            query = query.where(_TRIAL.c[TRIALS.column(name)] == value)
        return self._trials(query, limit)

    def _trials(self, query: Any, limit: int | None = None) -> list[TrialRecord]:
        """Read as Core rows, not ORM objects: a record is built from each anyway, and a
        search's thousands of ORM rows took longer to load than to convert."""
        with self.session() as session:
            return TRIALS.records(session.execute(query.order_by(_TRIAL.c.id).limit(limit)))

    def requeue_running(self, search_id: str) -> int:
        """Rows left ``running`` by a process that died go back to ``queued``; returns how many."""
        c = _TRIAL.c
        with self.writing() as session:
            result = session.execute(
                update(_TRIAL)
                .where(c.search_id == search_id, c.status == Status.RUNNING.value)
                .values(status=Status.QUEUED.value)
            )
        return result.rowcount

    def copy_search(self, search: SearchRecord, trials: list[TrialRecord]) -> None:
        """Replace a search and its trials by a copy (the dashboard's mirror of a server's).
        Trials keep their ids, and the times a trial was first copied and first copied
        finished: the copy's own times are the time of copying, as the API sends none."""
        of_search = _TRIAL.c.search_id == search.id
        values = SEARCHES.row(search, with_id=True)
        stamps = select(_TRIAL.c.id, _TRIAL.c.created_at, _TRIAL.c.finished_at).where(of_search)
        with self.batch(), self.writing() as session:
            times = {id_: (created, finished) for id_, created, finished in session.execute(stamps)}
            updated = session.execute(
                update(_SEARCH).where(_SEARCH.c.id == search.id).values(values)
            )
            if updated.rowcount == 0:
                session.execute(insert(_SEARCH).values(values))
            session.execute(delete(_TRIAL).where(of_search))
            if trials:
                session.execute(insert(_TRIAL), [_first_seen(t, times) for t in trials])

    def forget_searches_except(self, kept: set[str]) -> None:
        """Delete every other search, its trials and events (a mirror's searches that the
        server no longer lists)."""
        with self.writing() as session:
            session.execute(delete(_EVENT).where(_EVENT.c.search_id.not_in(kept)))
            session.execute(delete(_TRIAL).where(_TRIAL.c.search_id.not_in(kept)))
            session.execute(delete(_SEARCH).where(_SEARCH.c.id.not_in(kept)))

    # --- functional hashes by structural hash ---------------------------------------------------

    def functional_hash(self, structural: str, probe: str) -> str | None:
        """The functional hash memoised for a structural hash under ``probe`` settings, if any.
        Answers from memory what this store already read or wrote: a memoised hash never
        changes, and each search looks up hundreds of structures that the last one did."""
        functional = self._hash_memo.get((structural, probe))  # one step: threads share it
        if functional is not None:
            return functional
        with self.session() as session:  # a prepared select
            key = {"k_structural": structural, "k_probe": probe}
            functional = session.connection().execute(_FIND_MEMO, key).scalar_one_or_none()
        if functional is not None:
            self._remember_hash(structural, probe, functional)
        return functional

    def remember_functional_hash(self, structural: str, probe: str, functional: str) -> None:
        values = {"k_structural": structural, "k_probe": probe, "v_functional": functional}
        with self.writing() as session:
            upsert(session, _SET_MEMO, _ADD_MEMO, values)
        self._remember_hash(structural, probe, functional)

    def _remember_hash(self, structural: str, probe: str, functional: str) -> None:
        with self._memo_lock:  # several engines (threads) share a store
            self._hash_memo[structural, probe] = functional
            if len(self._hash_memo) > HASH_MEMO_ENTRIES:
                self._hash_memo.pop(next(iter(self._hash_memo)))  # the oldest

    # --- trained supernets ---------------------------------------------------------------------

    def supernet(self, key: str) -> SupernetRecord | None:
        """The trained supernet recorded under ``key`` whose file still exists, if any."""
        with self.session() as session:
            row = session.get(SupernetRow, key)
            if row is None or not Path(row.path).is_file():
                return None
            return SupernetRecord(
                row.key,
                row.task,
                row.family,
                row.path,
                json.loads(row.metrics_json),
                row.created_at,
            )

    def remember_supernet(
        self,
        key: str,
        task: str,
        family: str,
        settings: dict[str, Any],
        path: str,
        metrics: dict[str, float],
    ) -> None:
        """Record a trained supernet (replacing a record whose file was lost)."""
        with self.writing() as session:
            row = session.get(SupernetRow, key) or SupernetRow(
                key=key,
                created_at=time.time(),
                task=task,
                family=family,
                settings_json="{}",
                path=path,
            )
            row.task, row.family, row.path = task, family, path
            row.settings_json = json.dumps(settings, sort_keys=True)
            row.metrics_json, row.created_at = json.dumps(metrics), time.time()
            session.add(row)

    # --- events -------------------------------------------------------------------------------

    def add_event(self, search_id: str, kind: str, payload: dict[str, Any] | None = None) -> None:
        """Append an event (a prepared insert: the engine writes one or two per trial)."""
        record = EventRecord(None, search_id, time.time(), kind, payload or {})
        with self.writing() as session:
            session.connection().execute(_INSERT_EVENT, EVENTS.row(record))

    def add_events(self, records: Iterable[EventRecord]) -> None:
        """Append many events with their own times, in one statement (seeded searches)."""
        rows = [EVENTS.row(record) for record in records]
        if rows:
            with self.writing() as session:
                session.execute(insert(_EVENT), rows)

    def events(self, search_id: str, after_id: int = 0) -> list[EventRecord]:
        c = _EVENT.c
        query = select(_EVENT).where(c.search_id == search_id, c.id > after_id).order_by(c.id)
        with self.session() as session:
            return EVENTS.records(session.execute(query))


def _first_seen(record: TrialRecord, times: dict[int, tuple[float, float | None]]) -> dict:
    """A copied trial's columns with the times it was first copied (and first copied finished)
    when an earlier copy had it (see :meth:`Store.copy_search`)."""
    columns = TRIALS.row(record, with_id=True)
    if record.id in times:
        created, finished = times[record.id]
        columns["created_at"] = created
        if record.finished_at is not None:
            columns["finished_at"] = finished or record.finished_at
    return columns


# The tables as Core tables: reads build records from Core rows, writes take column dicts.
_SEARCH = SearchRow.__table__  # type: ignore[attr-defined]
_TRIAL = TrialRow.__table__  # type: ignore[attr-defined]
_EVENT = EventRow.__table__  # type: ignore[attr-defined]

# Statements built once and run with parameters on the session's connection: the engine
# writes and looks up every proposal, and building expressions and ORM loads anew cost
# milliseconds of its overhead each.
_INSERT_TRIAL = insert(_TRIAL)
_UPDATE_TRIAL = update(_TRIAL).where(_TRIAL.c.id == bindparam("row_id"))  # SET: the other keys
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
_INSERT_EVENT = insert(_EVENT)


def upsert(session: Session, set_row: Any, add_row: Any, values: dict[str, Any]) -> None:
    """Update the row with this key, or insert it when there is none (in the session's
    transaction; portable, where ``session.merge`` cost a select and an ORM flush)."""
    connection = session.connection()
    if connection.execute(set_row, values).rowcount == 0:
        connection.execute(add_row, values)
