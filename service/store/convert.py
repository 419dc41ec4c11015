"""Stored rows <-> records: the one place that knows how a search, a trial or an event lies in
the tables (``tables``). Readers get ``winnow.records`` values, never ORM rows; writers give
records (or record fields, for an update), and this module builds the column dicts that the
store's prepared statements take.

A record field is its column unless :data:`TRIAL_CODECS` (or its search and event twins) says
otherwise: JSON documents are stored as text under ``<field>_json`` and parsed on the way out;
a candidate stays its canonical JSON text (``Candidate.from_json`` rebuilds it); statuses come
back as the ``Status``/``SearchStatus`` enums, whose values are the stored strings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

from winnow.records import EventRecord, SearchRecord, SearchStatus, Status, TrialRecord

R = TypeVar("R")


def metrics_json(metrics: dict[str, Any]) -> str:
    """Metrics as JSON, a non-finite number as null: NaN is not JSON, and the SQL JSON functions
    that read it (SQLite's json_extract, PostgreSQL's json) refuse the whole document."""
    finite = {
        k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in metrics.items()
    }
    return json.dumps(finite)


def _text(value: str) -> str:
    return value


@dataclass(frozen=True)
class Codec:
    """How one record field is stored: its column, and the functions to and from it."""

    column: str
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


def _enum(kind: type) -> Codec:
    # encode validates: a misspelled status is an error here, not a row no reader understands
    return Codec("status", lambda status: kind(status).value, kind)


TRIAL_CODECS = {
    "status": _enum(Status),
    "candidate": Codec("candidate_json", _text, _text),
    "params": Codec("params_json", json.dumps, json.loads),
    "metrics": Codec("metrics_json", metrics_json, json.loads),
    "loss_curve": Codec("loss_curve_json", json.dumps, json.loads),
    "accuracy_curve": Codec("accuracy_curve_json", json.dumps, json.loads),
}
SEARCH_CODECS = {"status": _enum(SearchStatus)}
EVENT_CODECS = {"payload": Codec("payload_json", json.dumps, json.loads)}


class RecordLayout(Generic[R]):
    """A record type's fields against its table's columns (see the module docstring)."""

    def __init__(self, record: type[R], codecs: dict[str, Codec]) -> None:
        self.record, self.codecs = record, codecs
        self.fields = tuple(f.name for f in fields(record))  # type: ignore[arg-type]
        # (field, column, codec or None), computed once: the engine writes a row per proposal,
        # and reads convert thousands of rows
        self._plan = tuple((name, self.column(name), codecs.get(name)) for name in self.fields)

    def column(self, field: str) -> str:
        return self.codecs[field].column if field in self.codecs else field

    def columns(self, **values: Any) -> dict[str, Any]:
        """Record fields (some or all) as column values, e.g. for an update."""
        unknown = set(values) - set(self.fields)
        if unknown:
            allowed = ", ".join(self.fields)
            names = ", ".join(repr(name) for name in sorted(unknown))
            raise ValueError(f"{names} is not a field of {self.record.__name__}: {allowed}")
        return {
            column: values[name] if codec is None else codec.encode(values[name])
            for name, column, codec in self._plan
            if name in values
        }

    def row(self, record: R, with_id: bool = False) -> dict[str, Any]:
        """Every column of a record, for an insert (``id`` only when asked: the database
        numbers new rows)."""
        return {
            column: getattr(record, name) if codec is None else codec.encode(getattr(record, name))
            for name, column, codec in self._plan
            if with_id or name != "id"
        }

    def records(self, result: Any) -> list[R]:
        """The records of a Core result's rows (a select of the record's table). Rows are read
        by position: by name, the lookups cost more than the JSON parsing."""
        index = {key: i for i, key in enumerate(result.keys())}
        plan = [
            (name, index[column], None if codec is None else codec.decode)
            for name, column, codec in self._plan
        ]
        return [
            self.record(
                **{name: row[i] if decode is None else decode(row[i]) for name, i, decode in plan}
            )
            for row in result
        ]


TRIALS = RecordLayout(TrialRecord, TRIAL_CODECS)
SEARCHES = RecordLayout(SearchRecord, SEARCH_CODECS)
EVENTS = RecordLayout(EventRecord, EVENT_CODECS)


def trial_columns(record: TrialRecord) -> dict[str, Any]:
    """The insert of a new trial row (every column but ``id``)."""
    return TRIALS.row(record)


def trial_update(**fields: Any) -> dict[str, Any]:
    """The columns of an update given as record fields (``metrics={...}``, ``status="ok"``)."""
    return TRIALS.columns(**fields)
