"""Rows <-> records (``service/store/convert.py``) and records <-> messages
(``service/api/convert.py``): every field lands in its column and comes back unchanged."""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import fields, replace

import pytest

from winnow.records import EventRecord, SearchRecord, SearchStatus, Status, TrialRecord
from winnow.service.api import convert as wire
from winnow.service.store import Store, sqlite_url
from winnow.service.store.convert import EVENTS, SEARCHES, TRIALS, metrics_json, trial_update
from winnow.service.store.tables import EventRow, SearchRow, TrialRow

TRIAL = TrialRecord(
    id=None,
    search_id="s",
    number=3,
    stage="train",
    status=Status.OK,
    candidate='{"architecture":{"family":"mlp"}}',
    candidate_key="key",
    epochs=6,
    rung=1,
    structural_hash="st",
    functional_hash="fn",
    params={"width": 64},
    metrics={"accuracy": 0.5, "params": 1200, "screen.score": None},
    loss_curve=[2.0, 1.0],
    error="slow",
    reused=True,
    seconds=1.5,
    device="cpu",
    host="h",
    created_at=10.0,
    finished_at=12.0,
)


@pytest.mark.parametrize(
    "layout, row",
    [(TRIALS, TrialRow), (SEARCHES, SearchRow), (EVENTS, EventRow)],
)
def test_every_record_field_has_exactly_one_column(layout, row):
    columns = {layout.column(name) for name in layout.fields}
    assert columns == set(row.__table__.columns.keys())
    assert len(columns) == len(layout.fields)


def test_a_trial_comes_back_as_it_was_written(tmp_path):
    store = Store(sqlite_url(tmp_path / "s.db"))
    search_id = store.create_search("n", "task", "{}", SearchStatus.QUEUED, "req")
    record = replace(TRIAL, search_id=search_id)
    row_id = store.add_trial(record)
    (stored,) = store.trials(search_id)
    assert stored == replace(record, id=row_id)
    assert isinstance(stored.status, Status) and stored.metrics == TRIAL.metrics
    search = store.search(search_id)
    assert isinstance(search, SearchRecord) and search.status is SearchStatus.QUEUED
    assert store.search_by_request("req") == search and not search.ended
    store.add_event(search_id, "trial", {"number": 3})
    (event,) = store.events(search_id)
    assert isinstance(event, EventRecord) and event.payload == {"number": 3}
    store.close()


def test_updates_name_record_fields_and_statuses_are_checked():
    assert trial_update(metrics={"a": 1.0}, status="ok") == {
        "metrics_json": '{"a": 1.0}',
        "status": "ok",
    }
    with pytest.raises(ValueError, match="'metrics_json' is not a field of TrialRecord"):
        trial_update(metrics_json="{}")
    with pytest.raises(ValueError, match="'finised'"):
        trial_update(status="finised")
    with pytest.raises(ValueError):
        SEARCHES.columns(status="done")


def test_non_finite_metrics_are_stored_as_null_so_sql_can_read_them():
    text = metrics_json({"screen.score": float("nan"), "accuracy": 0.5, "x": float("inf")})
    with sqlite3.connect(":memory:") as db:
        query = "select json_extract(?, '$.accuracy'), json_extract(?, '$.x')"
        row = db.execute(query, (text, text))
        assert row.fetchone() == (0.5, None)


def test_a_trial_crosses_the_wire_and_back():
    """record -> message -> the SDK's dict -> record keeps every field the wire carries."""
    record = replace(TRIAL, id=7, loss_curve=[2.3, 1.9], accuracy_curve=[0.41, float("nan")])
    message = wire.trial_message(record)
    assert message.metrics_json == TRIALS.row(record)["metrics_json"]  # the stored text
    back = wire.trial_from_dict("s", wire.trial_dict(message), seen_at=99.0)
    not_carried = {"params", "candidate_key", "created_at", "finished_at", "accuracy_curve"}
    for field in fields(TrialRecord):
        if field.name not in not_carried:
            assert getattr(back, field.name) == getattr(record, field.name), field.name
    assert back.accuracy_curve[0] == 0.41 and math.isnan(back.accuracy_curve[1])  # NaN kept
    assert (back.created_at, back.finished_at) == (99.0, 99.0)
    running = wire.trial_dict(wire.trial_message(replace(record, status=Status.RUNNING)))
    assert wire.trial_from_dict("s", running, 99.0).finished_at is None


def test_a_search_and_an_event_cross_the_wire():
    search = SearchRecord("id", "n", "task", '{"a": 1}', SearchStatus.FINISHED, None, 1.0, 2.0)
    info = wire.search_dict(wire.search_message(search))
    assert info["status"] == "finished" and info["spec"] == {"a": 1}
    assert wire.search_from_dict(info, "task", search.spec_json) == search
    event = EventRecord(5, "id", 3.0, "front", {"hypervolume": 0.25})
    message = wire.event_message(event, wire.search_message(search))
    assert (
        message.payload_json == json.dumps(event.payload) and wire.payload(message) == event.payload
    )


def test_importances_survive_the_wire_in_order():
    from winnow.service.engine.importance import Importance

    found = [
        Importance(2, "accuracy", 12, "fanova", {"b": 0.7, "a": 0.3}, ("c.lr",), results=15),
        Importance(6, "params", 10, "fanova", {}, (), results=10),
    ]
    back = wire.importance_dict(wire.importance_message(found, "fanova", 10))
    assert back["evaluator"] == "fanova" and back["min_trials"] == 10
    first, second = back["importances"]
    assert list(first["params"].items()) == [("b", 0.7), ("a", 0.3)]  # highest first, kept
    assert (first["epochs"], first["trials"], first["results"]) == (2, 12, 15)
    assert first["left_out"] == ["c.lr"] and second["params"] == {}
