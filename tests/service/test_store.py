"""The store on SQLite, and on PostgreSQL when ``WINNOW_TEST_POSTGRES_URL`` is set (CI starts a
real server with scripts/start-postgres.sh)."""

from __future__ import annotations

import os
import uuid
from dataclasses import replace

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from winnow.records import TrialRecord
from winnow.search_space.trial import Status, TrialResult
from winnow.service.store import SqlEquivalenceCache, Store, StoreError, sqlite_url
from winnow.service.store.tables import metadata

POSTGRES_URL = os.environ.get("WINNOW_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store(sqlite_url(tmp_path / "store.db"))
    elif not POSTGRES_URL:
        pytest.skip("no PostgreSQL server (set WINNOW_TEST_POSTGRES_URL; CI does)")
    else:
        s = Store(POSTGRES_URL)
    yield s
    s.close()


def _row(search_id: str, number: int, status: str = "running", **extra) -> TrialRecord:
    return TrialRecord(
        id=None,
        search_id=search_id,
        number=number,
        stage="train",
        epochs=1,
        rung=0,
        status=status,
        candidate="{}",
        candidate_key="k",
        structural_hash="s",
        created_at=0.0,
        **extra,
    )


def test_migrations_build_exactly_the_declared_schema(store):
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
    assert diff == []


def test_sqlite_runs_in_wal_mode(tmp_path):
    store = Store(sqlite_url(tmp_path / "wal.db"))
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_searches_trials_events_round_trip(store):
    name = f"s-{uuid.uuid4().hex[:6]}"
    search_id = store.create_search(name, "task", '{"x": 1}')
    row_id = store.add_trial(_row(search_id, 0))
    store.update_trial(row_id, status="ok", metrics={"accuracy": 0.5})
    store.add_trial(_row(search_id, 1))
    store.add_event(search_id, "trial", {"number": 0})
    assert [r.status for r in store.trials(search_id)] == ["ok", "running"]
    assert store.trials(search_id)[0].metrics == {"accuracy": 0.5}
    assert store.requeue_running(search_id) == 1
    assert [r.status for r in store.trials(search_id)] == ["ok", "queued"]
    assert [e.kind for e in store.events(search_id)] == ["trial"]
    store.set_search_status(search_id, "finished")
    assert store.search(search_id).status == "finished"
    assert name in [s.name for s in store.searches()]
    with pytest.raises(StoreError, match="no search"):
        store.search("missing")


def test_a_failed_batch_writes_nothing(store):
    search_id = store.create_search("b", "task", "{}")
    with pytest.raises(RuntimeError), store.batch():
        store.add_trial(_row(search_id, 0))
        store.add_event(search_id, "trial")
        raise RuntimeError("the process dies here")
    assert store.trials(search_id) == [] and store.events(search_id) == []


def test_sql_equivalence_cache_is_shared_and_forgetful(store):
    task = f"task-{uuid.uuid4().hex[:6]}"
    writer, reader = SqlEquivalenceCache(store), SqlEquivalenceCache(store, forget_after=2)
    assert reader.get(task, "train[1 epochs]", "h") is None
    writer.put(task, "train[1 epochs]", "h", TrialResult(Status.OK, {"accuracy": 0.75}))
    hit = reader.get(task, "train[1 epochs]", "h")
    assert hit is not None and hit.metrics == {"accuracy": 0.75}
    assert reader.get(task, "train[3 epochs]", "h") is None  # another fidelity
    assert reader.get(task, "train[1 epochs]", "h") is not None  # second reuse
    assert reader.get(task, "train[1 epochs]", "h") is None  # forgotten after 2 reuses
    assert (reader.stats.hits, reader.stats.forgotten) == (2, 1)


def test_functional_hash_memo(store):
    structural = uuid.uuid4().hex
    assert store.functional_hash(structural, "p") is None
    store.remember_functional_hash(structural, "p", "f1")
    store.remember_functional_hash(structural, "p", "f1")  # idempotent
    assert store.functional_hash(structural, "p") == "f1"
    assert store.functional_hash(structural, "other probe") is None


def test_update_trial_sets_only_the_given_columns(store):
    search_id = store.create_search("u", "task", "{}")
    first = store.add_trial(_row(search_id, 0, error="kept"))
    second = store.add_trial(_row(search_id, 1))
    assert second > first
    store.update_trial(first, status="ok", seconds=2.5)
    rows = {r.id: r for r in store.trials(search_id)}
    assert (rows[first].status, rows[first].seconds, rows[first].error) == ("ok", 2.5, "kept")
    assert rows[second].status == "running"


def test_cache_answers_repeats_from_memory_unless_it_forgets(store):
    task, key = f"task-{uuid.uuid4().hex[:6]}", ("proxy[synflow]", "h")
    remembering, forgetful = SqlEquivalenceCache(store), SqlEquivalenceCache(store, forget_after=9)
    remembering.put(task, *key, TrialResult(Status.OK, {"proxy.synflow": 1.0}))
    assert forgetful.get(task, *key) is not None
    with store.engine.begin() as connection:  # the row goes: only the memory still has it
        connection.execute(text("DELETE FROM cache_entry WHERE task = :t"), {"t": task})
    assert remembering.get(task, *key).metrics == {"proxy.synflow": 1.0}
    assert forgetful.get(task, *key) is None  # a forgetful cache always reads the table


def test_functional_hashes_persist_beyond_the_store_object(store):
    structural = uuid.uuid4().hex
    store.remember_functional_hash(structural, "p", "f1")
    other = Store(store.url)  # another process's view: from the table, not memory
    assert other.functional_hash(structural, "p") == "f1"
    other.close()


def test_bad_url_is_a_clear_error():
    with pytest.raises(StoreError, match="cannot open the store"):
        Store("nosuchdialect://x")


def test_a_copied_search_keeps_the_times_its_trials_were_first_copied(store):
    """The dashboard's mirror: each copy replaces the search's trials; a trial keeps the time
    it was first copied, and the time it was first copied finished."""
    source = store.search(store.create_search(f"m-{uuid.uuid4().hex[:6]}", "task", "{}"))
    copy = replace(source, id=uuid.uuid4().hex[:12])
    running = replace(_row(copy.id, 0), id=10**6, created_at=1.0)
    store.copy_search(copy, [running])
    store.copy_search(copy, [replace(running, status="ok", created_at=2.0, finished_at=2.0)])
    store.copy_search(copy, [replace(running, status="ok", created_at=3.0, finished_at=3.0)])
    (trial,) = store.trials(copy.id)
    assert (trial.id, trial.status, trial.created_at, trial.finished_at) == (10**6, "ok", 1.0, 2.0)
    assert store.search(copy.id) == copy
    store.forget_searches_except({s.id for s in store.searches()} - {copy.id})
    assert store.trials(copy.id) == [] and copy.id not in {s.id for s in store.searches()}
