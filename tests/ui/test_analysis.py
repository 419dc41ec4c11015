"""The pure pieces of the dashboard: histories, correlations, labels, the cell drawing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from winnow.service.engine import readout
from winnow.service.search_spec import Objective
from winnow.service.store import reads
from winnow.ui import analysis, charts


def test_history_ends_at_the_readout_hypervolume_and_best(seeded):
    spec = seeded.spec()
    names = [o.name for o in spec.objectives]
    trained = analysis.expand(reads.trained(seeded.store, seeded.search_id), names)
    done = trained[trained["rung"] == len(spec.strategy.rungs) - 1]
    history = analysis.history(done, spec.objectives)
    progress = readout.progress(spec, seeded.rows())
    assert len(history) == len(readout.completed_trials(spec, seeded.rows()))
    assert history["hypervolume"].iloc[-1] == pytest.approx(progress["hypervolume"])
    assert history["hypervolume"].is_monotonic_increasing  # a fixed reference: never shrinks
    for name, best in progress["best"].items():
        assert history[f"best {name}"].iloc[-1] == pytest.approx(best)


def test_history_follows_a_moving_reference_point():
    """Without a reference, a minimised objective's is 1.1 x its worst value so far: a new
    worst point enlarges the volume although it is not on the front."""
    objectives = [
        Objective(name="a", direction="maximize"),
        Objective(name="b", direction="minimize"),
    ]
    done = pd.DataFrame({"a": [0.5, 0.4], "b": [10.0, 20.0], "finished_at": [1.0, 2.0]})
    volumes = analysis.history(done, objectives)["hypervolume"].tolist()
    assert volumes == pytest.approx([0.5 * 1.0, 0.5 * 12.0])


def test_correlation_of_ranks():
    x = np.arange(20.0)
    assert analysis.correlation(x, x**3)["spearman"] == pytest.approx(1.0)
    assert analysis.correlation(x, -x)["kendall"] == pytest.approx(-1.0)
    assert analysis.correlation([1, 2], [3, 4])["spearman"] is None  # too few to rank
    assert analysis.correlation([1, 1, 1, 1], [1, 2, 3, 4])["kendall"] is None  # constant


def test_weight_bits_label():
    assert analysis.weight_bits_label({"head": 8, "hidden": 8}) == "8"
    assert analysis.weight_bits_label({"head": 32, "stage0": 4}) == "4-32"
    assert analysis.weight_bits_label(32) == "32"


@pytest.mark.parametrize(
    ("architecture", "line"),
    [
        ({"family": "mlp", "depth": 2, "width": 64, "activation": "gelu"}, "mlp 2x64 gelu"),
        (
            {
                "family": "nb201",
                "cell": "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                "channels": 8,
                "cells_per_stage": 1,
            },
            "nb201 |none~0|+|none~0|none~1|+|none~0|none~1|none~2| C8 N1",
        ),
        (
            {"family": "macro", "depths": [1, 2], "kernel_sizes": [3, 5], "expand_ratios": [3, 6]},
            "macro depths [1, 2] kernels [3, 5]",
        ),
        ({"family": "vit"}, "vit"),  # a family this build does not register
    ],
)
def test_hover_text_starts_with_the_familys_summary(architecture, line):
    candidate = {
        "architecture": architecture,
        "normalization": "layernorm",
        "optimizer": {"name": "adamw", "lr": 0.003},
        "quantization": {"weight_bits": {"*": 8}, "activation_bits": 32},
    }
    assert analysis.describe(candidate).split("<br>") == [
        line,
        "layernorm",
        "adamw lr 0.003",
        "weights 8 bit, activations 32 bit",
    ]


def test_pareto_figure_in_3d_and_coloured_by_an_axis():
    points = pd.DataFrame(
        {
            "a": [0.9, 0.8, 0.7],
            "b": [3.0, 1.0, 2.0],
            "c": [1.0, 2.0, 3.0],
            "number": [0, 1, 2],
            "recipe": ["x", "y", "z"],
            "optimizer": ["sgd", "adamw", "sgd"],
            "on_front": [True, True, False],
        }
    )
    figure = charts.pareto_figure(points, ["a", "b", "c"], ["maximize"] * 3, "optimizer")
    assert {trace.type for trace in figure.data} == {"scatter3d"}
    names = {trace.name for trace in figure.data}
    assert names == {"sgd", "adamw", "sgd (dominated)"}
    dominated = next(t for t in figure.data if t.name == "sgd (dominated)")
    assert dominated.marker.opacity < 0.5 and list(dominated.customdata[:, 0]) == [2]
    flat = charts.pareto_figure(points, ["a", "b"], ["maximize", "minimize"], "optimizer")
    line = next(t for t in flat.data if t.name == "Pareto front")
    assert list(line.x) == [0.8, 0.9] and line.line.shape == "vh"


def test_the_proxy_table_keeps_scores_not_the_screens_flags():
    """``screen.calibrated`` and ``screen.zero_weight.*`` rank nothing: not proxy columns."""
    metrics = {"proxy.synflow": 1.0, "screen.score": 0.5, "screen.position": 2.0}
    metrics |= {"screen.calibrated": 1.0, "screen.zero_weight.naswot": 1.0}
    scores = pd.DataFrame({"number": [3], "stage": ["proxy"], "metrics": [metrics]})
    table = analysis.proxy_table(scores)
    assert list(table.columns) == ["number", "proxy.synflow", "screen.score", "screen.position"]


def test_one_epoch_is_singular_wherever_it_is_printed():
    from winnow.records import epochs_text, front_note

    assert epochs_text(1) == "1 epoch" and epochs_text(6) == "6 epochs"
    assert front_note(1, 3) == "front at 1 epoch (top rung 3 never reached)"
    counts = pd.DataFrame(
        {
            "stage": ["train", "train"],
            "epochs": [1, 3],
            "rung": [0, 1],
            "status": ["ok", "ok"],
            "reused": [False, False],
            "rows": [4, 2],
        }
    )
    stages = list(analysis.funnel(counts, [1, 3], 4)["stage"])
    assert "trained at rung 0 (1 epoch)" in stages and "trained at rung 1 (3 epochs)" in stages
    frame = pd.DataFrame(
        {"epochs": [1], "metrics": [{"accuracy": 0.5}], "candidate": ['{"architecture": {}}']}
    )
    assert list(analysis.expand(frame, ["accuracy"])["fidelity"]) == ["1 epoch"]


def test_metric_columns_put_accuracy_and_costs_first_and_proxies_last():
    names = ["proxy.synflow", "screen.score", "epochs_run", "latency_ms", "params", "accuracy"]
    assert analysis.metric_columns(names, ["model_bytes"]) == [
        "accuracy",
        "params",
        "latency_ms",
        "epochs_run",
        "proxy.synflow",
        "screen.score",
    ]


def test_axis_scale_goes_logarithmic_when_values_span_orders_of_magnitude():
    assert analysis.axis_scale([400.0, 410.0, 395.0]) == "linear"
    assert analysis.axis_scale([1e3, 1e20, 1.5e49]) == "log"
    assert analysis.axis_scale([-1e3, 0.0, 1.5e49]) == "symlog"
    assert analysis.axis_scale([0.0, 5.0]) == "linear"  # one non-zero magnitude: no span
    values = np.array([-1e6, -2.0, 0.0, 0.5, 3.0, 1e10, 1.5e49])
    threshold = analysis.symlog_threshold(values)
    drawn = analysis.symlog(values, threshold)
    assert threshold == 0.5 and np.all(np.diff(drawn) > 0)  # monotone: the ranks are kept
    assert drawn[2] == 0 and np.ptp(drawn) < 200  # 1.5e49 is about 49 units from 0


def test_the_proxy_scatter_draws_a_wide_proxy_on_a_log_axis():
    data = pd.DataFrame(
        {
            "number": [0, 1, 2],
            "recipe": ["a", "b", "c"],
            "proxy.synflow": [1e3, 1e20, 1.5e49],
            "proxy.grad": [-1e4, 0.0, 1e9],
            "accuracy": [0.5, 0.6, 0.7],
        }
    )
    log = charts.proxy_figure(data, "proxy.synflow", "accuracy", "log")
    assert log.layout.xaxis.type == "log" and list(log.data[0].x) == [1e3, 1e20, 1.5e49]
    symlog = charts.proxy_figure(data, "proxy.grad", "accuracy", "symlog")
    assert np.all(np.diff(symlog.data[0].x) > 0) and max(symlog.data[0].x) < 20
    assert "0" in symlog.layout.xaxis.ticktext and "-1e4" in symlog.layout.xaxis.ticktext
    assert [row[2] for row in symlog.data[0].customdata] == [-1e4, 0.0, 1e9]  # raw in the hover


def test_parameter_table_keeps_the_decisions_that_vary():
    decided = [
        {"normalization": "batchnorm", "optimizer.lr": 1e-4, "dropout": 0.0},
        {"normalization": "layernorm", "optimizer.lr": 1e-1, "dropout": 0.0},
        {"normalization": "layernorm", "optimizer.lr": 3e-3, "dropout": 0.0, "momentum": 0.9},
    ]
    metrics = [{"accuracy": 0.5}, {"accuracy": 0.7}, {}]
    table = analysis.parameter_table([4, 5, 6], metrics, decided, ["accuracy"])
    assert list(table.columns) == ["number", "accuracy", "normalization", "optimizer.lr"]
    assert "momentum" not in table.columns  # one value and NaN (not "nan", a second value)
    assert list(table["number"]) == [4, 5]  # no accuracy: not drawn
    slices = charts.slice_figure(table, "optimizer.lr", "accuracy", "maximize")
    assert slices.layout.xaxis.type == "log"  # 1e-4 to 1e-1
    choices = charts.slice_figure(table, "normalization", "accuracy", "maximize")
    assert choices.layout.xaxis.type == "category"
    parallel = charts.parallel_figure(table, ["normalization", "optimizer.lr"], ["accuracy"])
    lr = next(d for d in parallel.data[0].dimensions if d.label == "log10 optimizer.lr")
    assert list(lr.values) == pytest.approx([-4.0, -1.0])


def test_size_bucket_changes_only_as_the_results_grow_about_five_percent():
    assert analysis.size_bucket(0) == 0
    assert analysis.size_bucket(1000) == analysis.size_bucket(1020)  # 2 %: same key
    assert analysis.size_bucket(1000) != analysis.size_bucket(1110)  # 11 %: a new one
    keys = {analysis.size_bucket(n) for n in range(1000, 2001)}
    assert 10 <= len(keys) <= 20  # about log(2) / log(1.05) = 14 steps


def test_decisions_are_by_path_and_empty_for_a_row_that_no_longer_parses():
    from winnow.service.demo import DEMO_SPEC
    from winnow.service.search_spec import parse_search_spec

    space = parse_search_spec(DEMO_SPEC | {"name": "d"}).search_space
    [candidate] = space.sample(1, seed=0)
    decided = readout.decisions(space, candidate.canonical_json())
    assert decided["optimizer.lr"] == candidate.optimizer["lr"]
    assert readout.decisions(space, '{"architecture": 3}') == {}
