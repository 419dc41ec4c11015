"""The trial table: one stored row per candidate and fidelity, filtered, sorted and paged in
SQL (``reads.trial_page``), so a page costs the same with 100 rows or 100,000."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from winnow.service.search_spec import SearchSpec
from winnow.service.store.reads import TableQuery
from winnow.ui import analysis, nav, source

PAGE_SIZE = 50
SORTS = {
    "row": "id",
    "trial": "number",
    "status": "status",
    "epochs": "epochs",
    "seconds": "seconds",
    "finished": "finished_at",
}


def render(url: str, search_id: str, data: dict, spec: SearchSpec) -> None:
    st.subheader("Trials")
    query = _query(data, spec, _range_names(url, search_id, data))
    rows, total = source.trial_page(url, search_id, source.version(search_id), query)
    pages = max(1, -(-total // PAGE_SIZE))
    shown = _display(rows, [o.name for o in spec.objectives])
    event = st.dataframe(
        shown,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key=nav.key(f"trials-{query.page}"),
    )
    if event.selection.rows:
        nav.go(search_id, int(shown.iloc[event.selection.rows[0]]["trial"]))
    _pager(query.page, pages, total)
    left, right = st.columns([4, 1], vertical_alignment="bottom")
    number = left.number_input("Trial number", min_value=0, step=1, key="open-trial-number")
    if right.button("Open trial", key="open-trial"):
        nav.go(search_id, int(number))


# The candidates and metrics a range's choices are read from (the latest trained results and
# every proxy score): the names, not the values, so a sample finds them all.
RANGE_SAMPLE = 500


def _range_names(url: str, search_id: str, data: dict) -> dict[str, str]:
    """What a range can be on: ``metric:NAME`` and ``param:PATH`` keys, with their labels."""
    trained = source.trained_candidates(url, search_id, source.version(search_id))
    latest = trained.tail(RANGE_SAMPLE)
    metrics = [*latest["metrics"], {c: 0.0 for c in data["proxies"].columns if c != "number"}]
    texts = latest["candidate"].unique()
    params = analysis.numeric_paths([json.loads(t) for t in texts])
    return {f"metric:{n}": n for n in analysis.numeric_metrics(metrics)} | {
        f"param:{p}": f"{p} (parameter)" for p in params
    }


def _ranges(names: dict[str, str]) -> tuple[tuple[str, float | None, float | None], ...]:
    """Ranges on metrics and parameters: rows outside any are hidden (in SQL)."""
    chosen = st.multiselect("ranges on", list(names), format_func=names.get, key="f-ranges")
    ranges = []
    for name in chosen:
        low_column, high_column = st.columns(2)
        low = _bound(low_column, f"{names[name]} at least", f"f-low-{name}")
        high = _bound(high_column, f"{names[name]} at most", f"f-high-{name}")
        ranges.append((name, low, high))
    return tuple(ranges)


def _bound(column, label: str, key: str) -> float | None:
    """A bound typed as text (empty: none), as numbers of any size are (1e-4, 3e5)."""
    text = column.text_input(label, key=key, placeholder="no bound").strip()
    if not text:
        return None
    try:
        return float(text.replace(",", ""))
    except ValueError:
        column.error(f"{text!r} is not a number: the bound is ignored.")
        return None


def _query(data: dict, spec: SearchSpec, range_names: dict[str, str]) -> TableQuery:
    columns = st.columns(6)
    statuses = columns[0].multiselect("status", data["statuses"], key="f-status")
    fidelities = columns[1].multiselect("fidelity", data["fidelities"], key="f-fidelity")
    axes = tuple(
        (axis, tuple(column.multiselect(axis, values, key=f"f-{axis}")))
        for column, (axis, values) in zip(columns[2:], data["axis_values"].items(), strict=False)
    )
    ranges = _ranges(range_names)
    sorts = {**SORTS, **{o.name: f"metric:{o.name}" for o in spec.objectives}}
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    sort = left.selectbox("sort by", list(sorts), key="t-sort")
    descending = right.toggle("descending", key="t-desc")
    filters = (tuple(statuses), tuple(fidelities), axes, ranges, sort, descending)
    if st.session_state.get("t-filters") != filters:  # new filters: back to the first page
        st.session_state["t-filters"], st.session_state["t-page"] = filters, 0
    return TableQuery(
        statuses=tuple(statuses),
        fidelities=tuple(fidelities),
        axes=axes,
        ranges=ranges,
        sort=sorts[sort],
        descending=descending,
        page=st.session_state.get("t-page", 0),
        page_size=PAGE_SIZE,
    )


def _pager(page: int, pages: int, total: int) -> None:
    """Buttons move the page in a callback, before the rerun draws it."""

    def move(step: int) -> None:
        st.session_state["t-page"] = page + step

    back, where, forward = st.columns([1, 3, 1])
    back.button("← Previous", disabled=page == 0, key="t-prev", on_click=move, args=(-1,))
    where.markdown(f"Page **{page + 1}** of {pages:,} · {total:,} rows")
    forward.button("Next →", disabled=page + 1 >= pages, key="t-next", on_click=move, args=(1,))


def _display(rows: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """Readable columns: the fidelity, objectives and axes out of the JSON columns."""
    if rows.empty:
        return pd.DataFrame(columns=["trial", "fidelity", "status", *objectives])
    metrics = rows["metrics"]
    axes = pd.DataFrame([analysis.recipe_axes(json.loads(c)) for c in rows["candidate"]])
    out = pd.DataFrame(
        {
            "row": rows["id"],
            "trial": rows["number"],
            "fidelity": [
                analysis.fidelity_label(s, e)
                for s, e in zip(rows["stage"], rows["epochs"], strict=True)
            ],
            "status": rows["status"],
            "reused": rows["reused"].astype(bool),
        }
    )
    for name in objectives:
        out[name] = [m.get(name) for m in metrics]
    out["screen score"] = [m.get("screen.score") for m in metrics]
    out = pd.concat([out, axes.drop(columns=["family"])], axis=1)
    out["seconds"] = rows["seconds"].round(3)
    out["error"] = rows["error"].fillna("")
    return out
