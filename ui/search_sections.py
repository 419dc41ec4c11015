"""The Search page's charts: the front, the histories, the intermediate values (per-epoch
curves), the funnel, the proxy scatter, the evidence ladder, parameter importance, and the
decisions against the objectives (parallel coordinates, slices)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from winnow.records import epochs_text, front_note, importance_warning
from winnow.service.search_spec import Objective, SearchSpec
from winnow.ui import analysis, charts, nav, source

COLOUR_BY = ["fidelity", "normalization", "optimizer", "weight_bits", "activation_bits"]


def pareto(data: dict, spec: SearchSpec) -> None:
    st.subheader("Pareto front")
    points: pd.DataFrame = data["trained"]
    if points.empty:
        st.info("No trained results yet.")
        return
    names = [o.name for o in spec.objectives]
    directions = dict(zip(names, spec.directions, strict=True))
    columns = st.columns(4)
    x = columns[0].selectbox("x", names, index=0, key="pareto-x")
    y = columns[1].selectbox("y", names, index=min(1, len(names) - 1), key="pareto-y")
    z_choices = ["(none)", *[n for n in names if n not in (x, y)]]
    z = columns[2].selectbox("z (3-D)", z_choices, key="pareto-z")
    colour = columns[3].selectbox("colour by", COLOUR_BY, key="pareto-colour")
    axes = [x, y] if z == "(none)" else [x, y, z]
    confirmed: pd.DataFrame = data.get("confirmed_front", pd.DataFrame())
    figure = charts.pareto_figure(points, axes, [directions[a] for a in axes], colour)
    if len(axes) == 2 and not confirmed.empty:
        charts.add_confirmed(figure, confirmed, axes)
    event = st.plotly_chart(
        figure, key=nav.key("pareto"), on_select="rerun", selection_mode="points"
    )
    front = int(points["on_front"].sum())
    note = front_note(data.get("front_epochs"), spec.strategy.rungs[-1])
    where = f"the {note}" if note else "the front of the top rung"
    st.caption(
        f"{len(points):,} trained results at every rung; {front} on {where} (opaque), the "
        "rest faded. Click a point to open its trial."
        + (CONFIRMED_NOTE if len(axes) == 2 and not confirmed.empty else "")
    )
    _open_selected(event)
    confirmed_front(confirmed, spec)


CONFIRMED_NOTE = (
    " Diamonds: the confirmed recipes' means, with error bars of one standard deviation; an "
    "open diamond fell off the front of the confirmed means."
)


def confirmed_front(frame: pd.DataFrame, spec: SearchSpec) -> None:
    """The front's confirmation figures (``analysis.confirmed_front``), in the order
    ``winnow pareto`` ranks the front; nothing for a search without confirmation."""
    if frame.empty:
        return
    st.subheader("Confirmed front")
    # st.table's hide_index: Streamlit 1.56 (the floor in pyproject.toml)
    st.table(confirmed_table(frame, spec.objectives), hide_index=True)
    st.caption(confirmed_caption(frame))


def confirmed_caption(frame: pd.DataFrame) -> str:
    """What the "Confirmed front" table holds, in the terms its columns use."""
    done = frame[frame["standing"] != analysis.SINGLE]
    fell = int((frame["standing"] == analysis.FELL_OFF).sum())
    beaten = int(frame["dominated_by"].notna().sum())
    if done.empty:
        confirmed = f"None of the {len(frame):,} front points is confirmed yet"
    else:
        confirmed = (
            f"{len(done):,} of {len(frame):,} front points confirmed, each trained again with "
            f"{_seeds_text(done['seeds'])}; their values are the means over those runs"
        )
    one_run = int((done["seeds"] < 2).sum())  # a partly confirmed recipe: no std, no bound
    spread = "" if done.empty else " (± the sample standard deviation"
    if one_run:
        spread += f"; {one_run:,} with one successful run have no ± and no bound"
    spread += ")" if spread else ""
    return (
        f"{confirmed}{spread}. Bound: the one-sided 95 % Student-t bound on the worse side of "
        "the mean (lower for an objective to maximise, upper for one to minimise). Single "
        "run: the run that put it on the front (left out of the mean: it was picked for being "
        "good). Standing compares the confirmed means with one another: "
        f"{fell:,} fell off the front when confirmed (another confirmed recipe's means "
        "dominate theirs); they rank last, as winnow pareto ranks them. "
        f"{beaten:,} confirmed recipes' means are dominated by an unconfirmed single run "
        "(note), a lucky figure nobody trained again."
    )


def _seeds_text(seeds: pd.Series) -> str:
    """``3 further seeds``, ``2 or 3 further seeds`` (a recipe partly confirmed)."""
    counts = sorted(set(int(n) for n in seeds))
    if not counts:
        return "no further seed"
    text = " or ".join(str(n) for n in counts)
    return f"{text} further seed{'s' if counts != [1] else ''}"


def bound_label(objective: Objective) -> str:
    """The bound's column: ``accuracy lower bound`` for a maximised objective, ``model_bytes
    upper bound`` for a minimised one (``confirmed.figures``' ``lower``: the worse side)."""
    side = "lower" if objective.direction == "maximize" else "upper"
    return f"{objective.name} {side} bound"


def confirmed_table(frame: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """The shown table: trial, standing, seeds, a note and per objective its value (a mean ±
    std), bound (:func:`bound_label`) and single run, as text ("—" where there is none; an
    integer objective's large values to the unit: :func:`_number`)."""
    shown = pd.DataFrame(
        {
            "trial": [f"#{n}" for n in frame["number"]],
            "standing": frame["standing"],
            "seeds": frame["seeds"].astype(int),
            "note": [_note(n) for n in frame["dominated_by"]],
        }
    )
    for o in objectives:
        name = o.name
        whole = _integral(frame[f"{name} single run"])
        shown[name] = [
            _number(v, whole) + ("" if pd.isna(sd) else f" ± {_number(sd, whole)}")
            for v, sd in zip(frame[name], frame[f"{name} std"], strict=True)
        ]
        shown[bound_label(o)] = [_text(v, whole) for v in frame[f"{name} lower"]]
        shown[f"{name} single run"] = [_text(v, whole) for v in frame[f"{name} single run"]]
    return shown


def _note(number) -> str:
    if number is None or pd.isna(number):
        return ""
    return f"dominated by unconfirmed single run #{int(number)}"


def _integral(values: pd.Series) -> bool:
    """An integer objective (bytes, params): every single run a whole number."""
    return bool(len(values)) and all(float(v).is_integer() for v in values)


def _number(value, whole: bool) -> str:
    """``nav.fmt``, except an integer objective's values from 1,000 up, shown to the unit with
    thousands separators (``1,234,567``, not ``nav.fmt``'s ``1.23457e+06``); below that its
    decimals stay (a standard deviation of 0.47 bytes)."""
    value = float(value)
    return f"{value:,.0f}" if whole and abs(value) >= 1000 else nav.fmt(value)


def _text(value, whole: bool = False) -> str:
    return "—" if value is None or pd.isna(value) else _number(value, whole)


def _open_selected(event) -> None:
    selected = event.selection.points if event else []
    for point in selected:
        custom = point.get("customdata")
        if custom:
            nav.go(st.query_params["search"], int(float(custom[0])))


def history(data: dict) -> None:
    st.subheader("Hypervolume and best so far")
    frame = data["history"]
    if frame.empty:
        st.info("No completed trials yet.")
        return
    axis = st.radio("against", ["completed trials", "time"], horizontal=True, key="history-x")
    figure = charts.history_figure(frame, "time" if axis == "time" else "completed")
    st.plotly_chart(figure, key="history")


CURVE_LINES = 20  # the learning curves drawn: a legible chart, and a light one at any size


def intermediate_values(data: dict, spec: SearchSpec) -> None:
    """The per-epoch test accuracy and training loss of the best trials, one line each (what
    optuna-dashboard calls intermediate values)."""
    st.subheader("Intermediate values")
    trained: pd.DataFrame = data["trained"]
    if trained.empty or not spec.objectives:
        st.info("No trained results yet.")
        return
    objective, direction = spec.objectives[0].name, spec.directions[0]
    best = analysis.curve_rows(trained, objective, direction, CURVE_LINES)
    url, search_id = source.store().url, data["search"].id
    ids = tuple(int(i) for i in best["id"])
    frame = source.curves(url, source.version(search_id), ids)
    order = {row_id: rank for rank, row_id in enumerate(ids)}  # best first in the legend
    frame = frame.sort_values("id", key=lambda c: c.map(order))
    if not has_curves(frame):
        st.info(source.NO_CURVES_THROUGH_SERVER if source.through_server() else NO_CURVES)
        return
    st.plotly_chart(charts.intermediate_figure(frame), key="intermediate")
    epochs = epochs_text(int(best["epochs"].iloc[0])) if not best.empty else ""
    of = f"{len(best):,} of {len(trained[trained['front_rung']]):,}"
    st.caption(
        f"The best {of} results trained for {epochs} by {objective}, one line each: the "
        "test accuracy after every epoch (on the test split the final accuracy is measured "
        "on: its learning curve, never used for a decision) and the training loss (the mean "
        f"over each epoch's batches). At most {CURVE_LINES} are drawn; a continued rung's "
        "curve holds the earlier rungs' epochs. A run trained with "
        "`task.eval_every_epoch: false` (or by a trainer that does not report them) has no "
        "accuracy line, unless its result was reused from the task's shared cache, where a "
        "search that measured them trained it: its stored curve is shown."
    )


NO_CURVES = "These results store no per-epoch loss or accuracy."


def has_curves(frame: pd.DataFrame) -> bool:
    """Whether any row of ``reads.curves`` holds a loss or an accuracy to draw."""
    columns = ("loss_curve", "accuracy_curve")
    return any(len(values) for column in columns for values in frame.get(column, []))


def cascade(data: dict, spec: SearchSpec) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("The cascade")
        funnel = data["funnel"]
        st.plotly_chart(charts.funnel_figure(funnel), key="funnel")
        st.caption(
            f"{funnel.attrs['duplicates']:,} hash hits (reused results), "
            f"{funnel.attrs['screened_out']:,} screened out by proxies."
        )
    with right:
        st.subheader("Proxies vs trained")
        _proxies(data, spec)


def _proxies(data: dict, spec: SearchSpec) -> None:
    proxies, trained = data["proxies"], data["trained"]
    choices = [c for c in proxies.columns if c != "number"]
    if not choices or trained.empty:
        st.info("No proxy-scored candidate has been trained yet.")
        return
    rungs = sorted(trained["epochs"].unique())
    left, middle, right = st.columns(3)
    proxy = left.selectbox("proxy", choices, key="proxy-name")
    epochs = middle.selectbox("trained for (epochs)", rungs, index=len(rungs) - 1, key="proxy-ep")
    target = right.selectbox("objective", [o.name for o in spec.objectives], key="proxy-target")
    at_rung = trained[(trained["epochs"] == epochs) & ~trained["reused"].astype(bool)]
    joined = at_rung.merge(proxies[["number", proxy]], on="number").dropna(subset=[proxy])
    result = analysis.correlation(joined[proxy], joined[target])
    scale = analysis.axis_scale(joined[proxy])
    st.plotly_chart(charts.proxy_figure(joined, proxy, target, scale), key="proxy-scatter")
    text = ", ".join(
        f"{name} {nav.fmt(result[name]) if result[name] is not None else 'n/a'}"
        for name in ("spearman", "kendall")
    )
    st.markdown(f"**{text}** over {result['n']} candidates of this search.")
    if scale != "linear":
        st.caption(SCALE_NOTES[scale].format(proxy=proxy))


SCALE_NOTES = {
    "log": "{proxy}'s values span orders of magnitude: its axis is logarithmic.",
    "symlog": "{proxy}'s values span orders of magnitude and include zero or negative values: "
    "its axis is a symmetric log, sign(x)·log10(1 + |x|/t) with t the smallest non-zero |x| "
    "(linear near 0, logarithmic beyond; hover shows the raw value). The rank correlations "
    "are unchanged by it.",
}


def evidence_ladder(data: dict) -> None:
    """Each fidelity's Kendall tau against the completed trials (``readout.evidence_ladder``)."""
    ladder = data["evidence_ladder"]
    if not ladder:  # a plain strategy: no cheaper evidence to measure
        return
    st.subheader("Evidence ladder: Kendall tau against trained results")
    if not any(t["tau"] is not None for t in ladder):
        st.info("Fewer than 5 completed trials that the proxy screen scored: no tau yet.")
        return
    table = pd.DataFrame(
        {
            "tier": [t["tier"] for t in ladder],
            "kendall tau": [t["tau"] for t in ladder],
            "candidates": [t["n"] for t in ladder],
            "below params": [t["below_params"] for t in ladder],
            "weight 0 in the screen": [bool(t.get("zero_weight")) for t in ladder],
        }
    )
    st.dataframe(table, hide_index=True)
    st.caption(
        "How each tier ranks the completed trials the proxy screen scored (the first "
        "objective at the top rung): params is the baseline, measured again on each tier's own "
        "candidates (below params: a lower tau there). Weight 0 in the screen: the proxies the "
        "screen's latest calibrated fit zeroed, by the same rule on the results it had then "
        "(for supernet: the supernet stage's fit); ensemble is the screen's score when it "
        "decided, combined the supernet stage's (proxies and inherited accuracy), each where "
        "a calibrated fit gave it."
    )


EVALUATOR_NAMES = {"ped-anova": "PED-ANOVA", "fanova": "fANOVA"}
PARALLEL_LINES = 2000  # lines a parallel-coordinates figure draws at most: readable, light


def importance(data: dict, spec: SearchSpec) -> None:
    """Which parameters and axes matter for an objective at one fidelity
    (``source.importance_of``: Optuna's evaluators over the trained results), computed when
    asked for: a fragment of its own, so choosing redraws this section only."""
    st.subheader("Parameter importance")
    trained: pd.DataFrame = data["trained"]
    if trained.empty or not spec.objectives:
        st.info("No trained results yet.")
        return
    if source.spec_note(data["search"].spec_json):  # a stand-in spec: no space to rebuild from
        st.info("Importance needs the search's space, and its stored spec no longer validates.")
        return
    rungs = sorted(int(e) for e in trained["epochs"].unique())
    st.fragment(_importance)(data["search"].id, [o.name for o in spec.objectives], rungs)


def _importance(search_id: str, objectives: list[str], rungs: list[int]) -> None:
    if not st.toggle("Compute importance", key="imp-on", help="Optuna's evaluators: a second"):
        st.caption("Importance is computed when asked for (it rebuilds a study per fidelity).")
        return
    left, middle, right = st.columns(3)
    objective = left.selectbox("objective", objectives, key="imp-target")
    epochs = middle.selectbox(
        "at fidelity", rungs, index=len(rungs) - 1, format_func=epochs_text, key="imp-epochs"
    )
    evaluator = right.radio(
        "evaluator",
        list(EVALUATOR_NAMES),
        format_func=EVALUATOR_NAMES.get,
        horizontal=True,
        key="imp-evaluator",
    )
    url, version = source.store().url, source.version(search_id)
    size = source.results_at(url, search_id, version, epochs)
    found = source.importance_of(url, search_id, version, size, epochs, objective, evaluator)
    if found is None or not found.params:
        why = "too few trained results" if found is None else "no parameter explains it"
        st.info(f"No importance for {objective} at {epochs_text(epochs)}: {why}.")
        return
    from winnow.service.engine.importance import axis_of

    bars, axes = st.columns([3, 1])
    bars.plotly_chart(charts.importance_figure(found.params, axis_of), key="importance")
    axes.dataframe(
        pd.DataFrame({"axis": list(found.axes), "importance": list(found.axes.values())}),
        hide_index=True,
        key="importance-axes",
    )
    st.caption(_importance_caption(found, EVALUATOR_NAMES[evaluator]))


def _importance_caption(found, evaluator: str) -> str:
    """What the bars are over: a sample, or the results that still parse, and how to read them."""
    if found.sampled:
        over = f"a random {found.trials:,} of {found.results:,}"
    elif found.trials < found.results:
        over = f"{found.trials:,} of {found.results:,} (the others no longer parse)"
    else:
        over = f"{found.trials:,}"
    left_out = ", ".join(found.left_out) or "none"
    warning = importance_warning(found.trials)
    noisy = f" {warning[0].upper()}{warning[1:]}." if warning else ""
    top, weight = next(iter(found.params.items()))  # the evaluator's order: most important first
    return (
        f"Most important: {top} ({weight:.2f}). "
        f"{evaluator} (Optuna's importance evaluator) over {over} results trained for "
        f"{epochs_text(found.epochs)}, for {found.objective}, by decision path (one "
        "optimizer.lr whichever optimizer). An axis is the sum of its parameters', so an axis "
        "with many parameters collects more. Only parameters every one of these trials has "
        f"are ranked; left out as conditional: {left_out}.{noisy}"
    )


def parameters(data: dict, spec: SearchSpec) -> None:
    """Parallel coordinates over the varying decisions and the objectives, and a slice plot of
    one decision against one objective, at one fidelity (``source.parameters_at``)."""
    st.subheader("Parameters and objectives")
    trained: pd.DataFrame = data["trained"]
    if trained.empty or not spec.objectives or source.spec_note(data["search"].spec_json):
        st.info("No trained results to plot (or no space to read their decisions by).")
        return
    rungs = sorted(int(e) for e in trained["epochs"].unique())
    epochs = st.selectbox(
        "at fidelity", rungs, index=len(rungs) - 1, format_func=epochs_text, key="par-epochs"
    )
    search_id = data["search"].id
    url, version = source.store().url, source.version(search_id)
    size = source.results_at(url, search_id, version, epochs)
    frame = source.parameters_at(url, search_id, version, size, epochs)
    names = [o.name for o in spec.objectives]
    params = [c for c in frame.columns if c not in ("number", *names)]
    if frame.empty or not params:
        st.info(f"No trained results with varying decisions at {epochs_text(epochs)}.")
        return
    every = [p for p in params if frame[p].notna().all()]  # a line needs every axis
    lines = frame
    if len(frame) > PARALLEL_LINES:  # a lighter figure; a seeded sample, the same each refresh
        lines = frame.sample(n=PARALLEL_LINES, random_state=0).sort_index()
    st.plotly_chart(charts.parallel_figure(lines, every, names), key="parallel")
    partial = ", ".join(p for p in params if p not in every) or "none"
    shown = (
        f"{len(frame):,}"
        if len(lines) == len(frame)
        else f"a random {len(lines):,} of {len(frame):,}"
    )
    st.caption(
        f"{shown} results trained for {epochs_text(epochs)}, one line each, across the "
        f"decisions that vary among them and the objectives, coloured by {names[0]}; drag along "
        "an axis to filter. Choices are spread in name order; a decision spanning orders of "
        "magnitude (a learning rate) is drawn as its log10. Decisions only some results have "
        f"(the slice plot below shows them): {partial}."
    )
    left, right = st.columns(2)
    param = left.selectbox("decision", params, key="slice-param")
    objective = right.selectbox("objective", names, key="slice-objective")
    direction = dict(zip(names, spec.directions, strict=True))[objective]
    st.plotly_chart(charts.slice_figure(frame, param, objective, direction), key="slice")
    st.caption(_slice_caption(frame, param, objective, direction))


def _slice_caption(frame: pd.DataFrame, param: str, objective: str, direction: str) -> str:
    """What the slice plot holds: how many results have the decision, and the best of them."""
    part = frame.dropna(subset=[param, objective])
    if part.empty:
        return f"No result has {param}."
    best = part.loc[
        part[objective].idxmax() if direction == "maximize" else part[objective].idxmin()
    ]
    return (
        f"{len(part):,} results with {param}, one point each; the best {objective}, "
        f"{nav.fmt(float(best[objective]))}, is trial #{int(best['number'])}'s, at {param} "
        f"{nav.fmt(best[param])}."
    )


def timeline(url: str, search_id: str) -> None:
    """The latest runs per worker: host and device, in lanes (``analysis.worker_lanes``)."""
    st.subheader("Timeline of runs per worker")
    runs = source.timeline(url, search_id, source.version(search_id))
    if runs.empty:
        st.info("No run has finished yet.")
        return
    st.plotly_chart(charts.timeline_figure(runs), key="timeline")
    machines = runs.groupby("machine")["lane"].nunique()
    each = ", ".join(f"{m}: {n} at once" for m, n in machines.items())
    latest = f"the latest {len(runs):,}" if len(runs) == source.TIMELINE_RUNS else f"{len(runs):,}"
    st.caption(
        f"{latest} finished runs (proxy scoring and training; a hash hit runs nothing), each "
        f"from its start (finish less its seconds) to its finish; lanes per machine ({each}) "
        "are its runs at once, each run in the first lane free when it started."
    )
