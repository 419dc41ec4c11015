"""The dashboard's pages under Streamlit's ``AppTest``: what they show is checked against the
store, read independently (``readout`` over every row, or plain Python over the rows)."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import replace

import pytest

from winnow.records import epochs_text
from winnow.service.engine import readout
from winnow.ui import nav


def metrics(at) -> dict[str, float]:
    return {m.label: nav.parse(m.value) for m in at.metric}


def test_searches_page_lists_every_search_and_opens_one(app, seeded):
    at = app(seeded.url)
    table = at.dataframe[0].value.set_index("id")
    assert set(table.index) == {seeded.search_id, seeded.running_id}
    assert table.loc[seeded.search_id, "status"] == "finished"
    assert table.loc[seeded.running_id, "status"] == "running"
    progress = readout.progress(seeded.spec(), seeded.rows())
    assert table.loc[seeded.search_id, "proposals"] == progress["proposals"]
    assert table.loc[seeded.search_id, "hypervolume"] == pytest.approx(progress["hypervolume"])
    assert table.loc[seeded.running_id, "finished"] == ""
    at.selectbox(key="open-search").select(seeded.running_id)
    at.button[0].click().run()
    assert at.title[0].value.startswith("Search ")
    assert f"id {seeded.running_id}" in at.caption[0].value


def test_search_page_counters_match_the_store(app, seeded):
    at = app(seeded.url, search=seeded.search_id)
    shown = metrics(at)
    progress = readout.progress(seeded.spec(), seeded.rows())
    for label, key in [
        ("candidates", "candidates"),
        ("training runs", "trained"),
        ("proposals", "proposals"),
        ("hash hits", "cache_hits"),
        ("pruned", "pruned"),
        ("failed", "failed"),
    ]:
        assert shown[label] == progress[key], label
    assert shown["hypervolume"] == pytest.approx(progress["hypervolume"], rel=1e-5)
    for name, value in progress["leader"]["values"].items():  # one trial's, not a mix
        assert shown[f"leader {name}"] == pytest.approx(value, rel=1e-5)


def test_funnel_counts_each_stage_of_the_cascade(seeded):
    from winnow.service.store import reads
    from winnow.ui import analysis

    rows = seeded.rows()
    funnel = analysis.funnel(
        reads.counts(seeded.store, seeded.search_id),
        seeded.spec().strategy.rungs,
        len({r.number for r in rows}),
    )
    counted = dict(zip(funnel["stage"], funnel["candidates"], strict=True))
    duplicates = sum(r.status == "duplicate" for r in rows)
    assert duplicates > 0 and funnel.attrs["duplicates"] == duplicates
    assert counted["new (not a hash hit)"] == len({r.number for r in rows}) - duplicates
    assert counted["scored by proxies"] == sum(r.stage == "proxy" for r in rows)
    assert funnel.attrs["screened_out"] == sum(
        r.stage == "proxy" and r.status == "pruned" for r in rows
    )
    for rung, epochs in enumerate(seeded.spec().strategy.rungs):
        trained = sum(r.stage == "train" and r.rung == rung and not r.reused for r in rows)
        assert counted[f"trained at rung {rung} ({epochs_text(epochs)})"] == trained


def test_pareto_chart_marks_the_readout_front(app, seeded):
    from winnow.ui import source

    app(seeded.url, search=seeded.search_id)
    data = source.search_data(seeded.url, seeded.search_id, ("test",))
    trained = data["trained"]
    on_front = set(trained.loc[trained["on_front"], "number"])
    expected = {p["trial_id"] for p in readout.pareto(seeded.spec(), seeded.rows())["points"]}
    assert on_front == expected and len(on_front) >= 2
    lower_rungs = set(trained["epochs"])
    assert lower_rungs == set(seeded.spec().strategy.rungs)  # every fidelity is drawn


def test_the_evidence_ladder_table_is_the_readouts_over_every_row(app, seeded):
    at = app(seeded.url, search=seeded.search_id)
    [table] = [d.value for d in at.dataframe if "kendall tau" in d.value.columns]
    expected = readout.progress(seeded.spec(), seeded.rows())["evidence_ladder"]
    assert any(t["tau"] is not None for t in expected)
    assert list(table["tier"]) == [t["tier"] for t in expected]
    assert list(table["candidates"]) == [t["n"] for t in expected]
    assert list(table["below params"]) == [t["below_params"] for t in expected]
    for shown, tier in zip(table["kendall tau"], expected, strict=True):
        assert math.isnan(shown) if tier["tau"] is None else shown == pytest.approx(tier["tau"])
    assert "Evidence ladder" in " ".join(h.value for h in at.subheader)


def test_trial_table_pages_through_every_row_in_order(app, seeded):
    at = app(seeded.url, search=seeded.search_id)
    ids = list(at.dataframe[-1].value["row"])
    assert len(ids) == 50
    at.button(key="t-next").click().run()
    second = list(at.dataframe[-1].value["row"])
    every = sorted(r.id for r in seeded.rows())
    assert ids + second == every[:100]
    assert "Page **2** of" in " ".join(m.value for m in at.markdown)
    at.button(key="t-prev").click().run()
    assert list(at.dataframe[-1].value["row"]) == ids


def test_trial_table_filters_and_sorts_in_sql(app, seeded):
    at = app(seeded.url, search=seeded.search_id)
    at.multiselect(key="f-status").select("pruned")
    at.multiselect(key="f-normalization").select("batchnorm")
    at.run()
    rows = seeded.rows()
    expected = [
        r
        for r in rows
        if r.status == "pruned" and json.loads(r.candidate)["normalization"] == "batchnorm"
    ]
    shown = at.dataframe[-1].value
    assert set(shown["status"]) == {"pruned"} and set(shown["normalization"]) == {"batchnorm"}
    assert f"{len(expected):,} rows" in " ".join(m.value for m in at.markdown)
    at.multiselect(key="f-status").unselect("pruned")
    at.multiselect(key="f-normalization").unselect("batchnorm")
    at.selectbox(key="t-sort").select("accuracy")
    at.toggle(key="t-desc").set_value(True)
    at.run()
    best = max(r.metrics.get("accuracy", 0) for r in rows)
    assert at.dataframe[-1].value["accuracy"].iloc[0] == pytest.approx(best)


def test_weight_bits_filter_keeps_rows_with_that_width(app, seeded):
    at = app(seeded.url, search=seeded.search_id)
    at.multiselect(key="f-weight_bits").select("4").run()
    shown = at.dataframe[-1].value
    rows = {r.id: r for r in seeded.rows()}
    for row_id in shown["row"]:
        bits = json.loads(rows[row_id].candidate)["quantization"]["weight_bits"]
        assert 4 in bits.values()
    with_four = sum(
        4 in json.loads(r.candidate)["quantization"]["weight_bits"].values() for r in rows.values()
    )
    assert f"{with_four:,} rows" in " ".join(m.value for m in at.markdown)


def test_open_trial_from_the_search_page(app, seeded):
    at = app(seeded.url, search=seeded.search_id)
    at.number_input(key="open-trial-number").set_value(7)
    at.button(key="open-trial").click().run()
    assert at.title[0].value == "Trial 7"


def test_trial_page_shows_metrics_at_every_fidelity(app, seeded):
    done = readout.completed_trials(seeded.spec(), seeded.rows())
    number = next(c.trial_id for c in done if not c.row.reused)
    at = app(seeded.url, search=seeded.search_id, trial=number)
    rows = [r for r in seeded.rows() if r.number == number]
    table = next(d.value for d in at.dataframe if "fidelity" in d.value.columns)
    assert len(table) == len(rows)
    top = rows[-1].metrics
    assert table["accuracy"].iloc[-1] == pytest.approx(top["accuracy"])
    assert "No loss curve" not in " ".join(i.value for i in at.info)
    layers = next(d.value for d in at.dataframe if "layer" in d.value.columns)
    depth = json.loads(rows[0].candidate)["architecture"]["depth"]
    assert len(layers) == depth + 1  # hidden layers and the head


def test_trial_page_draws_an_nb201_cell(app, seeded):
    at = app(seeded.url, search=seeded.running_id, trial=0)
    cell = json.loads(seeded.rows(seeded.running_id)[0].candidate)["architecture"]["cell"]
    dot = at.get("graphviz_chart")[0].proto.spec
    live = [
        e
        for node in cell.strip("|").split("|+|")
        for e in node.split("|")
        if not e.startswith("none")
    ]
    assert dot.count("->") == len(live)


def test_trial_page_of_an_unknown_trial_says_so(app, seeded):
    at = app(seeded.url, search=seeded.search_id, trial=10**6)
    assert "has no trial 1000000" in at.error[0].value


def test_equivalents_share_a_hash(seeded):
    from winnow.service.store import reads

    rows = seeded.rows()
    duplicate = next(r for r in rows if r.status == "duplicate")
    hashes = {"structural": duplicate.structural_hash, "functional": duplicate.functional_hash}
    same = reads.equivalents(seeded.store, seeded.search_id, duplicate.number, hashes)
    expected = {
        r.number
        for r in rows
        if r.number != duplicate.number and r.structural_hash == duplicate.structural_hash
    }
    assert expected and set(same["number"]) == expected


def test_export_payload_is_the_readout_recipe(seeded):
    from winnow.ui.page_trial import export_payload

    search, rows = seeded.store.search(seeded.search_id), seeded.rows()
    number = readout.completed_trials(seeded.spec(), rows)[0].trial_id
    mine = [r for r in rows if r.number == number]
    payload, kind = export_payload(search, mine, number)
    assert kind == "recipe" and payload == readout.recipe(search, rows, number)
    pruned = next(r for r in rows if r.status == "pruned")
    payload, kind = export_payload(search, [pruned], pruned.number)
    assert kind == "candidate" and payload["candidate"] == json.loads(pruned.candidate)


def test_running_search_page_shows_rows_added_since(app, fresh):
    at = app(fresh.url, search=fresh.running_id)
    before = metrics(at)["proposals"]
    last = fresh.rows(fresh.running_id)[-1]
    fresh.store.add_trial(replace(last, id=None, number=10_000))
    at.run()
    assert metrics(at)["proposals"] == before + 1


def test_cancel_asks_first_and_needs_a_server(app, fresh):
    at = app(fresh.url, search=fresh.running_id)
    at.button(key="cancel").click().run()
    assert "Cancel this search?" in at.warning[0].value
    at.button(key="cancel-no").click().run()
    assert not at.warning and at.button(key="cancel")
    at.button(key="cancel").click().run()
    at.button(key="cancel-yes").click().run()
    assert "needs the server's address" in at.error[0].value
    assert fresh.store.search(fresh.running_id).status == "running"


def test_finished_search_has_no_cancel_button(app, seeded):
    at = app(seeded.url, search=seeded.search_id)
    assert "cancel" not in [b.key for b in at.button]
    assert Counter(b.label for b in at.button)["Cancel search…"] == 0


def test_proxy_correlation_is_over_this_search_trained_candidates(app, seeded):
    from scipy import stats

    at = app(seeded.url, search=seeded.search_id)
    proxy = at.selectbox(key="proxy-name").value
    epochs = at.selectbox(key="proxy-ep").value
    rows = seeded.rows()
    scores = {r.number: r.metrics.get(proxy) for r in rows if r.stage == "proxy"}
    pairs = [
        (scores[r.number], r.metrics["accuracy"])
        for r in rows
        if r.stage == "train"
        and r.epochs == epochs
        and r.status == "ok"
        and scores.get(r.number) is not None
    ]
    expected = stats.spearmanr(*zip(*pairs, strict=True)).statistic
    text = next(m.value for m in at.markdown if "spearman" in m.value)
    assert f"over {len(pairs)} candidates" in text
    assert nav.parse(text.split("spearman ")[1].split(",")[0]) == pytest.approx(expected, rel=1e-5)


def test_searches_whose_spec_no_longer_parses_open_with_a_note(app, tmp_path):
    from tests.service.test_stored_specs import POISONED, _poison
    from winnow.records import SearchStatus
    from winnow.service.store import Store, sqlite_url

    url = sqlite_url(tmp_path / "poisoned.db")
    store = Store(url)
    ids = [_poison(store, text, SearchStatus.FINISHED) for text in POISONED.values()]
    at = app(url)
    table = at.dataframe[0].value.set_index("id")
    assert set(table.index) == set(ids)
    for search_id in ids:
        at = app(url, search=search_id)
        assert at.title[0].value == "Search old"
        assert any(w.value.startswith("spec no longer valid") for w in at.warning)


def test_trial_page_puts_accuracy_and_costs_before_the_proxies(app, seeded):
    done = readout.completed_trials(seeded.spec(), seeded.rows())
    number = next(c.trial_id for c in done if not c.row.reused)
    at = app(seeded.url, search=seeded.search_id, trial=number)
    table = next(d.value for d in at.dataframe if "fidelity" in d.value.columns)
    columns = list(table.columns)
    proxies = [i for i, c in enumerate(columns) if c.startswith(("proxy.", "screen."))]
    assert proxies, columns
    for name in ("accuracy", "params", *(o.name for o in seeded.spec().objectives)):
        assert columns.index(name) < min(proxies), columns
    assert columns.index("accuracy") == 3  # after fidelity, status, reused
    epochs = {r.epochs for r in seeded.rows() if r.number == number and r.stage == "train"}
    assert set(table["fidelity"]) >= {f"train {epochs_text(e)}" for e in epochs}


def test_trial_page_plots_what_is_stored_per_epoch_and_keeps_the_legend_off_the_toolbar(
    app, seeded
):
    done = readout.completed_trials(seeded.spec(), seeded.rows())
    number = next(c.trial_id for c in done if not c.row.reused)
    at = app(seeded.url, search=seeded.search_id, trial=number)
    [chart] = at.get("plotly_chart")
    figure = json.loads(chart.proto.spec)
    assert figure["layout"]["legend"]["y"] < 0  # below the plot; the toolbar is top right
    loss = {t["name"]: t for t in figure["data"] if t["xaxis"] == "x"}
    right = [t for t in figure["data"] if t["xaxis"] == "x2"]
    per_epoch = {t["name"]: t for t in right if t["mode"] == "lines+markers"}
    trained = [r for r in seeded.rows() if r.number == number and r.stage == "train"]
    for row in trained:
        name = f"train {epochs_text(row.epochs)}"
        assert loss[name]["y"] == pytest.approx(row.loss_curve)
        assert per_epoch[name]["y"] == pytest.approx(row.accuracy_curve)
        assert per_epoch[name]["x"] == list(range(1, len(row.accuracy_curve) + 1))
    [accuracy] = [t for t in right if t["name"] == "test accuracy at the end"]
    assert accuracy["mode"] == "markers"  # separate runs: not joined by a line
    assert accuracy["x"] == [r.epochs for r in trained]
    assert accuracy["y"] == pytest.approx([r.metrics["accuracy"] for r in trained])
    assert any("test accuracy after every epoch" in c.value for c in at.caption)
    assert not any("No accuracy" in c.value for c in at.caption)


def test_intermediate_values_draw_the_best_trials_stored_curves(app, seeded):
    from winnow.ui.search_sections import CURVE_LINES

    spec, rows = seeded.spec(), seeded.rows()
    objective, top = spec.objectives[0].name, len(spec.strategy.rungs) - 1
    done = [r for r in rows if r.completed(top) and r.metrics.get(objective) is not None]
    best = sorted(done, key=lambda r: r.metrics[objective], reverse=True)[:CURVE_LINES]
    assert spec.objectives[0].direction == "maximize" and len(done) > CURVE_LINES
    at = app(seeded.url, search=seeded.search_id)
    titles = {"test accuracy per epoch", "training loss per epoch"}
    [figure] = [
        f
        for f in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
        if {a.get("text") for a in f["layout"].get("annotations", [])} == titles
    ]
    accuracy = {t["name"]: t["y"] for t in figure["data"] if t["xaxis"] == "x"}
    loss = {t["name"]: t["y"] for t in figure["data"] if t["xaxis"] == "x2"}
    assert list(accuracy) == [f"trial {r.number}" for r in best]  # best first
    for row in best:
        assert accuracy[f"trial {row.number}"] == pytest.approx(row.accuracy_curve)
        assert loss[f"trial {row.number}"] == pytest.approx(row.loss_curve)
    assert any(f"The best {CURVE_LINES} of {len(done)}" in c.value for c in at.caption)


def test_searches_table_says_what_its_counts_count(app, seeded):
    at = app(seeded.url)
    table = at.dataframe[0].value.set_index("id")
    spec, rows = seeded.spec(), seeded.rows()
    progress = readout.progress(spec, rows)
    shown = table.loc[seeded.search_id]
    assert shown["candidates"] == f"{progress['candidates']} / {spec.budget.max_trials}"
    assert shown["completed"] == len(readout.completed_trials(spec, rows))
    helps = json.loads(at.dataframe[0].proto.columns)
    assert "budget.max_trials" in helps["candidates"]["help"]
    assert "top rung" in helps["completed"]["help"]
    assert any("trained at the top rung" in c.value for c in at.caption)


def test_importance_bars_are_optunas_over_the_stored_trials(app, seeded):
    from winnow.service.engine import importance

    at = app(seeded.url, search=seeded.search_id)
    # computed when asked for, not at every open
    assert not any("importance (sums to 1)" in c.proto.spec for c in at.get("plotly_chart"))
    at.toggle(key="imp-on").set_value(True).run()
    epochs, objective = at.selectbox(key="imp-epochs").value, at.selectbox(key="imp-target").value
    assert epochs == seeded.spec().strategy.rungs[-1]  # the top rung's by default
    expected = {
        (i.epochs, i.objective): i for i in importance.importances(seeded.spec(), seeded.rows())
    }[(epochs, objective)]
    chart = next(c for c in at.get("plotly_chart") if "importance (sums to 1)" in c.proto.spec)
    bars = json.loads(chart.proto.spec)["data"][0]
    shown = dict(zip(bars["y"], bars["x"], strict=True))
    assert shown == pytest.approx(expected.params)
    assert bars["y"][-1] == next(iter(expected.params))  # the most important on top
    axes = next(d.value for d in at.dataframe if "axis" in d.value.columns)
    assert dict(zip(axes["axis"], axes["importance"], strict=True)) == pytest.approx(expected.axes)
    caption = next(c.value for c in at.caption if "importance evaluator" in c.value)
    assert f"over {expected.trials:,} results trained for {epochs_text(epochs)}" in caption
    assert "optimizer.lr" in expected.params  # by decision path, as the slice plot names it
    at.radio(key="imp-evaluator").set_value("fanova").run()
    assert any("fANOVA" in c.value for c in at.caption)


def plotted(values) -> list:
    """A trace's values as plotly's JSON holds them: a list, or a typed array (base64)."""
    import base64

    import numpy as np

    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values)


def test_parallel_coordinates_and_slices_draw_the_stored_decisions(app, seeded):
    spec, rows = seeded.spec(), seeded.rows()
    at = app(seeded.url, search=seeded.search_id)
    epochs = at.selectbox(key="par-epochs").value
    trained = [r for r in rows if r.trained and r.epochs == epochs]
    charts = {c.proto.spec: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    [parallel] = [f for f in charts.values() if f["data"][0]["type"] == "parcoords"]
    dimensions = {d["label"]: d for d in parallel["data"][0]["dimensions"]}
    accuracy = plotted(dimensions["accuracy"]["values"])
    assert sorted(accuracy) == pytest.approx(sorted(r.metrics["accuracy"] for r in trained))
    norms = dimensions["normalization"]
    shown = Counter(norms["ticktext"][int(code)] for code in plotted(norms["values"]))
    assert shown == Counter(json.loads(r.candidate)["normalization"] for r in trained)
    assert "log10 optimizer.lr" in dimensions  # a learning rate spans orders of magnitude
    at.selectbox(key="slice-param").select("normalization")
    at.selectbox(key="slice-objective").select(spec.objectives[0].name).run()
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    [points] = [
        f["data"][0] for f in figures if f["layout"].get("xaxis", {}).get("type") == "category"
    ]
    pairs = Counter(zip(plotted(points["x"]), plotted(points["y"]), strict=True))
    expected = Counter(
        (json.loads(r.candidate)["normalization"], r.metrics[spec.objectives[0].name])
        for r in trained
    )
    assert pairs == expected


def test_an_nb201_search_page_draws_importance_and_parameters(app, seeded):
    at = app(seeded.url, search=seeded.running_id)
    at.toggle(key="imp-on").set_value(True).run()
    kinds = [json.loads(c.proto.spec)["data"][0]["type"] for c in at.get("plotly_chart")]
    assert "parcoords" in kinds and "bar" in kinds
    params = at.selectbox(key="slice-param").options
    assert any(p.startswith("architecture.edge") for p in params)  # the cell's edges


def _without_curves(fresh) -> None:
    """The rows as a mirror of an older server holds them: its API's trials carried no
    curves."""
    import sqlite3

    path = fresh.url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE trial SET loss_curve_json = '[]', accuracy_curve_json = '[]'")


@pytest.mark.parametrize("mirrored", [True, False])
def test_intermediate_values_say_why_no_curves_are_drawn(app, fresh, monkeypatch, mirrored):
    from winnow.ui import source

    _without_curves(fresh)
    monkeypatch.setattr(source, "through_server", lambda: mirrored)
    at = app(fresh.url, search=fresh.search_id)
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    titles = [{a.get("text") for a in f["layout"].get("annotations", [])} for f in charts]
    assert not any("training loss per epoch" in t for t in titles)  # no empty figure
    notes = [i.value for i in at.info]
    expected = "server sent no per-epoch curves" if mirrored else "store no per-epoch"
    assert any(expected in note for note in notes), notes
    assert not any("its learning curve, never used" in c.value for c in at.caption)


def test_the_trial_page_says_the_server_sent_no_curves(app, fresh, monkeypatch):
    from winnow.ui import source

    _without_curves(fresh)
    monkeypatch.setattr(source, "through_server", lambda: True)
    trained = next(r for r in fresh.rows() if r.stage == "train" and r.status == "ok")
    at = app(fresh.url, search=fresh.search_id, trial=trained.number)
    assert any("server sent no per-epoch curves" in i.value for i in at.info)
