"""The Search page: progress, the front, histories, intermediate values (per-epoch curves),
the cascade, proxies, the evidence ladder, parameter importance, parallel coordinates and
slices, the timeline of runs per worker, and the trial table.
While the search runs, the page body is a fragment that re-reads the store every few seconds."""

from __future__ import annotations

import streamlit as st

from winnow.records import TERMINAL
from winnow.service import progress_text
from winnow.service.store import StoreError
from winnow.ui import nav, search_sections, source, trial_table
from winnow.ui.overview import COLUMN_HELP


def render(search_id: str) -> None:
    try:
        status = source.store().search(search_id).status
    except StoreError as error:
        st.error(str(error))
        if st.button("All searches"):
            nav.go()
        return
    if st.button("← All searches"):
        nav.go()
    every = None if status in TERMINAL else source.REFRESH_SECONDS
    st.fragment(_body, run_every=every)(search_id)


def _body(search_id: str) -> None:
    url = source.store().url
    data = source.search_data(url, search_id, source.version(search_id))
    search, spec = data["search"], source.spec(data["search"].spec_json)
    st.title(f"Search {search.name}")
    st.caption(f"id {search.id} · status **{search.status}** · task {search.task_key}")
    if search.error:
        st.warning(search.error)
    note = source.spec_note(search.spec_json)
    if note and note not in (search.error or ""):  # a mirror's error carries the server's note
        st.warning(note)
    _counters(data)
    _cancel(search_id, search.status)
    search_sections.pareto(data, spec)
    search_sections.history(data)
    search_sections.intermediate_values(data, spec)
    search_sections.cascade(data, spec)
    search_sections.evidence_ladder(data)
    search_sections.importance(data, spec)
    search_sections.parameters(data, spec)
    search_sections.timeline(url, search_id)
    trial_table.render(url, search_id, data, spec)


def _counters(data: dict) -> None:
    progress = data["progress"]
    shown = [
        ("candidates", progress["candidates"]),  # what budget.max_trials counts
        ("training runs", progress["trained"]),
        ("proposals", progress["proposals"]),
        ("hash hits", progress["cache_hits"]),
        ("pruned", progress["pruned"]),
        ("failed", progress["failed"]),
        (hypervolume_label(data["leader"]), progress["hypervolume"]),
        # one trial's values (the front's best on the first objective), never a mix of trials
        *((f"leader {name}", value) for name, value in leader_values(data["leader"])),
    ]
    for column, (label, value) in zip(st.columns(len(shown)), shown, strict=True):
        column.metric(label, nav.fmt(value), help=COUNTER_HELP.get(label))
    if data["leader"] is not None:
        st.caption(leader_caption(data["leader"]))


COUNTER_HELP = {
    "candidates": COLUMN_HELP["candidates"],
    "training runs": "Training runs started: each rung a candidate trains at is one run; a hash "
    "hit trains nothing.",
    "proposals": COLUMN_HELP["proposals"],
    "hash hits": "Candidates whose network equals one trained before: its result is reused.",
    "hypervolume": COLUMN_HELP["hypervolume"],
    "hypervolume (single runs)": COLUMN_HELP["hypervolume"],
}


def leader_caption(leader: dict) -> str:
    """What the leader's numbers are: one run's values, or a confirmed recipe's means."""
    if leader.get("confirmed") is None:
        return (
            f"leader: trial #{leader['trial_id']}, the front's best on the first objective, "
            "with its other values (the trial export picks by default)"
        )
    seeds = leader["confirmed"]["seeds"]
    return (
        f"leader: trial #{leader['trial_id']}, confirmed: its values are means over "
        f"{seeds} confirmation seed{'s' if seeds != 1 else ''} (the front's best confirmed "
        "recipe on the first objective, as winnow pareto ranks it and export picks it)"
    )


def hypervolume_label(leader: dict | None) -> str:
    """``hypervolume (single runs)`` beside a confirmed leader (the hypervolume is the single
    runs' front's: ``progress_text.hypervolume_label``), else ``hypervolume``."""
    return "hypervolume" + progress_text.hypervolume_label({"leader": leader})


def leader_values(leader: dict | None) -> list[tuple[str, float]]:
    return [] if leader is None else list(leader["values"].items())


def _cancel(search_id: str, status: str) -> None:
    """Cancelling stops a search for good, so it takes a second, explicit click."""
    if status in TERMINAL:
        return
    asking = st.session_state.get("confirm-cancel") == search_id
    if not asking:
        if st.button("Cancel search…", key="cancel"):
            st.session_state["confirm-cancel"] = search_id
            st.rerun()
        return
    st.warning("Cancel this search? Running trials stop; what is stored stays.")
    yes, no = st.columns(2)
    if yes.button("Yes, cancel it", type="primary", key="cancel-yes"):
        st.session_state.pop("confirm-cancel")
        try:
            st.success(f"Search is now {source.cancel(search_id)}.")
        except Exception as error:  # a sentence for the user, whatever the server said
            st.error(f"Could not cancel: {error}")
    if no.button("Keep it running", key="cancel-no"):
        st.session_state.pop("confirm-cancel")
        st.rerun()
