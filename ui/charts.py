"""Plotly figures. Every trace of a trained result carries the
candidate number as its first ``customdata`` column: clicking a point opens that trial."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from winnow.ui import analysis

FADED = 0.18  # dominated points stay visible (where the search looked) but out of the way
HOVER = "trial %{customdata[0]}<br>%{customdata[1]}<extra>%{fullData.name}</extra>"


def _axis_title(name: str, direction: str) -> str:
    return f"{name} ({'higher' if direction == 'maximize' else 'lower'} is better)"


def pareto_figure(
    points: pd.DataFrame, axes: Sequence[str], directions: Sequence[str], color: str
) -> go.Figure:
    """Trained results on two (or three) objectives, the front opaque and joined by a line
    (2-D), the dominated faded, coloured by ``color`` (a column: fidelity or an axis)."""
    three_d = len(axes) == 3
    figure = go.Figure()
    groups = sorted(points[color].astype(str).unique())
    for on_front in (False, True):  # the front last: drawn on top, and first to be clicked
        for i, group in enumerate(groups):
            part = points[(points[color].astype(str) == group) & (points["on_front"] == on_front)]
            tint = qualitative.Plotly[i % len(qualitative.Plotly)]
            if not part.empty:
                figure.add_trace(_points(part, axes, group, tint, on_front, three_d))
    if not three_d:
        front = points[points["on_front"]].sort_values(axes[0])
        figure.add_trace(
            go.Scatter(
                x=front[axes[0]],
                y=front[axes[1]],
                mode="lines",
                name="Pareto front",
                line={"color": "#444", "width": 1.5, "shape": _steps(directions[0])},
                hoverinfo="skip",
            )
        )
    titles = [_axis_title(a, d) for a, d in zip(axes, directions, strict=True)]
    layout = {"legend_title_text": color, "margin": {"l": 10, "r": 10, "t": 30, "b": 10}}
    if three_d:
        names = ("xaxis_title", "yaxis_title", "zaxis_title")
        figure.update_layout(scene=dict(zip(names, titles, strict=True)), **layout)
    else:
        figure.update_layout(xaxis_title=titles[0], yaxis_title=titles[1], **layout)
    return figure


def add_confirmed(figure: go.Figure, confirmed: pd.DataFrame, axes: Sequence[str]) -> None:
    """The confirmed recipes (``analysis.confirmed_front``) on a 2-D Pareto chart: diamonds
    at their means with error bars of one standard deviation, open where the recipe fell off
    the front when confirmed; clicking one opens its trial, as any point."""
    done = confirmed[confirmed["standing"] != analysis.SINGLE]
    for standing, symbol in ((analysis.CONFIRMED, "diamond"), (analysis.FELL_OFF, "diamond-open")):
        part = done[done["standing"] == standing]
        if part.empty:
            continue
        bars = [
            {"type": "data", "array": part[f"{a} std"].fillna(0.0), "visible": True} for a in axes
        ]
        text = [f"mean of {n} seeds ({standing})" for n in part["seeds"]]
        figure.add_trace(
            go.Scatter(
                x=part[axes[0]],
                y=part[axes[1]],
                error_x=bars[0],
                error_y=bars[1],
                mode="markers",
                name=f"confirmed mean ({standing})"
                if standing == analysis.FELL_OFF
                else "confirmed mean",
                marker={"symbol": symbol, "size": 11, "color": "#111", "line": {"width": 1.5}},
                customdata=np.stack([part["number"], text], axis=-1),
                hovertemplate=HOVER,
            )
        )


def _steps(x_direction: str) -> str:
    """The staircase that bounds what the front dominates: between two front points in order
    of x, its corner takes the worse value of each (for a maximised x, the first point's)."""
    return "vh" if x_direction == "maximize" else "hv"


def _points(part: pd.DataFrame, axes, group: str, tint: str, on_front: bool, three_d: bool):
    marker = {"color": tint, "size": 9 if on_front else 6, "opacity": 1.0 if on_front else FADED}
    if on_front:
        marker["line"] = {"color": "#222", "width": 1}
    common = {
        "mode": "markers",
        "name": group if on_front else f"{group} (dominated)",
        "legendgroup": group,
        "marker": marker,
        "customdata": np.stack([part["number"], part["recipe"]], axis=-1),
        "hovertemplate": HOVER,
    }
    if three_d:
        marker["size"] = 5 if on_front else 3
        return go.Scatter3d(x=part[axes[0]], y=part[axes[1]], z=part[axes[2]], **common)
    return go.Scatter(x=part[axes[0]], y=part[axes[1]], **common)


def history_figure(history: pd.DataFrame, x: str) -> go.Figure:
    """Hypervolume and each objective's best so far, against completed trials or time."""
    columns = ["hypervolume", *[c for c in history.columns if c.startswith("best ")]]
    figure = make_subplots(rows=len(columns), cols=1, shared_xaxes=True, subplot_titles=columns)
    xs = pd.to_datetime(history["time"], unit="s") if x == "time" else history["completed"]
    for row, column in enumerate(columns, start=1):
        figure.add_trace(
            go.Scatter(x=xs, y=history[column], mode="lines", line_shape="hv", name=column),
            row=row,
            col=1,
        )
    figure.update_layout(
        height=180 * len(columns), showlegend=False, margin={"l": 10, "r": 10, "t": 30, "b": 10}
    )
    figure.update_xaxes(title_text="time" if x == "time" else "completed trials", row=len(columns))
    return figure


def funnel_figure(funnel: pd.DataFrame) -> go.Figure:
    figure = go.Figure(go.Funnel(y=funnel["stage"], x=funnel["candidates"], textinfo="value"))
    figure.update_layout(margin={"l": 10, "r": 10, "t": 10, "b": 10}, height=320)
    return figure


def proxy_figure(data: pd.DataFrame, proxy: str, target: str, scale: str = "linear") -> go.Figure:
    """A proxy against a trained objective; ``scale`` (``analysis.axis_scale``) of the proxy's
    axis: ``log``, or ``symlog`` (values drawn as ``analysis.symlog``, ticks at powers of ten,
    the raw value in the hover)."""
    xs = data[proxy].to_numpy(dtype=float)
    axis: dict = {"title": proxy, "type": "log" if scale == "log" else "linear"}
    if scale == "symlog":
        threshold = analysis.symlog_threshold(xs)
        axis = {"title": f"{proxy} (symmetric log scale)", **_symlog_ticks(xs, threshold)}
        xs = analysis.symlog(xs, threshold)
    figure = go.Figure(
        go.Scatter(
            x=xs,
            y=data[target],
            mode="markers",
            marker={"size": 5, "opacity": 0.5},
            customdata=data[["number", "recipe", proxy]].to_numpy(dtype=object),
            hovertemplate="trial %{customdata[0]}<br>" + proxy + " %{customdata[2]:.4g}<br>"
            "%{customdata[1]}<extra></extra>",
            name=proxy,
        )
    )
    figure.update_layout(
        xaxis=axis, yaxis_title=target, margin={"l": 10, "r": 10, "t": 10, "b": 10}
    )
    return figure


def _symlog_ticks(values: np.ndarray, threshold: float) -> dict:
    """Ticks at 0 and at the powers of ten each sign's values reach, on the symlog axis."""
    finite = values[np.isfinite(values)]
    low = int(np.floor(np.log10(threshold)))
    signed = [0.0]
    for sign, part in ((1.0, finite[finite > 0]), (-1.0, -finite[finite < 0])):
        if len(part):
            top = int(np.ceil(np.log10(part.max())))
            step = max(1, (top - low) // 6)  # about six decades labelled per side
            signed += [sign * 10.0**k for k in range(low, top + 1, step)]
    return {
        "tickvals": analysis.symlog(signed, threshold).tolist(),
        "ticktext": [_power_text(v) for v in signed],
    }


def _power_text(value: float) -> str:
    """``0``, ``1e49``, ``-1e4``: a tick at a signed power of ten."""
    if value == 0:
        return "0"
    return f"{'-' if value < 0 else ''}1e{round(np.log10(abs(value)))}"


def _dimension(values: pd.Series, label: str) -> dict:
    """One axis of the parallel coordinates: numbers as they are (log10 when they span orders
    of magnitude, ``analysis.axis_scale``), choices as ordered codes labelled by their values."""
    if analysis.is_numeric(values):
        numbers = values.astype(float)
        if analysis.axis_scale(numbers) == "log":
            return {"label": f"log10 {label}", "values": np.log10(numbers)}
        return {"label": label, "values": numbers}
    text = values.astype(str)
    choices = sorted(text.unique())
    codes = {c: i for i, c in enumerate(choices)}
    return {
        "label": label,
        "values": [codes[t] for t in text],
        "tickvals": list(range(len(choices))),
        "ticktext": choices,
    }


def parallel_figure(
    frame: pd.DataFrame, params: Sequence[str], objectives: Sequence[str]
) -> go.Figure:
    """Each trained result as a line across its decisions and objectives (optuna-dashboard's
    parallel coordinates), coloured by the first objective."""
    dimensions = [_dimension(frame[p], p) for p in params]
    dimensions += [_dimension(frame[o], o) for o in objectives]
    first = frame[objectives[0]].astype(float)
    figure = go.Figure(
        go.Parcoords(
            dimensions=dimensions,
            line={
                "color": first,
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": {"text": objectives[0]}},
            },
        )
    )
    figure.update_layout(height=420, margin={"l": 60, "r": 60, "t": 60, "b": 20})
    return figure


def slice_figure(frame: pd.DataFrame, param: str, objective: str, direction: str) -> go.Figure:
    """One decision against one objective, every trained result a point (optuna-dashboard's
    slice plot); numbers on a numeric axis (logarithmic when they span orders of magnitude),
    choices as categories."""
    part = frame.dropna(subset=[param, objective])
    numeric = analysis.is_numeric(part[param])
    xs = part[param] if numeric else part[param].astype(str)
    kind = analysis.axis_scale(xs) if numeric else "category"
    figure = go.Figure(
        go.Scatter(
            x=xs,
            y=part[objective],
            mode="markers",
            marker={"size": 6, "opacity": 0.5},
            customdata=part[["number"]].to_numpy(),
            hovertemplate="trial %{customdata[0]}<br>%{x}: %{y:.4g}<extra></extra>",
            name=param,
        )
    )
    figure.update_layout(
        xaxis={
            "title": param,
            "type": {"log": "log", "category": "category"}.get(kind, "linear"),
        },
        yaxis_title=_axis_title(objective, direction),
        height=320,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
    )
    return figure


AXIS_COLOURS = {"architecture": 0, "normalization": 1, "optimizer": 2, "quantization": 3}


def importance_figure(params: dict[str, float], axis_of) -> go.Figure:
    """Horizontal bars of each parameter's importance, the most important on top, coloured by
    its axis (``axis_of(name)``)."""
    names = list(params)[::-1]  # plotly draws the first bar at the bottom
    tints = [
        qualitative.Plotly[AXIS_COLOURS.get(axis_of(n), 4) % len(qualitative.Plotly)] for n in names
    ]
    figure = go.Figure(
        go.Bar(
            x=[params[n] for n in names],
            y=names,
            orientation="h",
            marker={"color": tints},
            text=[f"{params[n]:.2f}" for n in names],
            textposition="auto",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    figure.update_layout(
        xaxis_title="importance (sums to 1)",
        height=max(220, 28 * len(names) + 100),
        # room above the top bar for plotly's toolbar, which covered its value
        margin={"l": 10, "r": 10, "t": 36, "b": 10},
    )
    return figure


# Below the plot, where plotly's toolbar (top right) never covers it.
LEGEND_BELOW = {"orientation": "h", "yanchor": "top", "y": -0.3, "xanchor": "left", "x": 0}


def loss_figure(
    curves: dict[str, list[float]],
    accuracy: dict[str, tuple[int, float]] | None = None,
    epoch_accuracy: dict[str, list[float]] | None = None,
) -> go.Figure:
    """Each training run's stored loss per epoch (``curves``, by fidelity) and, beside it, its
    test accuracy after each epoch (``epoch_accuracy``, by fidelity, where measured) with the
    accuracy each run measured at its end (``accuracy``: fidelity -> (epochs, accuracy)):
    what a trial's rows hold, nothing interpolated."""
    accuracy, epoch_accuracy = accuracy or {}, epoch_accuracy or {}
    titles = ["training loss per epoch", "test accuracy per epoch and at each run's end"]
    columns = 2 if accuracy or epoch_accuracy else 1
    figure = make_subplots(rows=1, cols=columns, subplot_titles=titles[:columns])
    names = list(dict.fromkeys([*curves, *epoch_accuracy]))
    for i, name in enumerate(names):
        line = {"color": qualitative.Plotly[i % len(qualitative.Plotly)]}
        for col, values in ((1, curves.get(name)), (2, epoch_accuracy.get(name))):
            if values:
                figure.add_trace(
                    go.Scatter(
                        x=list(range(1, len(values) + 1)),
                        y=values,
                        mode="lines+markers",
                        name=name,
                        legendgroup=name,
                        showlegend=col == 1 or name not in curves,
                        line=line,
                    ),
                    row=1,
                    col=col,
                )
    if accuracy:
        ends = list(accuracy)
        figure.add_trace(
            go.Scatter(
                x=[accuracy[n][0] for n in ends],
                y=[accuracy[n][1] for n in ends],
                text=ends,
                mode="markers",  # each point is a run of its own: no line joins them
                name="test accuracy at the end",
                marker={"color": "#444", "size": 9, "symbol": "diamond-open"},
                hovertemplate="%{text}: %{y:.4g}<extra></extra>",
            ),
            row=1,
            col=2,
        )
    if columns == 2:
        figure.update_yaxes(title_text="test accuracy", row=1, col=2)
        figure.update_xaxes(title_text="epoch", row=1, col=2)
    figure.update_xaxes(title_text="epoch", row=1, col=1)
    figure.update_yaxes(title_text="training loss", row=1, col=1)
    figure.update_layout(
        height=340, legend=LEGEND_BELOW, margin={"l": 10, "r": 10, "t": 30, "b": 10}
    )
    return figure


def intermediate_figure(frame: pd.DataFrame) -> go.Figure:
    """One line per row of ``frame`` (``reads.curves``: ``number``, ``loss_curve``,
    ``accuracy_curve``), its test accuracy per epoch on the left and its training loss per
    epoch on the right, a colour per trial (optuna-dashboard's intermediate values). The
    traces are added in one ``add_traces`` call: one ``add_trace`` each costs some 4 ms of
    plotly's validation, most of the chart's time."""
    titles = ["test accuracy per epoch", "training loss per epoch"]
    figure = make_subplots(rows=1, cols=2, subplot_titles=titles)
    traces, columns = [], []
    rows = zip(frame["number"], frame["accuracy_curve"], frame["loss_curve"], strict=True)
    for i, (number, accuracy, loss) in enumerate(rows):
        name, line = f"trial {int(number)}", {"color": qualitative.Plotly[i % 10], "width": 1.5}
        for col, values in ((1, accuracy), (2, loss)):
            if values:
                traces.append(_epoch_trace(name, values, line, col == 1 or not accuracy))
                columns.append(col)
    if traces:
        figure.add_traces(traces, rows=[1] * len(traces), cols=columns)
    figure.update_xaxes(title_text="epoch")
    figure.update_yaxes(title_text="test accuracy", row=1, col=1)
    figure.update_yaxes(title_text="training loss", row=1, col=2)
    # the top margin leaves plotly's toolbar (top right) a row of its own above the right
    # subplot's title, which it covered at 30 px
    figure.update_layout(
        height=400, legend=LEGEND_BELOW, margin={"l": 10, "r": 10, "t": 60, "b": 10}
    )
    return figure


def _epoch_trace(name: str, values: list[float], line: dict, legend: bool) -> go.Scatter:
    return go.Scatter(
        x=list(range(1, len(values) + 1)),
        y=values,
        mode="lines+markers",
        name=name,
        legendgroup=name,
        showlegend=legend,
        line=line,
        marker={"size": 4},
        hovertemplate=f"{name}, epoch %{{x}}: %{{y:.4g}}<extra></extra>",
    )


def compare_fronts_figure(
    fronts: Sequence[tuple[str, pd.DataFrame]], axes: Sequence[str], directions: Sequence[str]
) -> go.Figure:
    """Each search's front (``(label, frame)``: ``number`` and objective columns) on two
    objectives, one colour per search, its points joined by the staircase they dominate."""
    figure = go.Figure()
    for i, (label, front) in enumerate(fronts):
        tint = qualitative.Plotly[i % len(qualitative.Plotly)]
        ordered = front.sort_values(list(axes))
        figure.add_trace(
            go.Scatter(
                x=ordered[axes[0]],
                y=ordered[axes[1]],
                mode="lines+markers",
                name=label,
                marker={"color": tint, "size": 8, "line": {"color": "#222", "width": 1}},
                line={"color": tint, "width": 1.5, "shape": _steps(directions[0])},
                customdata=ordered[["number"]].to_numpy(),
                hovertemplate="trial %{customdata[0]}<extra>%{fullData.name}</extra>",
            )
        )
    titles = [_axis_title(a, d) for a, d in zip(axes, directions, strict=True)]
    figure.update_layout(
        xaxis_title=titles[0],
        yaxis_title=titles[1],
        legend={"orientation": "h", "y": -0.2},  # below the plot, clear of the toolbar
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
    )
    return figure


def compare_history_figure(history: pd.DataFrame, x: str = "completed") -> go.Figure:
    """Each search's hypervolume (``comparison.hypervolume_histories``) against its completed
    trials (``x``: ``completed``) or the seconds since it was created (``seconds``), one line
    per search."""
    figure = go.Figure()
    for label, part in history.groupby("search", sort=False):
        figure.add_trace(
            go.Scatter(
                x=part[x],
                y=part["hypervolume"],
                mode="lines",
                line_shape="hv",
                name=str(label),
            )
        )
    figure.update_layout(
        xaxis_title="completed trials" if x == "completed" else "seconds since the search began",
        yaxis_title="hypervolume (shared reference point)",
        legend={"orientation": "h", "y": -0.2},
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
    )
    return figure


def timeline_figure(lanes: pd.DataFrame) -> go.Figure:
    """Each run (``analysis.worker_lanes``) as a bar from its start to its end in its worker
    lane, coloured by fidelity (``analysis.fidelity_label``)."""
    figure = go.Figure()
    fidelity = [
        analysis.fidelity_label(s, e) for s, e in zip(lanes["stage"], lanes["epochs"], strict=True)
    ]
    lanes = lanes.assign(fidelity=fidelity)
    for i, (label, part) in enumerate(lanes.groupby("fidelity", sort=True)):
        figure.add_trace(
            go.Bar(
                base=pd.to_datetime(part["started"], unit="s"),
                x=(part["seconds"] * 1000).round(3),  # a date axis measures bars in ms
                y=part["lane"],
                orientation="h",
                name=str(label),
                marker_color=qualitative.Plotly[i % len(qualitative.Plotly)],
                customdata=part[["number", "status", "seconds"]].to_numpy(dtype=object),
                hovertemplate="trial %{customdata[0]} · %{customdata[1]} · "
                "%{customdata[2]:.3g} s<extra>%{fullData.name}</extra>",
            )
        )
    figure.update_layout(
        barmode="overlay",
        xaxis={"type": "date", "title": "time"},
        yaxis={"title": "worker (host · device #lane)", "autorange": "reversed"},
        legend={"orientation": "h", "y": -0.25},
        height=max(220, 40 * lanes["lane"].nunique() + 120),
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
    )
    return figure
