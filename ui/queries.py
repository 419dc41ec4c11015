"""SQL reads for the dashboard. A search of 10,000 trials has some 16,000 rows: counts are
SQL aggregates, the trial table is one page at a time (filtered and sorted in SQL), and only the
rows that are drawn (trained results, their proxy scores) are read whole.

JSON fields (an axis of ``candidate_json``, a metric in ``metrics_json``) are read with
SQLAlchemy's JSON paths, which become ``json_extract`` on SQLite and ``#>>`` on PostgreSQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import JSON, Integer, cast, distinct, func, or_, select, type_coerce
from sqlalchemy.dialects import postgresql

from winnow.service.store import Store
from winnow.service.store.tables import SearchRow, TrialRow

DONE = ("ok", "duplicate")  # a result the front may use (readout's "completed")
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
    TrialRow.candidate_json,
    TrialRow.metrics_json,
    TrialRow.error,
]


def _json(store: Store, column: Any) -> Any:
    """A text column seen as JSON: a cast on PostgreSQL, a coercion elsewhere (SQLite reads
    JSON from text as it is)."""
    if store.engine.dialect.name == "postgresql":
        return cast(column, postgresql.JSON)
    return type_coerce(column, JSON)


def _frame(store: Store, query: Any) -> pd.DataFrame:
    with store.session() as session:
        result = session.execute(query)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _of(search_id: str) -> Any:
    return TrialRow.search_id == search_id


def version(store: Store, search_id: str) -> tuple:
    """Changes whenever a row is added or finishes, or the search's status changes: the key of
    every cached read of a search."""
    query = select(func.count(TrialRow.id), func.max(TrialRow.id), func.max(TrialRow.finished_at))
    with store.session() as session:
        counts = tuple(session.execute(query.where(_of(search_id))).one())
    search = store.search(search_id)
    return (*counts, search.status, search.updated_at)


def search_rows(store: Store) -> list[SearchRow]:
    return store.searches()


def counts(store: Store, search_id: str | None = None) -> pd.DataFrame:
    """Rows by (stage, epochs, rung, status, reused): the funnel and the progress counters of
    one search, or of every search (with a ``search_id`` column) in the same one query."""
    group = (TrialRow.stage, TrialRow.epochs, TrialRow.rung, TrialRow.status, TrialRow.reused)
    if search_id is None:
        group = (TrialRow.search_id, *group)
    query = select(*group, func.count().label("rows")).group_by(*group)
    return _frame(store, query if search_id is None else query.where(_of(search_id)))


def proposals(store: Store, search_id: str | None = None) -> dict[str, int]:
    """Distinct candidate numbers per search (one search, or all)."""
    query = select(TrialRow.search_id, func.count(distinct(TrialRow.number)))
    if search_id is not None:
        query = query.where(_of(search_id))
    with store.session() as session:
        return dict(session.execute(query.group_by(TrialRow.search_id)).all())


def trained(store: Store, search_id: str | None = None) -> pd.DataFrame:
    """Training rows with a usable result (``ok`` or ``duplicate``), in completion order."""
    columns = [TrialRow.search_id, *TABLE_COLUMNS, TrialRow.structural_hash]
    query = select(*columns).where(TrialRow.stage == "train", TrialRow.status.in_(DONE))
    if search_id is not None:
        query = query.where(_of(search_id))
    order = (func.coalesce(TrialRow.finished_at, TrialRow.created_at), TrialRow.id)
    return _frame(store, query.order_by(*order))


def proxy_scores(store: Store, search_id: str) -> pd.DataFrame:
    """Proxy-stage metrics of the candidates that were trained (the ones a correlation with
    trained accuracy can use)."""
    was_trained = select(TrialRow.number).where(_of(search_id), TrialRow.stage == "train")
    query = select(TrialRow.number, TrialRow.metrics_json).where(
        _of(search_id), TrialRow.stage == "proxy", TrialRow.number.in_(was_trained)
    )
    return _frame(store, query)


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
    fidelities: tuple[str, ...] = ()  # "proxy", "train:6", as :func:`fidelity_label` parses
    axes: tuple[tuple[str, tuple[str, ...]], ...] = ()
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
    return where


def _fidelity_clause(label: str) -> Any:
    stage, _, epochs = label.partition(":")
    clause = TrialRow.stage == stage
    return clause & (TrialRow.epochs == int(epochs)) if epochs else clause


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


def candidate_rows(store: Store, search_id: str, number: int) -> list[TrialRow]:
    """Every row of one candidate (its proxy row and each rung), in the order written."""
    with store.session() as session:
        query = select(TrialRow).where(_of(search_id), TrialRow.number == number)
        return list(session.scalars(query.order_by(TrialRow.id)))


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
