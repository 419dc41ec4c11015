"""A confirmed front (``strategy.confirm``) leads by its means everywhere a leader is shown:
the Searches table, the Search page and the server's ``ListSearches``, as ``winnow pareto``
and ``export`` rank it (``readout.ranked_front``), labelled as a mean over its seeds."""

from __future__ import annotations

import statistics
from dataclasses import replace

import pytest

from winnow.bench.seed import seed_search
from winnow.records import Status, confirm_stage
from winnow.service.demo import DEMO_SPEC
from winnow.service.engine import readout
from winnow.service.engine.confirmed import confirm_seeds, row_identity, to_confirm
from winnow.service.store import Store, sqlite_url
from winnow.ui import nav
from winnow.ui.overview import overview

SHIFTS = (-0.02, 0.0, 0.05)  # each seed's accuracy less the single run's


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory):
    """A seeded search with confirmation on, of whose two recipes to confirm (the front's
    ends) the least accurate is confirmed: by single runs another trial leads, by the
    confirmed means this one."""
    url = sqlite_url(tmp_path_factory.mktemp("confirmed") / "confirmed.db")
    store = Store(url)
    strategy = DEMO_SPEC["strategy"] | {"confirm": {"top_k": 2, "seeds": 3}}
    search_id = seed_search(store, 80, seed=9, changes={"strategy": strategy}, confirm=False)
    spec = readout.stored_spec(store.search(search_id).spec_json).valid()
    rows = store.trials(search_id)
    single = readout.pareto(spec, rows)["points"]  # no confirmation rows yet
    _, front = readout.front_trials(spec, rows)
    ids, points = [c.trial_id for c in front], [c.values for c in front]
    planned = to_confirm(spec, ids, points, [row_identity(c.row) for c in front])
    (chosen,) = [n for n in planned if n != single[0]["trial_id"]]  # the front's other end
    top = len(spec.strategy.rungs) - 1
    (row,) = [r for r in rows if r.number == chosen and r.trained and r.rung == top]
    store.add_trials(
        replace(
            row,
            stage=confirm_stage(seed),
            reused=False,
            metrics=row.metrics | {"accuracy": row.metrics["accuracy"] + shift},
        )
        for seed, shift in zip(confirm_seeds(spec), SHIFTS, strict=True)
    )
    (other,) = [r for r in rows if r.number == single[0]["trial_id"] and r.rung == top]
    store.add_trials(  # the other end's runs: planned (stored queued, as the engine does)
        replace(other, stage=confirm_stage(seed), status=Status.QUEUED, metrics={}, reused=False)
        for seed in confirm_seeds(spec)
    )
    accuracy = statistics.mean(row.metrics["accuracy"] + s for s in SHIFTS)
    yield url, store, search_id, chosen, single[0]["trial_id"], accuracy
    store.close()


def test_the_searches_table_leads_by_the_confirmed_mean(confirmed):
    _, store, search_id, chosen, single_leader, accuracy = confirmed
    assert chosen != single_leader
    table = overview(store).set_index("id")
    text = table.loc[search_id, "leader"]
    assert text.startswith(f"#{chosen} accuracy {accuracy:,.6g},")
    assert text.endswith("(confirmed, mean of 3 seeds)")  # the CLI's wording


def test_the_search_page_leads_by_the_confirmed_mean_and_says_so(app, confirmed):
    url, _, search_id, chosen, _, accuracy = confirmed
    at = app(url, search=search_id)
    shown = {m.label: nav.parse(m.value) for m in at.metric}
    assert shown["leader accuracy"] == pytest.approx(accuracy, rel=1e-5)
    assert "hypervolume (single runs)" in shown  # beside a mean, the single runs' measure
    captions = [c.value for c in at.caption]
    assert any(f"trial #{chosen}, confirmed" in c and "3 confirmation seeds" in c for c in captions)


def test_list_searches_leads_by_the_confirmed_mean_as_get_search_does(make_server, confirmed):
    from winnow.service.client import Client

    url, _, search_id, chosen, _, accuracy = confirmed
    with Client(make_server(db_url=url).address, timeout=20) as client:
        listed = {s["id"]: s["progress"] for s in client.searches()}[search_id]
        got = client.search(search_id).info()["progress"]
    for progress in (listed, got):  # the listing's aggregate reads and GetSearch's rows
        leader = progress["leader"]
        assert leader["trial_id"] == chosen
        assert leader["values"]["accuracy"] == pytest.approx(accuracy)
        assert leader["confirmed"]["seeds"] == 3
        assert leader["confirmed"]["accuracy"]["mean"] == pytest.approx(accuracy)
    counted = [(p["confirm_runs"], p["confirm_done"]) for p in (listed, got)]
    assert counted == [(6, 3), (6, 3)]  # the other end's runs are still to come


def test_a_search_without_confirmation_reads_no_recipes(tmp_path, monkeypatch):
    """The Searches table and ``ListSearches``' aggregate reads look up the trained results'
    recipes only where a confirmation has figures to share: a search without
    ``strategy.confirm`` (or without its rows) leads by its single runs without them."""
    from winnow.service.api import servicer
    from winnow.service.store import reads

    store = Store(sqlite_url(tmp_path / "plain.db"))
    search_id = seed_search(store, 12, seed=3)
    expected = overview(store).set_index("id").loc[search_id, "leader"]

    def refuse(trained):
        raise AssertionError("recipes read for a search without confirmation")

    monkeypatch.setattr(readout, "result_recipes", refuse)
    assert overview(store).set_index("id").loc[search_id, "leader"] == expected
    spec = readout.stored_spec(store.search(search_id).spec_json).spec
    counts, trained = reads.counts(store, [search_id]), reads.trained(store, [search_id])
    progress = servicer._stored_progress(spec, counts, 12, trained, [])
    assert progress["leader"]["trial_id"] == int(expected.split()[0].lstrip("#"))
    assert (progress["confirm_runs"], progress["confirm_done"]) == (0, 0)
    store.close()
