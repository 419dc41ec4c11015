"""Searches stored with specs that today's code no longer accepts (written by an older winnow,
or straight into the database) stay readable and cancellable over a real server, and the
server refuses a spec before storing it when no reply could carry it."""

from __future__ import annotations

import copy
import json
import time

import grpc
import pytest

from tests.conftest import TINY_SPEC
from winnow.records import SearchRecord, SearchStatus, Status, TrialRecord
from winnow.service.api import convert
from winnow.service.client import Client
from winnow.service.engine import readout
from winnow.service.store import Store, sqlite_url
from winnow.v1 import search_pb2 as pb


def _spec(**changes) -> dict:
    spec = copy.deepcopy(TINY_SPEC)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = spec
        for key in parents:
            node = node[key]
        node[leaf] = value
    return spec


# What older versions stored and today's parse refuses (or today's space refuses).
POISONED = {
    "huge budget": json.dumps(_spec(budget__max_trials=2**40)),
    "bad objective": json.dumps(_spec(objectives=[{"name": "accuracy", "direction": "up"}])),
    "not json": "{",
    "nested too deep": "[" * 100_000 + "]" * 100_000,  # json.loads: RecursionError
}
PARSE_BUT_NOT_RESOLVE = {
    "null lr": json.dumps(_spec(space__optimizer__lr__low=None)),
    "unknown family": json.dumps(_spec(space__architecture__family="gone")),
}


def _trial(search_id: str, number: int, accuracy: float, params: int) -> TrialRecord:
    return TrialRecord(
        id=None,
        search_id=search_id,
        number=number,
        stage="train",
        epochs=1,
        rung=0,
        status=Status.OK,
        candidate="{}",
        candidate_key=f"k{number}",
        structural_hash=f"s{number}",
        metrics={"accuracy": accuracy, "params": params},
        created_at=0.0,
    )


def _poison(store: Store, spec_json: str, status: SearchStatus) -> str:
    search_id = store.create_search("old", "digits", spec_json, status)
    store.add_trial(_trial(search_id, 0, 0.9, 100))
    store.add_trial(_trial(search_id, 1, 0.8, 50))
    if status in (SearchStatus.FINISHED, SearchStatus.FAILED):
        store.add_event(search_id, "search_finished", {"status": status})
    return search_id


# The front needs the objectives and the rungs: a stand-in without them shows none.
ON_FRONT = {
    "huge budget": 2,
    "bad objective": 0,
    "not json": 0,
    "nested too deep": 0,
    "null lr": 2,
    "unknown family": 2,
}


@pytest.mark.parametrize("name", ON_FRONT)
def test_every_call_answers_on_a_search_whose_spec_no_longer_parses(server, client, name):
    spec_json = (POISONED | PARSE_BUT_NOT_RESOLVE)[name]
    stub = client.stub
    ended = _poison(server.store, spec_json, SearchStatus.FINISHED)
    orphan = _poison(server.store, spec_json, SearchStatus.QUEUED)  # no server runs it

    got = stub.GetSearch(pb.GetSearchRequest(search_id=ended), timeout=20)
    assert got.name == "old" and got.status == "finished" and got.progress.trained == 2
    valid = spec_json in PARSE_BUT_NOT_RESOLVE.values()  # its readers need no space
    assert ("spec no longer valid" in got.error) is not valid
    listed = stub.ListSearches(pb.ListSearchesRequest(), timeout=20).searches
    assert {s.id for s in listed} == {ended, orphan}
    assert len(stub.ListTrials(pb.ListTrialsRequest(search_id=ended), timeout=20).trials) == 2
    front = stub.GetParetoFront(pb.GetParetoFrontRequest(search_id=ended), timeout=20)
    assert len(front.points) == ON_FRONT[name]
    events = list(stub.WatchSearch(pb.WatchSearchRequest(search_id=ended), timeout=20))
    assert events[-1].kind == "search_finished"
    cancelled = stub.CancelSearch(pb.CancelSearchRequest(search_id=orphan), timeout=20)
    assert cancelled.status == "cancelled"
    assert server.store.search(orphan).status == SearchStatus.CANCELLED
    if not valid:
        with pytest.raises(grpc.RpcError) as raised:
            stub.ExportRecipe(pb.ExportRecipeRequest(search_id=ended), timeout=20)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "spec no longer valid" in raised.value.details()


def test_the_huge_budget_of_an_old_spec_is_shown_saturated(server, client):
    search_id = _poison(server.store, POISONED["huge budget"], SearchStatus.FINISHED)
    got = client.stub.GetSearch(pb.GetSearchRequest(search_id=search_id), timeout=20)
    assert got.progress.max_trials == convert.INT32_MAX
    assert "field 'budget.max_trials'" in got.error


@pytest.mark.parametrize(
    ("spec_json", "says"),
    [
        (POISONED["huge budget"], "field 'budget.max_trials'"),
        (POISONED["bad objective"], "field 'objectives[0].direction'"),
        (PARSE_BUT_NOT_RESOLVE["unknown family"], "gone"),
    ],
)
def test_a_resumed_search_whose_spec_no_longer_parses_ends_failed_saying_why(
    make_server, tmp_path, spec_json, says
):
    url = sqlite_url(tmp_path / "winnow.db")
    search_id = Store(url).create_search("old", "digits", spec_json, SearchStatus.QUEUED)
    server = make_server(db_url=url)
    deadline = time.monotonic() + 30
    while not (row := server.store.search(search_id)).ended and time.monotonic() < deadline:
        time.sleep(0.05)
    assert row.status == SearchStatus.FAILED and says in row.error
    assert not row.error.startswith("SpecNoLongerValidError")  # expected, said plainly
    with Client(server.address, retries=0) as client:
        shown = client.search(search_id).info()["error"]
    noted = "spec no longer valid" in row.error  # not for a spec that parses (unknown family)
    assert shown.count("spec no longer valid") == noted, shown  # the note is not repeated


