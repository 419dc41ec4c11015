"""The Searches page: every search in the store, refreshed while any is running; from it, a
search opens, or two or more open side by side on the Compare page."""

from __future__ import annotations

import streamlit as st

from winnow.records import TERMINAL
from winnow.ui import nav, source
from winnow.ui.overview import COLUMN_HELP


def render() -> None:
    st.title("Searches")
    url = source.store().url
    table = source.searches_overview(url)
    if table.empty:
        st.info("No searches in this store yet. Submit one with `winnow submit SPEC.yaml`.")
        return
    live = not table["status"].isin(TERMINAL).all()
    st.fragment(_body, run_every=source.REFRESH_SECONDS if live else None)(url)


NUMBER_FORMATS = {"proposals": None, "completed": None, "hypervolume": "%.6g"}


def _columns() -> dict:
    """Each count's help text (``overview.COLUMN_HELP``), numbers as numbers."""
    return {
        name: st.column_config.NumberColumn(format=NUMBER_FORMATS[name], help=text)
        if name in NUMBER_FORMATS
        else st.column_config.Column(help=text)
        for name, text in COLUMN_HELP.items()
    }


def _body(url: str) -> None:
    table = source.searches_overview(url)
    event = st.dataframe(
        table,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key=nav.key("searches"),
        column_config=_columns(),
    )
    st.caption(
        "candidates: sent to training (of budget.max_trials); completed: trained at the top "
        "rung, hash hits included. A candidate that successive halving stops at a lower rung is "
        "sent to training but never completed. Hover a column's name for more."
    )
    if event.selection.rows:
        nav.go(search=str(table.iloc[event.selection.rows[0]]["id"]))
    labels = {row.id: f"{row.name} ({row.id}, {row.status})" for row in table.itertuples()}
    left, right = st.columns([4, 1], vertical_alignment="bottom")
    chosen = left.selectbox("Search", list(labels), format_func=labels.get, key="open-search")
    if right.button("Open search", type="primary"):
        nav.go(search=chosen)
    _compare(labels)


def _compare(labels: dict[str, str]) -> None:
    """Two or more searches side by side (the Compare page)."""
    left, right = st.columns([4, 1], vertical_alignment="bottom")
    chosen = left.multiselect(
        "Compare searches", list(labels), format_func=labels.get, key="compare-searches"
    )
    if right.button("Compare", disabled=len(chosen) < 2, key="compare-open"):
        nav.go(compare=chosen)
