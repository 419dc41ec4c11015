"""A confirmed front on the dashboard: the seeder writes confirmation rows as the engine does
(``bench.seed._confirm``), the Search page's "Confirmed front" table shows each recipe's mean,
standard deviation, lower bound and seeds, and which fell off, as ``readout.pareto`` gives
them; a search without confirmation shows no such table; the Compare page says where it is."""

from __future__ import annotations

import dataclasses

import pytest

from winnow.bench.seed import seed_search
from winnow.records import Status, confirm_seed, confirm_stage
from winnow.service.demo import DEMO_SPEC
from winnow.service.engine import Engine, readout
from winnow.service.engine.confirmed import confirm_seeds, confirmed_figures
from winnow.service.store import Store, sqlite_url
from winnow.ui import analysis, nav
from winnow.ui.search_sections import bound_label
from winnow.workers.executor import InProcessExecutor

CONFIRM = {"top_k": 5, "seeds": 3}


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory):
    """A finished search with ``strategy.confirm`` (its runs seeded) and one without."""
    url = sqlite_url(tmp_path_factory.mktemp("confirmed-front") / "front.db")
    store = Store(url)
    strategy = DEMO_SPEC["strategy"] | {"confirm": CONFIRM}
    search_id = seed_search(store, 300, seed=9, changes={"strategy": strategy})
    plain = seed_search(store, 200, seed=8, changes={"name": "plain"})
    yield url, store, search_id, plain
    store.close()


def _pareto(store, search_id):
    spec = readout.stored_spec(store.search(search_id).spec_json).valid()
    return spec, readout.pareto(spec, store.trials(search_id))["points"]


def test_the_seeder_writes_the_confirmation_the_engine_plans(confirmed):
    """The stored runs are the pairs ``Confirmation.plan`` gives for the engine rebuilt from
    the store (``Engine.resume``'s state), with the engine's events around them."""
    _, store, search_id, plain = confirmed
    spec, rows = _pareto(store, search_id)[0], store.trials(search_id)
    engine = Engine(spec, store, InProcessExecutor(), search_id, rows=rows)
    plan = engine.confirmation.plan(dict(engine._front_results()[1]), engine.tracked)
    runs = [r for r in rows if confirm_seed(r.stage) is not None]
    top = len(spec.strategy.rungs) - 1
    assert sorted((r.number, confirm_seed(r.stage)) for r in runs) == sorted(plan)
    assert len(plan) == CONFIRM["top_k"] * CONFIRM["seeds"]
    assert all(
        r.status == Status.OK and (r.rung, r.epochs) == (top, spec.strategy.rungs[top])
        for r in runs
    )
    events = store.events(search_id)
    kinds = [e.kind for e in events]
    first, last = kinds.index("confirm_started"), kinds.index("confirm_finished")
    during = events[first + 1 : last]
    began = [e.payload for e in during if e.kind == "trial_started"]
    started = [(p["trial_id"], p["seed"]) for p in began]
    ended = [e.payload for e in during if e.kind == "trial"]
    assert sorted(started) == sorted(plan)
    assert sorted((p["trial_id"], confirm_seed(p["stage"])) for p in ended) == sorted(plan)
    figures = confirmed_figures(spec, runs)
    assert events[last].payload == {"confirmed": {str(n): f for n, f in figures.items()}}
    assert kinds[-1] == "search_finished"
    assert not any(confirm_seed(r.stage) is not None for r in store.trials(plain))


def test_a_search_seeded_without_its_confirmation_still_finishes(tmp_path):
    store = Store(sqlite_url(tmp_path / "unconfirmed.db"))
    strategy = DEMO_SPEC["strategy"] | {"confirm": CONFIRM}
    search_id = seed_search(store, 40, seed=3, changes={"strategy": strategy}, confirm=False)
    kinds = [e.kind for e in store.events(search_id)]
    assert kinds[-1] == "search_finished" and "confirm_started" not in kinds
    store.close()


def _assert_figures_shown(row, point, spec) -> None:
    """A table row's mean ± std, bound and single run per objective are ``point``'s (a point
    of ``readout.pareto``)."""
    found = point["confirmed"]
    for o in spec.objectives:
        mean, std = (nav.parse(t) for t in row[o.name].split(" ± "))
        assert mean == pytest.approx(found[o.name]["mean"], rel=1e-5)
        assert std == pytest.approx(found[o.name]["std"], rel=1e-5, abs=1e-9)
        lower = nav.parse(row[bound_label(o)])
        assert lower == pytest.approx(found[o.name]["lower"], rel=1e-5)
        assert nav.parse(row[f"{o.name} single run"]) == pytest.approx(
            point["single_run"][o.name], rel=1e-5
        )


