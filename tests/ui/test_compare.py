"""The Compare page under ``AppTest``: two searches side by side, their fronts, hypervolume
histories and counts checked against ``readout`` over every stored row."""

from __future__ import annotations

import json

import pytest

from winnow.bench.seed import seed_search
from winnow.service.engine import readout
from winnow.service.search_spec import Objective, SearchSpec
from winnow.service.store import Store, sqlite_url
from winnow.ui import comparison


def figures(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def plotted(values) -> list:
    """A trace's values as plotly's JSON holds them: a list, or a typed array (base64, flat)."""
    import base64

    import numpy as np

    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values)


def completed_points(spec, rows) -> list[list[float]]:
    return [c.values for c in readout.completed_trials(spec, rows)]


def test_the_searches_page_opens_the_comparison_of_two_searches(app, seeded):
    at = app(seeded.url)
    assert at.button(key="compare-open").disabled  # fewer than two chosen
    at.multiselect(key="compare-searches").select(seeded.search_id).select(seeded.running_id)
    at.run()
    at.button(key="compare-open").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value == "Compare searches"
    assert at.query_params["compare"] == f"{seeded.search_id},{seeded.running_id}"


def test_compare_page_numbers_are_the_readouts_over_every_row(app, seeded):
    ids = [seeded.search_id, seeded.running_id]
    at = app(seeded.url, compare=ids)
    assert "Same objectives: accuracy (maximize), model_bytes (minimize)" in at.caption[0].value
    table = at.dataframe[0].value.set_index("search")
    fronts = {t["name"]: t for t in figures(at)[0]["data"]}
    history = {t["name"]: t for t in figures(at)[1]["data"]}
    for search_id in ids:
        spec, rows = seeded.spec(search_id), seeded.rows(search_id)
        name = f"{seeded.store.search(search_id).name} ({search_id})"
        progress = readout.progress(spec, rows)
        row = table.loc[name]
        for column, key in [
            ("proposals", "proposals"),
            ("candidates", "candidates"),
            ("training runs", "trained"),
            ("epochs", "epochs"),
            ("hash hits", "cache_hits"),
            ("pruned", "pruned"),
            ("failed", "failed"),
            ("front size", "front_size"),
        ]:
            assert row[column] == progress[key], (search_id, column)
        assert row["hypervolume"] == pytest.approx(progress["hypervolume"])
        points = completed_points(spec, rows)
        assert row["completed"] == len(points) > 0
        # the demo's objectives fix their references (accuracy: 0 as maximised; model_bytes:
        # 300,000), so the shared point is each search's own and the figures agree
        expected = readout.hypervolume_history(spec.objectives, points)
        assert plotted(history[name]["y"]) == pytest.approx(expected)
        assert plotted(history[name]["x"]) == list(range(1, len(points) + 1))
        assert row["shared hypervolume"] == pytest.approx(progress["hypervolume"])
        front = readout.pareto(spec, rows)["points"]
        trace = fronts[name]  # x accuracy, y model_bytes: the page's default axes
        assert sorted(int(n) for n in plotted(trace["customdata"])) == sorted(
            p["trial_id"] for p in front
        )
        shown = sorted(zip(plotted(trace["x"]), plotted(trace["y"]), strict=True))
        assert shown == sorted((p["accuracy"], p["model_bytes"]) for p in front)


def test_differing_objectives_are_said_and_the_shared_ones_plotted(app, tmp_path):
    url = sqlite_url(tmp_path / "differ.db")
    store = Store(url)
    latency = [
        {"name": "accuracy", "direction": "maximize"},
        {"name": "latency_ms", "direction": "minimize"},
    ]
    first = seed_search(store, 80, seed=1)
    second = seed_search(store, 80, seed=2, changes={"name": "fast", "objectives": latency})
    at = app(url, compare=[first, second])
    [warning] = at.warning
    assert "The objectives differ" in warning.value and "accuracy (maximize)." in warning.value
    assert "latency_ms (minimize)" in warning.value
    assert "a front needs two" in " ".join(i.value for i in at.info)  # one shared objective
    [history] = figures(at)  # no front plot, the hypervolume (a length) still compared
    specs = [SearchSpec.model_validate_json(store.search(i).spec_json) for i in (first, second)]
    [accuracy] = comparison.shared_objectives(specs)
    for search_id, trace in zip((first, second), history["data"], strict=True):
        points = [[p[0]] for p in completed_points(specs[0], store.trials(search_id))]
        best = max(p[0] for p in points)  # reference 0: the hypervolume is the best accuracy
        assert plotted(trace["y"])[-1] == pytest.approx(best)
    assert accuracy.name == "accuracy"
    assert any("One reference point for every search (accuracy 0)" in c.value for c in at.caption)
    store.close()


