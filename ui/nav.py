"""Which page is open lives in the URL's query parameters (``?search=ID&trial=N``; the Compare
page: ``?compare=ID,ID``), so a page can be bookmarked, reloaded and opened by a test. Moving
changes them and reruns the script."""

from __future__ import annotations

import streamlit as st


def current() -> tuple[str | None, int | None]:
    search = st.query_params.get("search") or None
    trial = st.query_params.get("trial")
    return search, int(trial) if trial not in (None, "") else None


def compared() -> list[str]:
    """The searches the Compare page compares (``?compare=ID,ID``), in order; empty: none."""
    text = st.query_params.get("compare") or ""
    return list(dict.fromkeys(i.strip() for i in text.split(",") if i.strip()))


def go(
    search: str | None = None, trial: int | None = None, compare: list[str] | None = None
) -> None:
    st.query_params.clear()
    if compare:
        st.query_params["compare"] = ",".join(compare)
    if search is not None:
        st.query_params["search"] = search
    if trial is not None:
        st.query_params["trial"] = str(trial)
    # widget keys carry this counter: a chart's or table's selection, which opened a trial,
    # must not open it again when the search page is drawn anew
    st.session_state["nav"] = st.session_state.get("nav", 0) + 1
    st.rerun()


def key(name: str) -> str:
    return f"{name}-{st.session_state.get('nav', 0)}"


def fmt(value: object) -> str:
    """Numbers as the pages show them (tests read them back with :func:`parse`)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.6g}"
    return str(value)


def parse(text: str) -> float:
    return float(text.replace(",", ""))
