"""The Compare page (``?compare=ID,ID``): two or more searches side by side, their fronts on
one plot, their confirmed fronts in one table, their hypervolume against completed trials from
one reference point, and a table of their counts (``comparison``). Refreshed while any of them
runs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from winnow.records import TERMINAL
from winnow.service.store import StoreError
from winnow.ui import analysis, charts, comparison, nav, source
from winnow.ui.overview import COLUMN_HELP
from winnow.ui.search_sections import confirmed_table


def render(search_ids: list[str]) -> None:
    if st.button("← All searches", key="compare-back"):
        nav.go()
    st.title("Compare searches")
    found, missing = [], []
    for search_id in search_ids:
        try:
            found.append(source.store().search(search_id))
        except StoreError:
            missing.append(search_id)
    if missing:
        st.error(f"No such search in this store: {', '.join(missing)}.")
    if len(found) < 2:
        st.info("Choose two or more searches to compare on the Searches page.")
        return
    live = any(s.status not in TERMINAL for s in found)
    ids = tuple(s.id for s in found)
    st.fragment(_body, run_every=source.REFRESH_SECONDS if live else None)(ids)


def _body(search_ids: tuple[str, ...]) -> None:
    versions = tuple(source.version(i) for i in search_ids)
    data = source.comparison_data(source.store().url, search_ids, versions)
    parts, shared = data["parts"], data["shared"]
    _objectives_note(parts, shared, data["same"])
    final = data["history"].groupby("search")["hypervolume"].last().to_dict() if shared else {}
    if shared:
        _fronts(parts, shared)
    _confirmed(parts, data["confirmed"], shared)  # with or without shared objectives
    if shared:
        _history(data["history"], shared, parts, final)
    st.subheader("Counts")
    st.dataframe(
        comparison.counts_table(parts, final),
        hide_index=True,
        column_config=_column_help(),
    )
    st.caption(
        "hypervolume: each search's front by its own objectives and reference (the Searches "
        "table's); shared hypervolume: its completed trials' against the shared reference "
        "point, the figure to compare."
    )


def _objectives_note(parts: list, shared: list, same: bool) -> None:
    if same:
        st.caption(f"Same objectives: {comparison.objectives_text(shared)}.")
        return
    each = "; ".join(
        f"{comparison.label(p)}: {comparison.objectives_text(p.spec.objectives)}" for p in parts
    )
    common = comparison.objectives_text(shared) if shared else "none, so nothing is plotted"
    st.warning(
        f"The objectives differ ({each}). The plots use the objectives every search has: "
        f"{common}. A front drawn there is each search's front by its own objectives."
    )


def _fronts(parts: list, shared: list) -> None:
    st.subheader("Fronts")
    names = [o.name for o in shared]
    if len(names) < 2:
        st.info(f"One shared objective ({names[0]}): a front needs two to be drawn.")
        return
    directions = {o.name: o.direction for o in shared}
    left, right = st.columns(2)
    x = left.selectbox("x", names, index=0, key="compare-x")
    y = right.selectbox("y", [n for n in names if n != x], index=0, key="compare-y")
    fronts = [(comparison.label(p), p.front) for p in parts]
    figure = charts.compare_fronts_figure(fronts, [x, y], [directions[x], directions[y]])
    st.plotly_chart(figure, key="compare-fronts")
    sizes = ", ".join(f"{comparison.label(p)} {len(p.front):,}" for p in parts)
    st.caption(
        f"Front points: {sizes}. Each search's front of single runs, the results every "
        "search has (its hypervolume below is theirs too). Hover a point for its trial."
    )


def _confirmed(parts: list, confirmed: dict[str, pd.DataFrame], shared: list) -> None:
    """The confirmed searches' confirmed fronts side by side on the shared objectives
    (:func:`confirmed_fronts_table`), and a way to each one's whole "Confirmed front"."""
    mine = [p for p in parts if p.search.id in confirmed]
    if not mine:
        return
    st.subheader("Confirmed fronts")
    if shared:
        st.table(confirmed_fronts_table(mine, confirmed, shared), hide_index=True)
        st.caption(
            "Each confirmed search's recipes on its front of confirmed means (strategy.confirm), "
            "on the objectives the searches share: the mean over its further seeds ± the "
            "sample standard deviation, the one-sided 95 % Student-t bound on the worse side, "
            "and the single run that put it on the front (the fronts plotted above are single "
            "runs). The recipes that fell off when confirmed, and the unconfirmed points, are "
            'in the "Confirmed front" table of its Search page:'
        )
    else:
        st.caption("No shared objective: each confirmed front is on its own Search page:")
    for column, part in zip(st.columns(len(mine)), mine, strict=True):
        if column.button(
            f"Confirmed front of {comparison.label(part)}", key=f"conf-{part.search.id}"
        ):
            nav.go(part.search.id)


def confirmed_fronts_table(
    parts: list, frames: dict[str, pd.DataFrame], shared: list
) -> pd.DataFrame:
    """One row per recipe still on its search's front of confirmed means
    (``analysis.CONFIRMED``), search by search in ``winnow pareto``'s order: the search, then
    the Search page's columns (``search_sections.confirmed_table``) on the ``shared``
    objectives, less the standing (every row's is "confirmed")."""
    tables = []
    for part in parts:
        frame = frames[part.search.id]
        kept = frame[frame["standing"] == analysis.CONFIRMED].reset_index(drop=True)
        table = confirmed_table(kept, shared).drop(columns="standing")
        table.insert(0, "search", comparison.label(part))
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def _history(history, shared: list, parts: list, final: dict[str, float]) -> None:
    st.subheader("Hypervolume against completed trials")
    if history.empty:
        st.info("No completed trials yet.")
        return
    # the figure to compare, stated: where each curve ends
    for column, part in zip(st.columns(len(parts)), parts, strict=True):
        name = comparison.label(part)
        column.metric(
            f"shared hypervolume · {name}",
            nav.fmt(final.get(name, 0.0)),
            help=f"After its {part.progress['completed']:,} completed trials.",
        )
    against = st.radio(
        "against", ["completed trials", "time"], horizontal=True, key="compare-against"
    )
    x = "completed" if against == "completed trials" else "seconds"
    st.plotly_chart(charts.compare_history_figure(history, x), key="compare-history")
    reference = ", ".join(f"{o.name} {nav.fmt(o.reference)}" for o in shared)
    st.caption(
        f"One reference point for every search ({reference}): a stated reference where every "
        "search states the same, else 0 for a maximised objective and 1.1 x the worst value "
        "of every search for a minimised one."
    )


def _column_help() -> dict:
    texts = {
        "candidates": COLUMN_HELP["candidates"],
        "proposals": COLUMN_HELP["proposals"],
        "completed": COLUMN_HELP["completed"],
        "training runs": "Training runs started: each rung a candidate trains at is one run.",
        "epochs": "Training epochs of every run started (what budget.max_epochs counts).",
        "hypervolume": COLUMN_HELP["hypervolume"],
        "shared hypervolume": "The completed trials' hypervolume against the shared reference "
        "point (below the history plot).",
    }
    return {name: st.column_config.Column(help=text) for name, text in texts.items()}