def test_a_missing_search_is_named_and_one_search_is_not_a_comparison(app, seeded):
    at = app(seeded.url, compare=[seeded.search_id, "nope"])
    assert "No such search in this store: nope." in at.error[0].value
    assert "two or more" in at.info[0].value


def test_the_shared_reference_is_the_stated_one_else_the_worst_of_every_search():
    def spec(reference):
        objectives = [
            Objective(name="accuracy", direction="maximize"),
            Objective(name="model_bytes", direction="minimize", reference=reference),
        ]
        return SearchSpec.model_construct(objectives=objectives)

    points = [[0.9, 100.0], [0.8, 400.0]]
    same = comparison.shared_reference(spec(500.0).objectives, [spec(500.0)] * 2, points)
    assert [o.reference for o in same] == [0.0, 500.0]
    differ = comparison.shared_reference(spec(500.0).objectives, [spec(500.0), spec(None)], points)
    assert [o.reference for o in differ] == pytest.approx([0.0, 440.0])


def test_worker_lanes_give_a_machine_as_many_lanes_as_it_ran_runs_at_once():
    import pandas as pd

    from winnow.ui import analysis

    runs = pd.DataFrame(
        {
            "number": [0, 1, 2, 3],
            "seconds": [10.0, 4.0, 3.0, 5.0],
            "finished_at": [10.0, 6.0, 9.0, 8.0],  # 0: 0-10, 1: 2-6, 2: 6-9 (after 1), 3: 3-8
            "host": ["a", "a", "a", "b"],
            "device": ["cpu", "cpu", "cpu", None],
        }
    )
    lanes = analysis.worker_lanes(runs).set_index("number")["lane"].to_dict()
    assert lanes == {0: "a · cpu #1", 1: "a · cpu #2", 2: "a · cpu #2", 3: "b · ? #1"}


def test_the_timeline_draws_every_finished_run_per_host(app, seeded):
    at = app(seeded.url, search=seeded.search_id)
    [chart] = [
        f
        for f in figures(at)
        if f["data"]
        and f["data"][0]["type"] == "bar"
        and f["data"][0].get("orientation") == "h"
        and "base" in f["data"][0]
    ]
    ran = [r for r in seeded.rows() if r.finished_at is not None and not r.reused]
    shown = [n for trace in chart["data"] for n in plotted(trace["x"])]
    assert len(shown) == len(ran)
    assert sum(shown) == pytest.approx(1000 * sum(r.seconds for r in ran), rel=1e-6)
    lanes = {lane for trace in chart["data"] for lane in plotted(trace["y"])}
    assert lanes == {f"{r.host} · {r.device} #1" for r in ran}  # the seed ran one at a time


def test_the_trial_table_keeps_the_rows_within_a_metric_and_a_parameter_range(app, seeded):
    at = app(seeded.url, search=seeded.search_id)
    names = at.multiselect(key="f-ranges").options
    assert "accuracy" in names and "optimizer.lr (parameter)" in names
    assert "proxy.naswot" in names  # the proxies' scores too
    at.multiselect(key="f-ranges").select("metric:accuracy").select("param:optimizer.lr").run()
    at.text_input(key="f-low-metric:accuracy").input("0.9")
    at.text_input(key="f-high-param:optimizer.lr").input("1e-2").run()
    wanted = [
        r
        for r in seeded.rows()
        if r.metrics.get("accuracy") is not None
        and r.metrics["accuracy"] >= 0.9
        and json.loads(r.candidate)["optimizer"]["lr"] <= 1e-2
    ]
    assert wanted
    pager = " ".join(m.value for m in at.markdown)
    assert f"· {len(wanted):,} rows" in pager
    shown = at.dataframe[-1].value
    assert set(shown["row"]) <= {r.id for r in wanted} and len(shown) == min(50, len(wanted))


def test_the_hypervolume_against_time_counts_from_each_search_s_creation(app, seeded):
    ids = [seeded.search_id, seeded.running_id]
    at = app(seeded.url, compare=ids)
    at.radio(key="compare-against").set_value("time").run()
    history = {t["name"]: t for t in figures(at)[1]["data"]}
    for search_id in ids:
        search = seeded.store.search(search_id)
        done = readout.completed_trials(seeded.spec(search_id), seeded.rows(search_id))
        expected = [c.row.finished_at - search.created_at for c in done]
        assert plotted(history[f"{search.name} ({search_id})"]["x"]) == pytest.approx(expected)
