"""The dashboard's reads: a search of 10,000 trials has some 16,000 rows, so counts are SQL
aggregates, the trial table is one page at a time (filtered and sorted in SQL), and only the
rows that are drawn (trained results, their proxy scores) are read whole.

Frames have the ``TrialRecord`` field names as columns, with the record's types: ``candidate``
is the canonical JSON text (a candidate's rows share it, so a reader parses each text once) and
``metrics`` the parsed dict. JSON fields inside the text columns (an axis of a candidate, a
metric) are read with SQLAlchemy's JSON paths, which become ``json_extract`` on SQLite and
``#>>`` on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import JSON, Integer, cast, distinct, func, or_, select, type_coerce
from sqlalchemy.dialects import postgresql

from winnow.records import CONFIRM, Status, TrialRecord
from winnow.service.store.convert import TRIALS
from winnow.service.store.sql import Store
from winnow.service.store.tables import TrialRow

# Axes the table filters on, and their paths in a candidate.
AXIS_PATHS = {
    "normalization": ("normalization",),
    "optimizer": ("optimizer", "name"),
    "activation_bits": ("quantization", "activation_bits"),
}
TABLE_COLUMNS = [
    TrialRow.id,
    TrialRow.number,
    TrialRow.stage,
    TrialRow.epochs,
    TrialRow.rung,
    TrialRow.status,
    TrialRow.reused,
    TrialRow.seconds,
    TrialRow.finished_at,
    TrialRow.candidate_json.label("candidate"),
    TrialRow.metrics_json.label("metrics"),
    TrialRow.error,
]

# The SQL half of ``TrialRecord.completed`` (winnow/records.py), which stays in SQL so that only
# the rows drawn are read: a training row with a result (``ok``, or ``duplicate``: reused).
# ``completed`` below adds the rule's other half, the top rung; tests/service/test_reads.py
# checks that the two select exactly the trials ``TrialRecord.completed`` accepts.
RESULT_STATUSES = (Status.OK.value, Status.DUPLICATE.value)  # plain strings: drivers bind them
HAS_RESULT = (TrialRow.stage == "train") & TrialRow.status.in_(RESULT_STATUSES)

# Whose rows a read covers: one search's id, several ids (a page of a listing), or None (all).
SearchIds = str | Collection[str] | None


def by_rung(trained_rows: pd.DataFrame, rungs: int) -> list[pd.DataFrame]:
    """The rows of :func:`trained` of each rung, lowest first (``readout.front_rung`` picks
    the front's)."""
    return [trained_rows[trained_rows["rung"] == rung] for rung in range(rungs)]


def completed(trained_rows: pd.DataFrame, top_rung: int) -> pd.DataFrame:
    """The rows of :func:`trained` that are completed trials (``TrialRecord.completed``)."""
    return trained_rows[trained_rows["rung"] == top_rung]


def _json(store: Store, column: Any) -> Any:
    """A text column seen as JSON: a cast on PostgreSQL, a coercion elsewhere (SQLite reads
    JSON from text as it is)."""
    if store.engine.dialect.name == "postgresql":
        return cast(column, postgresql.JSON)
    return type_coerce(column, JSON)


def _frame(store: Store, query: Any) -> pd.DataFrame:
    with store.session() as session:
        result = session.execute(query)
        frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    if "metrics" in frame:
        frame["metrics"] = [json.loads(text) for text in frame["metrics"]]
    return frame


def _of(search_id: str | Collection[str]) -> Any:
    """One search's rows, or those of several (a page of a listing)."""
    if isinstance(search_id, str):
        return TrialRow.search_id == search_id
    return TrialRow.search_id.in_(list(search_id))


def version(store: Store, search_id: str) -> tuple:
    """Changes whenever a row is added or finishes, or the search's status changes: the key of
    every cached read of a search."""
    query = select(func.count(TrialRow.id), func.max(TrialRow.id), func.max(TrialRow.finished_at))
    with store.session() as session:
        counts = tuple(session.execute(query.where(_of(search_id))).one())
    search = store.search(search_id)
    return (*counts, str(search.status), search.updated_at)


def counts(store: Store, search_id: SearchIds = None) -> pd.DataFrame:
    """Rows by (stage, epochs, rung, status, reused): the funnel and the progress counters of
    one search, or of several or every search (with a ``search_id`` column) in the same one
    query."""
    group = (TrialRow.stage, TrialRow.epochs, TrialRow.rung, TrialRow.status, TrialRow.reused)
    if not isinstance(search_id, str):
        group = (TrialRow.search_id, *group)
    ran = _json(store, TrialRow.metrics_json)["epochs_run"].as_integer()  # the run's own count
    measured = (func.sum(ran).label("epochs_run"), func.count(ran).label("with_epochs_run"))
    query = select(*group, func.count().label("rows"), *measured).group_by(*group)
    return _frame(store, query if search_id is None else query.where(_of(search_id)))


TALLIED = ("stage", "epochs", "rung", "status", "reused", "rows", "epochs_run", "with_epochs_run")


def tally_groups(counts_frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    """The ``(stage, epochs, rung, status, reused, rows, epochs_run, with_epochs_run)`` groups
    ``readout.tally`` counts, from a frame of :func:`counts` (``epochs_run``: the sum of the
    group's ``metrics.epochs_run``, over the ``with_epochs_run`` rows that have it)."""
    columns = (counts_frame[c] for c in TALLIED)
    return [
        (stage, int(epochs), int(rung), status, bool(reused), int(rows), _int(ran), int(with_ran))
        for stage, epochs, rung, status, reused, rows, ran, with_ran in zip(*columns, strict=True)
    ]


def _int(value: Any) -> int:
    """A SQL sum's value: NULL (None, or NaN in a frame) when no row had one."""
    return 0 if value is None or value != value else int(value)


def proposals(store: Store, search_id: SearchIds = None) -> dict[str, int]:
    """Distinct candidate numbers per search (one search, several, or all)."""
    query = select(TrialRow.search_id, func.count(distinct(TrialRow.number)))
    if search_id is not None:
        query = query.where(_of(search_id))
    with store.session() as session:
        return dict(session.execute(query.group_by(TrialRow.search_id)).all())


def trained(store: Store, search_id: SearchIds = None) -> pd.DataFrame:
    """Training rows with a result (``HAS_RESULT``) at every rung, in completion order;
    :func:`completed` keeps the top rung's."""
    hashes = (TrialRow.structural_hash, TrialRow.functional_hash, TrialRow.candidate_key)
    columns = [TrialRow.search_id, *TABLE_COLUMNS, *hashes]  # hashes: a result's recipe
    query = select(*columns).where(HAS_RESULT)
    if search_id is not None:
        query = query.where(_of(search_id))
    order = (func.coalesce(TrialRow.finished_at, TrialRow.created_at), TrialRow.id)
    return _frame(store, query.order_by(*order))


def confirmation_runs(store: Store, search_id: SearchIds = None) -> list[TrialRecord]:
    """The confirmation rows (stage ``confirm:<seed>``: ``strategy.confirm``) of one search,
    of several or of all, as records, in the order written: at most ``top_k`` x ``seeds`` a
    search, so a listing reads them whole (``readout.listed_confirmation``)."""
    query = select(TrialRow.__table__).where(TrialRow.stage.startswith(f"{CONFIRM}:"))
    if search_id is not None:
        query = query.where(_of(search_id))
    with store.session() as session:
        return TRIALS.records(session.execute(query.order_by(TrialRow.id)))


def curves(store: Store, row_ids: Collection[int]) -> pd.DataFrame:
    """The per-epoch loss and accuracy (``loss_curve``, ``accuracy_curve``: parsed lists) of
    the rows ``row_ids`` with their ``id, number, epochs``: only the few rows a chart draws
    are read (a curve is the largest column a row has)."""
    columns = (
        TrialRow.id,
        TrialRow.number,
        TrialRow.epochs,
        TrialRow.loss_curve_json.label("loss_curve"),
        TrialRow.accuracy_curve_json.label("accuracy_curve"),
    )
    frame = _frame(store, select(*columns).where(TrialRow.id.in_(list(row_ids))))
    for column in ("loss_curve", "accuracy_curve"):
        frame[column] = [json.loads(text) for text in frame[column]]
    return frame


def screening_scores(store: Store, search_id: str) -> pd.DataFrame:
    """The screening stages' metrics (``proxy``, and any later scoring stage's) of the
    candidates that were trained (the ones a correlation with trained accuracy can use), with
    their ``stage``."""
    was_trained = select(TrialRow.number).where(_of(search_id), TrialRow.stage == "train")
    columns = (TrialRow.number, TrialRow.stage, TrialRow.metrics_json.label("metrics"))
    query = select(*columns).where(
        _of(search_id), TrialRow.stage != "train", TrialRow.number.in_(was_trained)
    )
    return _frame(store, query)


def runs(store: Store, search_id: str, latest: int) -> pd.DataFrame:
    """The latest ``latest`` finished runs (a reused result ran nothing) with what a timeline
    draws: ``number, stage, epochs, status, seconds, finished_at, host, device``, oldest
    first."""
    columns = (
        TrialRow.number,
        TrialRow.stage,
        TrialRow.epochs,
        TrialRow.status,
        TrialRow.seconds,
        TrialRow.finished_at,
        TrialRow.host,
        TrialRow.device,
    )
    query = select(*columns).where(
        _of(search_id), TrialRow.finished_at.is_not(None), TrialRow.reused.is_(False)
    )
    order = (TrialRow.finished_at.desc(), TrialRow.id.desc())
    frame = _frame(store, query.order_by(*order).limit(latest))
    return frame.iloc[::-1].reset_index(drop=True)


def axis_values(store: Store, search_id: str) -> dict[str, list[str]]:
    """The values each filterable axis takes in the search (weight bits: every bit width used
    by some layer)."""
    candidate = _json(store, TrialRow.candidate_json)
    found: dict[str, list[str]] = {}
    with store.session() as session:
        for axis, path in AXIS_PATHS.items():
            query = select(candidate[path].as_string()).where(_of(search_id)).distinct()
            found[axis] = sorted(str(v) for v in session.scalars(query) if v is not None)
        query = select(candidate[("quantization", "weight_bits")].as_string())
        texts = session.scalars(query.where(_of(search_id)).distinct())
        bits = {b for text in texts if text for b in _bit_values(text)}
    found["weight_bits"] = [str(b) for b in sorted(bits)]
    return found


def _bit_values(text: str) -> list[int]:
    value = json.loads(text)
    return list(value.values()) if isinstance(value, dict) else [value]


@dataclass(frozen=True)
class TableQuery:
    """One page of the trial table: filters (empty = all), a sort key and the page."""

    statuses: tuple[str, ...] = ()
    fidelities: tuple[str, ...] = ()  # "proxy", "train:6" (the dashboard's fidelity labels)
    axes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # (name, low, high): a metric ("metric:accuracy") or a number in the candidate by its JSON
    # path ("param:optimizer.lr") within [low, high] (None: unbounded); a row without it fails
    ranges: tuple[tuple[str, float | None, float | None], ...] = ()
    sort: str = "id"  # a column of the trial table, or "metric:<name>"
    descending: bool = False
    page: int = 0
    page_size: int = 50


def _filtered(store: Store, search_id: str, q: TableQuery) -> Any:
    where = [_of(search_id)]
    if q.statuses:
        where.append(TrialRow.status.in_(q.statuses))
    if q.fidelities:
        where.append(or_(*(_fidelity_clause(f) for f in q.fidelities)))
    candidate = _json(store, TrialRow.candidate_json)
    for axis, values in q.axes:
        if not values:
            continue
        if axis == "weight_bits":
            where.append(or_(*(_has_bits(candidate, int(v)) for v in values)))
        else:
            where.append(candidate[AXIS_PATHS[axis]].as_string().in_(values))
    for name, low, high in q.ranges:
        value = _ranged(store, name)
        where += [value >= low] if low is not None else []
        where += [value <= high] if high is not None else []
    return where


def _ranged(store: Store, name: str) -> Any:
    """The number a range filters on: ``metric:NAME`` (a key of the metrics, dots and all) or
    ``param:A.B`` (the candidate's value at that JSON path)."""
    kind, _, path = name.partition(":")
    if kind == "metric":
        return _json(store, TrialRow.metrics_json)[path].as_float()
    if kind == "param":
        return _json(store, TrialRow.candidate_json)[tuple(path.split("."))].as_float()
    raise ValueError(f"a range is on metric:NAME or param:PATH, not {name!r}")


def _fidelity_clause(label: str) -> Any:
    """A fidelity label's rows: ``train:<epochs>`` the training rows of those epochs, any
    other label (``proxy``, ``confirm:<seed>``) the rows of that stage."""
    stage, _, epochs = label.partition(":")
    if stage == "train" and epochs.isdigit():
        return (TrialRow.stage == stage) & (TrialRow.epochs == int(epochs))
    return TrialRow.stage == label


def _has_bits(candidate: Any, bits: int) -> Any:
    """Some layer has ``bits`` weight bits: the weight-bits object, as compact JSON text, holds
    ``:bits`` before a comma or its closing brace (or is the number itself)."""
    text = candidate[("quantization", "weight_bits")].as_string()
    return or_(text == str(bits), text.like(f"%:{bits},%"), text.like(f"%:{bits}}}"))


def _order(store: Store, q: TableQuery) -> list[Any]:
    if q.sort.startswith("metric:"):
        key = _json(store, TrialRow.metrics_json)[q.sort.removeprefix("metric:")].as_float()
    else:
        key = getattr(TrialRow, q.sort)
    ordered = key.desc() if q.descending else key.asc()
    # NULLs (a metric the row lacks) last either way, then a stable tie-break for paging
    return [key.is_(None), ordered, TrialRow.id]


def trial_page(store: Store, search_id: str, q: TableQuery) -> tuple[pd.DataFrame, int]:
    """One page of rows (LIMIT/OFFSET) and how many rows match the filters in all."""
    where = _filtered(store, search_id, q)
    page = select(*TABLE_COLUMNS).where(*where).order_by(*_order(store, q))
    page = page.limit(q.page_size).offset(q.page * q.page_size)
    with store.session() as session:
        total = session.scalar(select(func.count(TrialRow.id)).where(*where)) or 0
    return _frame(store, page), total


def candidate_trials(store: Store, search_id: str, number: int) -> list[TrialRecord]:
    """Every trial of one candidate (its proxy row and each rung), in the order written."""
    query = select(TrialRow.__table__).where(_of(search_id), TrialRow.number == number)
    with store.session() as session:
        return TRIALS.records(session.execute(query.order_by(TrialRow.id)))


def equivalents(store: Store, search_id: str, number: int, hashes: dict[str, str | None]):
    """Other candidates of the search with the same structural or functional hash."""
    clauses = [getattr(TrialRow, f"{kind}_hash") == h for kind, h in hashes.items() if h]
    if not clauses:
        return pd.DataFrame()
    query = select(
        TrialRow.number,
        func.min(TrialRow.structural_hash).label("structural_hash"),
        func.min(TrialRow.functional_hash).label("functional_hash"),
        func.max(cast(TrialRow.reused, Integer)).label("reused"),
    ).where(_of(search_id), TrialRow.number != number, or_(*clauses))
    return _frame(store, query.group_by(TrialRow.number).order_by(TrialRow.number).limit(200))