def test_search_page_shows_the_confirmed_front_as_pareto_ranks_it(app, confirmed):
    url, store, search_id, _ = confirmed
    spec, points = _pareto(store, search_id)
    at = app(url, search=search_id)
    assert "Confirmed front" in [h.value for h in at.subheader]
    (table,) = at.table
    shown = table.value
    assert list(shown["trial"]) == [f"#{p['trial_id']}" for p in points]  # pareto's order
    standings = []
    for (_, row), point in zip(shown.iterrows(), points, strict=True):
        found = point.get("confirmed")
        if found is None:
            assert row["standing"] == analysis.SINGLE and row["seeds"] == 0
            assert row["accuracy lower bound"] == "—" and row["note"] == ""
            continue
        standings.append(point["on_confirmed_front"])
        want = analysis.CONFIRMED if point["on_confirmed_front"] else analysis.FELL_OFF
        assert row["standing"] == want
        assert row["seeds"] == found["seeds"] == CONFIRM["seeds"]
        _assert_figures_shown(row, point, spec)
    assert True in standings and False in standings  # the seeded store has both kinds
    fell = standings.count(False)
    assert any(f"{fell:,} fell off the front when confirmed" in c.value for c in at.caption)


def test_an_unconfirmed_search_shows_no_confirmed_front(app, confirmed):
    url, _, _, plain = confirmed
    at = app(url, search=plain)
    assert "Confirmed front" not in [h.value for h in at.subheader]
    assert not at.table


def test_compare_page_tables_the_confirmed_front_and_opens_the_whole_one(app, confirmed):
    """The Compare page's "Confirmed fronts": the confirmed search's recipes still on its
    front of confirmed means, in pareto's order, with the means, bounds and single runs pareto
    gives; nothing of the unconfirmed search; its button opens the whole "Confirmed front"."""
    url, store, search_id, plain = confirmed
    spec, points = _pareto(store, search_id)
    at = app(url, compare=[search_id, plain])
    assert "Confirmed fronts" in [h.value for h in at.subheader]
    (table,) = at.table
    shown = table.value
    kept = [p for p in points if p.get("confirmed") and p["on_confirmed_front"]]
    assert 0 < len(kept) < len(points)  # the seeded store has points it leaves out
    assert list(shown["trial"]) == [f"#{p['trial_id']}" for p in kept]
    assert set(shown["search"]) == {f"{store.search(search_id).name} ({search_id})"}
    for (_, row), point in zip(shown.iterrows(), kept, strict=True):
        found = point["confirmed"]
        assert row["seeds"] == found["seeds"]
        _assert_figures_shown(row, point, spec)
    assert "standing" not in shown.columns  # every row's is "confirmed"
    at.button(key=f"conf-{search_id}").click().run()
    assert at.query_params["search"] == [search_id] or at.query_params["search"] == search_id
    assert not at.exception, [e.message for e in at.exception]
    assert "Confirmed front" in [h.value for h in at.subheader]  # the Search page it opened


def test_compare_page_names_no_search_whose_confirmation_gave_no_figures(app, tmp_path):
    """Confirmation rows that all failed give no figures: no "Confirmed front" to point to,
    and the Compare page names no such search."""
    store = Store(sqlite_url(tmp_path / "failed.db"))
    strategy = DEMO_SPEC["strategy"] | {"confirm": CONFIRM}
    failed = seed_search(store, 60, seed=4, changes={"strategy": strategy}, confirm=False)
    other = seed_search(store, 40, seed=5, changes={"name": "other"})
    spec = readout.stored_spec(store.search(failed).spec_json).valid()
    _, front = readout.front_trials(spec, store.trials(failed))
    row = front[0].row
    stage = confirm_stage(confirm_seeds(spec)[0])
    failed_run = dataclasses.replace(row, id=None, stage=stage, status=Status.FAILED, metrics={})
    store.add_trials([failed_run])
    at = app(sqlite_url(tmp_path / "failed.db"), compare=[failed, other])
    assert "Confirmed fronts" not in [h.value for h in at.subheader] and not at.table
    page = app(sqlite_url(tmp_path / "failed.db"), search=failed)
    assert "Confirmed front" not in [h.value for h in page.subheader]
    store.close()


def test_the_pareto_chart_draws_the_confirmed_means_with_their_spread(confirmed):
    from winnow.ui import charts, source

    url, store, search_id, _ = confirmed
    spec, points = _pareto(store, search_id)
    data = source.search_data(url, search_id, ("test",))
    axes = [o.name for o in spec.objectives]
    figure = charts.pareto_figure(data["trained"], axes, spec.directions, "fidelity")
    charts.add_confirmed(figure, data["confirmed_front"], axes)
    drawn = {t.name: t for t in figure.data if t.name.startswith("confirmed mean")}
    for name, kept in (
        ("confirmed mean", True),
        ("confirmed mean (fell off when confirmed)", False),
    ):
        mine = [p for p in points if p.get("on_confirmed_front") is kept]
        trace = drawn[name]
        assert [int(float(c[0])) for c in trace.customdata] == [p["trial_id"] for p in mine]
        x, y = axes
        assert list(trace.x) == pytest.approx([p["confirmed"][x]["mean"] for p in mine])
        assert list(trace.y) == pytest.approx([p["confirmed"][y]["mean"] for p in mine])
        assert list(trace.error_x.array) == pytest.approx([p["confirmed"][x]["std"] for p in mine])
        assert list(trace.error_y.array) == pytest.approx([p["confirmed"][y]["std"] for p in mine])
