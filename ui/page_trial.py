"""The Trial page: one candidate's recipe on all four axes, its network, its metrics at every
fidelity, loss and accuracy curves, the candidates found equivalent to it, and its recipe to
download."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from winnow.records import SearchRecord, TrialRecord, epochs_text
from winnow.service.engine import readout
from winnow.service.export import recipe as export_recipe
from winnow.service.store import StoreError, reads
from winnow.ui import analysis, charts, nav, source
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
    _metrics(rows, [o.name for o in source.spec(search.spec_json).objectives])
    _equivalents(db, search_id, number, rows[0])
    _export(search, rows, number)


def _recipe(candidate: dict) -> None:
    st.subheader("Recipe")
    for column, (axis, table) in zip(st.columns(4), axis_tables(candidate).items(), strict=True):
        column.markdown(f"**{axis}**")
        column.dataframe(table, hide_index=True)
    st.subheader("Network")
    architecture(candidate["architecture"])


def _metrics(rows: list[TrialRecord], objectives: list[str]) -> None:
    st.subheader("Metrics at every fidelity")
    st.dataframe(metrics_table(rows, objectives), hide_index=True)
    st.subheader("Training curves")
    curves, accuracy, per_epoch = training_curves(rows)
    if curves or accuracy:
        st.plotly_chart(charts.loss_figure(curves, accuracy, per_epoch), key="loss")
        st.caption(
            "What the rows store: each training run's loss per epoch (the mean over the "
            "epoch's batches), by fidelity; its test accuracy after every epoch (lines; on the "
            "test split the final accuracy is measured on: a learning curve, never used for a "
            "decision; absent for a run trained with `task.eval_every_epoch: false`, unless its "
            "result was reused from the task's shared cache, trained where they were measured) "
            "and at the run's end (diamonds, one per fidelity). A continued rung's curves hold the "
            "earlier rungs' epochs. No validation loss is stored."
        )
    if not curves and source.through_server():
        st.info(source.NO_CURVES_THROUGH_SERVER)  # the final accuracy's diamonds alone
    elif not (curves or accuracy):
        st.info("No loss curve stored for this trial.")


def fidelity_text(row: TrialRecord) -> str:
    return f"train {epochs_text(row.epochs)}" if row.stage == "train" else row.stage


def metrics_table(rows: list[TrialRecord], objectives: list[str]) -> pd.DataFrame:
    """One row per stored fidelity: accuracy and the costs first, the proxies' and the
    screen's columns after (``analysis.metric_columns``), time and error last."""
    names = analysis.metric_columns([k for row in rows for k in row.metrics], objectives)
    records = [
        {"fidelity": fidelity_text(row), "status": str(row.status), "reused": bool(row.reused)}
        | {name: row.metrics.get(name) for name in names}
        | {"seconds": round(row.seconds, 3), "error": row.error or ""}
        for row in rows
    ]
    return pd.DataFrame(records)


def training_curves(
    rows: list[TrialRecord],
) -> tuple[dict[str, list[float]], dict[str, tuple[int, float]], dict[str, list[float]]]:
    """The stored loss per epoch of each training run, each trained run's (epochs, test
    accuracy), and its stored test accuracy per epoch, by fidelity."""
    trained = [r for r in rows if r.stage == "train"]
    curves = {fidelity_text(r): r.loss_curve for r in trained if r.loss_curve}
    per_epoch = {fidelity_text(r): r.accuracy_curve for r in trained if r.accuracy_curve}
    accuracy = {
        fidelity_text(r): (r.epochs, float(r.metrics["accuracy"]))
        for r in trained
        if r.trained and r.metrics.get("accuracy") is not None
    }
    return curves, accuracy, per_epoch


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
