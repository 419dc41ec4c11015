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
    query = _query(data, spec)
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


def _query(data: dict, spec: SearchSpec) -> TableQuery:
    columns = st.columns(6)
    statuses = columns[0].multiselect("status", data["statuses"], key="f-status")
    fidelities = columns[1].multiselect("fidelity", data["fidelities"], key="f-fidelity")
    axes = tuple(
        (axis, tuple(column.multiselect(axis, values, key=f"f-{axis}")))
        for column, (axis, values) in zip(columns[2:], data["axis_values"].items(), strict=False)
    )
    sorts = {**SORTS, **{o.name: f"metric:{o.name}" for o in spec.objectives}}
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    sort = left.selectbox("sort by", list(sorts), key="t-sort")
    descending = right.toggle("descending", key="t-desc")
    filters = (tuple(statuses), tuple(fidelities), axes, sort, descending)
    if st.session_state.get("t-filters") != filters:  # new filters: back to the first page
        st.session_state["t-filters"], st.session_state["t-page"] = filters, 0
    return TableQuery(
        tuple(statuses),
        tuple(fidelities),
        axes,
        sorts[sort],
        descending,
        st.session_state.get("t-page", 0),
        PAGE_SIZE,
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
