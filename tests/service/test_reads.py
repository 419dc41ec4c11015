"""The store's reads behind the dashboard (``service/store/reads.py``), on SQLite and (when
``WINNOW_TEST_POSTGRES_URL`` is set, as in CI) PostgreSQL, where the JSON paths compile
differently; checked against plain Python over every record."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from winnow.bench.seed import seed_search
from winnow.service.store import Store, reads, sqlite_url
from winnow.service.store.reads import TableQuery

POSTGRES_URL = os.environ.get("WINNOW_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_and_search(request, tmp_path):
    if request.param == "sqlite":
        store = Store(sqlite_url(tmp_path / "reads.db"))
    elif not POSTGRES_URL:
        pytest.skip("no PostgreSQL server (set WINNOW_TEST_POSTGRES_URL; CI does)")
    else:
        store = Store(POSTGRES_URL)
    yield store, seed_search(store, 150, seed=11)
    store.close()


def _all(store, search_id, query: TableQuery) -> list[int]:
    rows, total = reads.trial_page(store, search_id, query)
    pages = [list(rows["id"])]
    while sum(map(len, pages)) < total:
        page = TableQuery(**{**query.__dict__, "page": len(pages)})
        pages.append(list(reads.trial_page(store, search_id, page)[0]["id"]))
    return [i for page in pages for i in page]


def test_filters_match_python(store_and_search):
    store, search_id = store_and_search
    rows = store.trials(search_id)
    query = TableQuery(
        statuses=("ok",),
        fidelities=("train:2", "proxy"),
        axes=(
            ("optimizer", ("adamw", "sgd")),
            ("weight_bits", ("4",)),
            ("activation_bits", ("8",)),
        ),
        page_size=7,
    )

    def wanted(row) -> bool:
        candidate = json.loads(row.candidate)
        quant = candidate["quantization"]
        return (
            row.status == "ok"
            and (row.stage == "proxy" or row.epochs == 2)
            and candidate["optimizer"]["name"] in ("adamw", "sgd")
            and 4 in quant["weight_bits"].values()
            and quant["activation_bits"] == 8
        )

    expected = [r.id for r in rows if wanted(r)]
    assert expected and _all(store, search_id, query) == expected


def test_a_confirmation_fidelity_filters_its_own_rows(store_and_search):
    store, search_id = store_and_search
    trained = next(r for r in store.trials(search_id) if r.stage == "train")
    confirmed = store.add_trial(dataclasses.replace(trained, id=None, stage="confirm:5"))
    store.add_trial(dataclasses.replace(trained, id=None, stage="confirm:6"))
    assert _all(store, search_id, TableQuery(fidelities=("confirm:5",))) == [confirmed]


def test_sort_by_a_metric_puts_rows_without_it_last(store_and_search):
    store, search_id = store_and_search
    rows = store.trials(search_id)
    ordered = _all(store, search_id, TableQuery(sort="metric:accuracy", descending=True))
    with_accuracy = sorted(
        (r for r in rows if "accuracy" in r.metrics),
        key=lambda r: (-r.metrics["accuracy"], r.id),
    )
    assert ordered[: len(with_accuracy)] == [r.id for r in with_accuracy]
    assert len(ordered) == len(rows)


def test_axis_values_list_what_the_search_used(store_and_search):
    store, search_id = store_and_search
    candidates = [json.loads(r.candidate) for r in store.trials(search_id)]
    found = reads.axis_values(store, search_id)
    assert found["normalization"] == sorted({c["normalization"] for c in candidates})
    bits = {b for c in candidates for b in c["quantization"]["weight_bits"].values()}
    assert found["weight_bits"] == [str(b) for b in sorted(bits)]


def test_equivalents_and_counts(store_and_search):
    store, search_id = store_and_search
    rows = store.trials(search_id)
    row = next(r for r in rows if r.status == "duplicate")
    hashes = {"structural": row.structural_hash, "functional": row.functional_hash}
    same = reads.equivalents(store, search_id, row.number, hashes)
    expected = {
        r.number
        for r in rows
        if r.number != row.number and r.structural_hash == row.structural_hash
    }
    assert expected and set(same["number"]) == expected
    counts = reads.counts(store, search_id)
    assert counts["rows"].sum() == len(rows)
    assert reads.proposals(store, search_id) == {search_id: len({r.number for r in rows})}


def test_completed_rows_in_sql_are_the_records_that_say_completed(store_and_search):
    """``reads.trained`` + ``reads.completed`` (in SQL) and ``TrialRecord.completed`` agree, at
    every rung taken as the top one."""
    store, search_id = store_and_search
    rows, trained = store.trials(search_id), reads.trained(store, search_id)
    assert {r.status for r in rows} >= {"ok", "duplicate", "pruned", "failed"}
    for top in range(-1, max(r.rung for r in rows) + 1):
        expected = [r.id for r in rows if r.completed(top)]
        assert sorted(reads.completed(trained, top)["id"]) == expected, top
    assert any(r.completed(top) for r in rows)


def test_ranges_on_metrics_and_parameters_match_python(store_and_search):
    store, search_id = store_and_search
    rows = store.trials(search_id)
    accuracies = sorted(r.metrics["accuracy"] for r in rows if "accuracy" in r.metrics)
    low = accuracies[len(accuracies) // 2]
    lrs = sorted(json.loads(r.candidate)["optimizer"]["lr"] for r in rows)
    high = lrs[len(lrs) // 2]
    query = TableQuery(
        ranges=(("metric:accuracy", low, None), ("param:optimizer.lr", None, high)),
        page_size=9,
    )
    wanted = [
        r.id
        for r in rows
        if r.metrics.get("accuracy") is not None
        and r.metrics["accuracy"] >= low
        and json.loads(r.candidate)["optimizer"]["lr"] <= high
    ]
    assert 0 < len(wanted) < len(rows)
    assert _all(store, search_id, query) == sorted(wanted)
    dotted = TableQuery(ranges=(("metric:proxy.naswot", 350.0, 370.0),))  # a key with a dot
    naswot = [r.id for r in rows if 350 <= r.metrics.get("proxy.naswot", -1) <= 370]
    assert naswot and _all(store, search_id, dotted) == sorted(naswot)


def test_runs_are_the_latest_finished_runs_oldest_first(store_and_search):
    store, search_id = store_and_search
    ran = [r for r in store.trials(search_id) if r.finished_at is not None and not r.reused]
    ran.sort(key=lambda r: (r.finished_at, r.id))
    latest = reads.runs(store, search_id, 25)
    assert list(latest["number"]) == [r.number for r in ran[-25:]]
    assert list(latest["seconds"]) == pytest.approx([r.seconds for r in ran[-25:]])
    assert set(latest["host"]) == {r.host for r in ran}