def test_the_dashboards_overview_and_search_data_read_poisoned_searches(tmp_path):
    from winnow.ui import source
    from winnow.ui.overview import overview

    url = sqlite_url(tmp_path / "ui.db")
    store = Store(url)
    ids = {_poison(store, text, SearchStatus.FINISHED): name for name, text in POISONED.items()}
    table = overview(store)
    assert set(table["id"]) == set(ids) and set(table["name"]) == {"old"}
    assert all(note.startswith("spec no longer valid") for note in table["note"])
    huge = table[table["id"] == next(k for k, v in ids.items() if v == "huge budget")]
    assert huge["candidates"].item() == f"2 / {2**40}"
    for search_id, name in ids.items():
        data = source.search_data(url, search_id, ("test",))
        assert data["progress"]["trained"] == 2
        assert (data["leader"] is None) is (ON_FRONT[name] == 0)
        assert source.spec_note(store.search(search_id).spec_json).startswith("spec no longer")


def test_stored_spec_of_a_valid_spec_is_the_spec_and_has_no_note():
    stored = readout.stored_spec(json.dumps(TINY_SPEC))
    assert stored.problem is None and stored.note is None
    assert stored.valid().budget.max_trials == 3


def test_a_spec_no_reply_can_carry_is_refused_and_not_stored(client, server, monkeypatch):
    """Every bound of today's spec keeps its replies within their int32 fields; should one be
    loosened (or a counter grow past them), the reply is built before the search is stored."""
    honest = readout.stored_progress

    def past_int32(*args, **kwargs):
        return honest(*args, **kwargs) | {"max_trials": 2**31}

    monkeypatch.setattr(readout, "stored_progress", past_int32)
    request = pb.SubmitSearchRequest(spec_json=json.dumps(TINY_SPEC))
    with pytest.raises(grpc.RpcError) as raised:
        client.stub.SubmitSearch(request, timeout=20)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_trials = 2147483648" in raised.value.details()
    assert server.store.searches() == []


def test_stored_numbers_past_int32_are_saturated_in_messages():
    row = readout.stored_spec(POISONED["huge budget"])
    progress = readout.progress(row.spec, [])
    assert convert.out_of_range(progress) == [f"max_trials = {2**40}"]
    search = convert.search_message(
        SearchRecord("s", "old", "digits", "{}", SearchStatus.FINISHED, None, 0.0, 0.0), progress
    )
    assert search.progress.max_trials == convert.INT32_MAX
    trial = _trial("s", 2**33, 0.5, 1)
    assert convert.trial_message(trial).trial_id == convert.INT32_MAX


@pytest.mark.parametrize("name", ON_FRONT)
def test_the_cli_lists_shows_and_cancels_poisoned_searches(server, capsys, name):
    from winnow.service.cli import main

    spec_json = (POISONED | PARSE_BUT_NOT_RESOLVE)[name]
    ended = _poison(server.store, spec_json, SearchStatus.FINISHED)
    orphan = _poison(server.store, spec_json, SearchStatus.QUEUED)
    address = ("--address", server.address)
    assert main(["list", *address]) == 0
    assert main(["status", ended, *address]) == 0
    assert main(["status", ended, "--json", *address]) == 0
    assert main(["cancel", orphan, *address]) == 0
    out = capsys.readouterr().out
    assert f"{ended} old: finished" in out and "cancelled" in out


def test_the_dashboards_mirror_copies_poisoned_searches_of_a_server(server, client, tmp_path):
    from winnow.ui.mirror import sync
    from winnow.ui.overview import overview

    ids = {_poison(server.store, text, SearchStatus.FINISHED) for text in POISONED.values()}
    mirror = Store(sqlite_url(tmp_path / "mirror.db"))
    sync(client, mirror)
    assert {s.id for s in mirror.searches()} == ids
    assert all(len(mirror.trials(search_id)) == 2 for search_id in ids)
    assert all(note.startswith("spec no longer valid") for note in overview(mirror)["note"])


def test_a_stored_strategy_without_continue_rungs_reads_as_trained_from_scratch():
    """A search stored before ``continue_rungs`` existed trained each rung from scratch and
    keeps doing so (and its stored epoch counts): the key's absence reads as false; a spec
    stored since carries the key, and a new spec's default stays true."""
    from winnow.service.search_spec import parse_search_spec

    old = _spec(strategy={"name": "random", "rungs": [1, 3]})
    stored = readout.stored_spec(json.dumps(old))
    assert stored.problem is None and stored.spec.strategy.continue_rungs is False
    assert readout.stored_defaults(old)["strategy"]["continue_rungs"] is False
    new = parse_search_spec(copy.deepcopy(old))
    assert new.strategy.continue_rungs is True
    assert readout.stored_spec(new.to_json()).spec.strategy.continue_rungs is True
