"""The Trial page: one candidate's recipe on all four axes, its network, its metrics at every
fidelity, loss curves, the candidates found equivalent to it, and its recipe to download."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from winnow.records import SearchRecord, TrialRecord
from winnow.service.engine import readout
from winnow.service.export import recipe as export_recipe
from winnow.service.store import StoreError, reads
from winnow.ui import charts, nav, source
from winnow.ui.recipe import architecture, axis_tables


def render(search_id: str, number: int) -> None:
    if st.button("← Back to the search"):
        nav.go(search_id)
    db = source.store()
    try:
        search = db.search(search_id)
    except StoreError as error:
        st.error(str(error))
        return
    rows = reads.candidate_trials(db, search_id, number)
    st.title(f"Trial {number}")
    if not rows:
        st.error(f"Search {search.name} ({search_id}) has no trial {number}.")
        return
    st.caption(f"search {search.name} ({search_id})")
    candidate = json.loads(rows[0].candidate)
    _recipe(candidate)
    _metrics(rows)
    _equivalents(db, search_id, number, rows[0])
    _export(search, rows, number)


def _recipe(candidate: dict) -> None:
    st.subheader("Recipe")
    for column, (axis, table) in zip(st.columns(4), axis_tables(candidate).items(), strict=True):
        column.markdown(f"**{axis}**")
        column.dataframe(table, hide_index=True)
    st.subheader("Network")
    architecture(candidate["architecture"])


def _metrics(rows: list[TrialRecord]) -> None:
    st.subheader("Metrics at every fidelity")
    records, curves = [], {}
    for row in rows:
        label = row.stage if row.stage != "train" else f"train {row.epochs} epochs"
        if row.loss_curve:
            curves[label] = row.loss_curve
        base = {"fidelity": label, "status": str(row.status), "reused": bool(row.reused)}
        records.append(
            base | {"seconds": round(row.seconds, 3)} | row.metrics | {"error": row.error or ""}
        )
    st.dataframe(pd.DataFrame(records), hide_index=True)
    st.subheader("Loss curve")
    if curves:
        st.plotly_chart(charts.loss_figure(curves), key="loss")
    else:
        st.info("No loss curve stored for this trial.")


def _equivalents(db, search_id: str, number: int, row: TrialRecord) -> None:
    st.subheader("Equivalent candidates")
    hashes = {"structural": row.structural_hash, "functional": row.functional_hash}
    st.caption(f"structural hash `{row.structural_hash}` · functional hash `{row.functional_hash}`")
    same = reads.equivalents(db, search_id, number, hashes)
    if same.empty:
        st.write("None in this search: no other candidate had the same hashes.")
        return
    same["same"] = [
        " and ".join(k for k in hashes if getattr(r, f"{k}_hash") == hashes[k])
        for r in same.itertuples()
    ]
    shown = same[["number", "same", "reused"]].rename(columns={"number": "trial"})
    event = st.dataframe(
        shown,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key=nav.key("equivalents"),
    )
    if event.selection.rows:
        nav.go(search_id, int(shown.iloc[event.selection.rows[0]]["trial"]))


def export_payload(search: SearchRecord, rows: list[TrialRecord], number: int) -> tuple[dict, str]:
    """The recipe of a completed trial (as ``winnow export`` writes it); for one that never
    completed, its candidate alone, which is all there is to export."""
    try:
        return readout.recipe(search, rows, number), "recipe"
    except readout.UnknownTrialError:
        candidate = json.loads(rows[0].candidate)
        return {"format": "winnow.candidate/v1", "candidate": candidate}, "candidate"


def _export(search: SearchRecord, rows: list[TrialRecord], number: int) -> None:
    st.subheader("Export")
    payload, what = export_payload(search, rows, number)
    st.download_button(
        f"Download {what} JSON",
        data=export_recipe.to_json(payload),
        file_name=f"{what}-{search.id}-{number}.json",
        mime="application/json",
        key="export",
    )
