"""The gRPC service against a real server on a loopback port: the SDK round trip, idempotent
submission, watch resumption, every error status, auth, TLS, health and reflection, and many
concurrent clients."""

from __future__ import annotations

import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from winnow.service.client import Client, WinnowError
from winnow.v1 import search_pb2 as pb
from winnow.v1 import search_pb2_grpc


def test_submit_watch_pareto_export_round_trip(client, tmp_path, tiny_spec):
    search = client.submit(tiny_spec())
    events = list(search.watch())
    kinds = [e.kind for e in events]
    assert kinds[0] == "status" and kinds[-1] == "search_finished"
    assert "search_started" in kinds and "trial" in kinds
    assert [e.id for e in events] == sorted(e.id for e in events)
    final = events[-1].search
    assert final["status"] == "finished" and final["progress"]["trained"] == 3

    front = search.pareto()
    assert front and {"trial_id", "accuracy", "params", "candidate"} <= set(front[0])
    accuracies = [p["accuracy"] for p in front]
    assert accuracies == sorted(accuracies, reverse=True)

    path = tmp_path / "recipe.json"
    recipe = search.export(path=path)
    assert json.loads(path.read_text()) == recipe
    assert recipe["trial_id"] == front[0]["trial_id"]
    assert recipe["candidate"] == front[0]["candidate"]
    assert recipe["training"]["task"]["dataset"] == "digits" and recipe["training"]["epochs"] == 1
    other = front[-1]["trial_id"]
    assert search.export(trial_id=other)["trial_id"] == other

    rows = search.trials()
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    paged = search.trials(page_size=1)  # three pages
    assert [r["row_id"] for r in paged] == [r["row_id"] for r in rows]
    assert search.trials(status="failed") == []
    assert client.searches()[0]["id"] == search.id


def test_submit_is_idempotent_by_request_id(client, tiny_spec):
    first = client.submit(tiny_spec(), request_id="req-1")
    again = client.submit(tiny_spec(), request_id="req-1")
    assert first.id == again.id
    other = client.submit(tiny_spec(), request_id="req-2")
    assert other.id != first.id
    with ThreadPoolExecutor(6) as pool:  # concurrent retries of one request: one search
        retried = set(pool.map(lambda _: client.submit(tiny_spec(), "req-3").id, range(6)))
    assert len(retried) == 1
    listed = [s["id"] for s in client.searches(page_size=1)]  # one page per search
    assert sorted(listed) == sorted({first.id, other.id, *retried})


def test_a_request_id_reused_with_another_spec_is_refused(client, tiny_spec):
    first = client.submit(tiny_spec(), request_id="req-9")
    with pytest.raises(WinnowError) as raised:
        client.submit(tiny_spec(seed=1), request_id="req-9")
    assert raised.value.code == "ALREADY_EXISTS"
    assert f"request id 'req-9' already created search {first.id} with another spec" in str(
        raised.value
    )


def test_watch_resumes_after_the_last_event_seen(client, tiny_spec):
    search = client.submit(tiny_spec())
    events = list(search.watch())
    middle = events[len(events) // 2].id
    resumed = list(search.watch(after_event_id=middle))
    assert [e.id for e in resumed] == [e.id for e in events if e.id > middle]


@pytest.mark.parametrize(
    "changes, raw, words",
    [
        ({"budget": {"max_trials": -1}}, None, "budget.max_trials"),
        ({"objectives": [{"name": "accuracy", "direction": "up"}]}, None, "direction"),
        (None, "{not json", "not JSON"),
        (None, "[1, 2]", "JSON object"),
        (None, "", "empty"),
        ({"space": "/etc/passwd"}, None, "not a built-in space"),
        ({"task": {"dataset": "no-such-data"}}, None, "no-such-data"),
    ],
)
def test_invalid_specs_are_invalid_argument_naming_the_problem(
    server, tiny_spec, changes, raw, words
):
    spec_json = raw if changes is None else json.dumps(tiny_spec(**changes))
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as raised:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        stub.SubmitSearch(pb.SubmitSearchRequest(spec_json=spec_json), timeout=20)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in raised.value.details()


def test_unknown_search_and_trial_are_not_found(client, tiny_spec):
    stub = client.stub
    unknown = "no-such-search"
    calls = [
        lambda: stub.GetSearch(pb.GetSearchRequest(search_id=unknown)),
        lambda: list(stub.WatchSearch(pb.WatchSearchRequest(search_id=unknown))),
        lambda: stub.CancelSearch(pb.CancelSearchRequest(search_id=unknown)),
        lambda: stub.GetParetoFront(pb.GetParetoFrontRequest(search_id=unknown)),
        lambda: stub.ListTrials(pb.ListTrialsRequest(search_id=unknown)),
        lambda: stub.ExportRecipe(pb.ExportRecipeRequest(search_id=unknown)),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as raised:
            call()
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert "winnow list" in raised.value.details()
    search = client.submit(tiny_spec())
    search.wait()
    with pytest.raises(WinnowError, match="trial 999 .* does not exist") as raised:
        search.export(trial_id=999)
    assert raised.value.code == "NOT_FOUND"


def test_a_full_queue_is_resource_exhausted_and_cancel_frees_it(make_server, tiny_spec):
    server = make_server(max_concurrent_searches=1, max_queued_searches=1)
    with Client(server.address, retries=0) as client:
        running = client.submit(tiny_spec(budget={"max_trials": 500}))
        next(e for e in running.watch() if e.kind == "search_started")  # it left the queue
        waiting = client.submit(tiny_spec())
        with pytest.raises(WinnowError) as raised:
            client.submit(tiny_spec())
        assert raised.value.code == "RESOURCE_EXHAUSTED" and "waiting" in raised.value.message
        assert waiting.cancel()["status"] == "cancelled"
        assert client.submit(tiny_spec()).info()["status"] == "queued"
        running.cancel()
        assert running.wait()["status"] == "cancelled"
        assert running.info()["progress"]["trained"] < 500


def test_oversized_requests_are_refused_without_harming_other_searches(client, server, tiny_spec):
    search = client.submit(tiny_spec())
    stub = client.stub
    with pytest.raises(grpc.RpcError) as raised:
        stub.SubmitSearch(pb.SubmitSearchRequest(spec_json="x" * (9 << 20)), timeout=20)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as raised:
        stub.SubmitSearch(pb.SubmitSearchRequest(spec_json=" " * (2 << 20)), timeout=20)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit" in raised.value.details()
    assert search.wait()["status"] == "finished"


def test_bearer_token_is_required_on_every_call_when_set(make_server, tiny_spec):
    server = make_server(token="s3cret")
    for token in (None, "wrong"):
        with Client(server.address, token=token, retries=0) as client:
            with pytest.raises(WinnowError) as raised:
                client.searches()
            assert raised.value.code == "UNAUTHENTICATED"
            stream = client.stub.WatchSearch(
                pb.WatchSearchRequest(search_id="x"), metadata=client.metadata
            )
            with pytest.raises(grpc.RpcError) as streamed:
                list(stream)
            assert streamed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with Client(server.address, token="s3cret") as client:
        assert client.searches() == []
        assert client.submit(tiny_spec()).wait()["status"] == "finished"


def test_health_and_reflection_are_served(server):
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "winnow.v1.SearchService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(reflect.ServerReflectionInfo(iter([request]), timeout=10))
    names = {s.name for s in reply.list_services_response.service}
    assert {"winnow.v1.SearchService", "grpc.health.v1.Health"} <= names


def test_tls(make_server, self_signed):
    cert, key = self_signed
    server = make_server(tls_cert=cert, tls_key=key)
    address = f"localhost:{server.port}"
    with Client(address, tls_ca=cert) as client:
        assert client.searches() == []
    plain = Client(address, retries=0, timeout=5)  # plaintext to a TLS port fails
    with plain, pytest.raises(WinnowError):
        plain.searches()


def test_eight_concurrent_clients_submit_and_watch(make_server, tiny_spec):
    server = make_server(max_concurrent_searches=2)

    def one_client(k: int) -> tuple[str, str, int]:
        with Client(server.address) as client:
            search = client.submit(tiny_spec(name=f"client-{k}", seed=k))
            events = list(search.watch())
            return search.id, events[-1].search["status"], events[-1].search["progress"]["trained"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one_client, range(8)))
    assert len({search_id for search_id, _, _ in results}) == 8
    assert all(status == "finished" and trained == 3 for _, status, trained in results)


def test_cancel_stops_a_running_search_from_another_thread(client, tiny_spec):
    search = client.submit(tiny_spec(budget={"max_trials": 100}))
    seen = threading.Event()

    def cancel_after_first_trial():
        for event in search.watch():
            if event.kind == "trial":
                seen.set()
                search.cancel()
                return

    thread = threading.Thread(target=cancel_after_first_trial)
    thread.start()
    info = search.wait()
    thread.join()
    assert seen.is_set() and info["status"] == "cancelled"
    assert 1 <= info["progress"]["trained"] < 100


def test_dataset_files_are_read_only_under_the_servers_data_roots(make_server, tmp_path, tiny_spec):
    rng = np.random.default_rng(0)
    arrays = {
        "train_x": rng.random((40, 64), dtype=np.float32),
        "train_y": rng.integers(0, 10, 40),
        "test_x": rng.random((20, 64), dtype=np.float32),
        "test_y": rng.integers(0, 10, 20),
    }
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "tiny.npz", **arrays)
    np.savez(tmp_path / "outside.npz", **arrays)
    server = make_server(data_roots=(tmp_path / "data",))
    with Client(server.address, retries=0) as client:
        with pytest.raises(WinnowError) as raised:
            client.submit(tiny_spec(task={"dataset": f"npz:{tmp_path / 'outside.npz'}"}))
        assert raised.value.code == "INVALID_ARGUMENT" and "data roots" in raised.value.message
        inside = tiny_spec(task={"dataset": f"npz:{tmp_path / 'data' / 'tiny.npz'}"})
        assert client.submit(inside).wait()["status"] == "finished"


def test_a_bare_cifar10_is_refused_rather_than_downloaded(
    make_server, tmp_path, tiny_spec, monkeypatch
):
    def download(*args, **kwargs):
        raise AssertionError("the server tried to download CIFAR-10")

    monkeypatch.setattr("urllib.request.urlopen", download)
    server = make_server(data_roots=(tmp_path,))
    for message in refusals(server, tiny_spec, ("cifar10", "cifar10:")):
        assert "field 'task.dataset'" in message and "cifar10:DIR" in message


def test_an_invalid_dataset_argument_is_invalid_argument(make_server, tiny_spec):
    for message in refusals(make_server(), tiny_spec, ("npz:", "synthetic:0")):
        assert "task.dataset" in message


def refusals(server, tiny_spec, datasets) -> list[str]:
    """The INVALID_ARGUMENT messages of submitting the tiny spec on each dataset."""
    messages = []
    with Client(server.address, retries=0) as client:
        for dataset in datasets:
            with pytest.raises(WinnowError) as raised:
                client.submit(tiny_spec(task={"dataset": dataset}))
            assert raised.value.code == "INVALID_ARGUMENT"
            messages.append(raised.value.message)
    return messages


def test_watchers_beyond_the_limit_are_refused(make_server, tiny_spec, monkeypatch):
    monkeypatch.setattr("winnow.service.api.server.WATCHERS", 1)
    server = make_server()
    with Client(server.address, retries=0) as client:
        search = client.submit(tiny_spec(budget={"max_trials": 50}))
        first = search.watch()
        next(first)  # holds the one watcher slot
        with pytest.raises(grpc.RpcError) as raised:
            next(client.stub.WatchSearch(pb.WatchSearchRequest(search_id=search.id)))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "poll GetSearch" in raised.value.details()
        search.cancel()
        assert [e.kind for e in first][-1] == "search_finished"


def test_an_invalid_spec_is_one_invalid_argument_listing_every_problem(server, tiny_spec):
    spec = tiny_spec(colour=1, budget={"max_trals": 3}, objectives=[{"name": "acuracy"}])
    spec["space"]["architecture"]["family"] = "mlpp"
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as raised:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        stub.SubmitSearch(pb.SubmitSearchRequest(spec_json=json.dumps(spec)), timeout=20)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = raised.value.details()
    assert details.startswith("invalid search spec:\n") and details.count("invalid") == 1
    for line in (
        "field 'colour': unknown field; allowed: name, space, task",
        "field 'budget.max_trals': unknown field; allowed: max_trials",
        "field 'objectives[0].name': unknown metric 'acuracy'; allowed: accuracy",
        "field 'space.architecture.family': unknown family 'mlpp'; allowed: nb201, macro, mlp",
    ):
        assert line in details


def _status_of_call(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


def test_a_spec_nested_too_deep_is_invalid_argument(client):
    for deep in ("[" * 10_000 + "]" * 10_000, '{"name": ' + "[" * 200 + "]" * 200 + "}"):
        request = pb.SubmitSearchRequest(spec_json=deep)
        code, details = _status_of_call(lambda r=request: client.stub.SubmitSearch(r, timeout=20))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "nested too deep" in details


def test_page_tokens_out_of_range_are_invalid_argument(client, tiny_spec):
    search = client.submit(tiny_spec())
    for token in ("99999999999999999999", "-1", "nan/x", "inf/x", "1e400/x", "x" * 100_000):
        calls = [
            lambda t=token: client.stub.ListSearches(pb.ListSearchesRequest(page_token=t)),
            lambda t=token: client.stub.ListTrials(
                pb.ListTrialsRequest(search_id=search.id, page_token=t)
            ),
        ]
        for call in calls:
            code, details = _status_of_call(call)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (token[:30], code, details)
            assert "invalid page token" in details and len(details) < 300
    search.cancel()


def test_long_ids_are_refused_and_never_repeated_in_full(client, tiny_spec):
    long_id = "s" * 20_000
    calls = [
        lambda i: client.stub.GetSearch(pb.GetSearchRequest(search_id=i)),
        lambda i: list(client.stub.WatchSearch(pb.WatchSearchRequest(search_id=i))),
        lambda i: client.stub.CancelSearch(pb.CancelSearchRequest(search_id=i)),
        lambda i: client.stub.ListTrials(pb.ListTrialsRequest(search_id=i)),
    ]
    for call in calls:
        code, details = _status_of_call(lambda c=call: c(long_id))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "too long" in details
        assert len(details) < 300
        code, details = _status_of_call(lambda c=call: c("u" * 100))  # within the bound
        assert code == grpc.StatusCode.NOT_FOUND and "u" * 64 + "…" in details
        assert "u" * 65 not in details
    spec_json = json.dumps(tiny_spec())
    request = pb.SubmitSearchRequest(request_id="r" * 20_000, spec_json=spec_json)
    code, details = _status_of_call(lambda: client.stub.SubmitSearch(request, timeout=20))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "too long" in details
    client.submit(tiny_spec(), request_id="q" * 100).cancel()
    with pytest.raises(WinnowError) as raised:
        client.submit(tiny_spec(seed=1), request_id="q" * 100)
    assert raised.value.code == "ALREADY_EXISTS" and "q" * 65 not in raised.value.message


def test_waiters_beyond_the_watcher_limit_poll_instead(make_server, tiny_spec, monkeypatch):
    monkeypatch.setattr("winnow.service.api.server.WATCHERS", 2)
    monkeypatch.setattr("winnow.service.client.POLL_SECONDS", 0.2)
    server = make_server()
    with Client(server.address, retries=0) as client:
        search = client.submit(tiny_spec(budget={"max_trials": 4}))
        with ThreadPoolExecutor(6) as pool:  # six waiters, two streams: four must poll
            finals = list(pool.map(lambda _: search.wait(timeout=120), range(6)))
            watched = [list(w) for w in pool.map(lambda _: search.watch(), range(6))]
    assert [f["status"] for f in finals] == ["finished"] * 6
    assert all(f == finals[0] for f in finals) and finals[0]["progress"]["trained"] == 4
    assert all(events[-1].kind == "search_finished" for events in watched)
    assert all(events[-1].search["status"] == "finished" for events in watched)


def test_searches_with_large_specs_list_over_pages(server, client, tiny_spec):
    """Old stored searches whose specs are large (a wide inline space) fill pages by size: every
    page stays under gRPC's limit, and one search too large for any page comes without its spec."""
    from winnow.records import SearchStatus
    from winnow.service.search_spec import parse_search_spec

    def store(widths: int) -> str:
        spec = tiny_spec()
        spec["space"]["architecture"]["width"] = [i % 16384 + 1 for i in range(widths)]
        spec_json = parse_search_spec(spec).to_json()
        return server.store.create_search("wide", "digits", spec_json, SearchStatus.FINISHED)

    wide = [store(200_000) for _ in range(9)]  # 1.5 MB each, 13 MB together
    huge = store(1_200_000)  # 9 MB: over the reply limit alone
    listed = client.searches()
    assert sorted(s["id"] for s in listed) == sorted([*wide, huge])
    specs = {s["id"]: s["spec"] for s in listed}
    assert specs[huge] is None
    assert all(len(specs[i]["space"]["architecture"]["width"]) == 200_000 for i in wide)
    assert client.search(huge).id == huge


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (
            {
                "space": {
                    "architecture": {"family": "mlp"},
                    "optimizer": {"lr": {"low": -math.inf, "high": 0.1}},
                }
            },
            "space.optimizer.lr",
        ),
        ({"budget": {"max_trials": 2**31}}, "budget.max_trials"),
    ],
)
def test_out_of_range_numbers_are_invalid_argument_and_nothing_is_stored(
    client, server, tiny_spec, changes, field
):
    spec_json = json.dumps(tiny_spec(**changes))  # -Infinity: Python's JSON reads it
    with pytest.raises(grpc.RpcError) as raised:
        client.stub.SubmitSearch(pb.SubmitSearchRequest(spec_json=spec_json), timeout=20)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"field '{field}'" in raised.value.details()
    assert client.searches() == []


def test_the_handler_never_loads_a_dataset_and_the_search_start_checks_it(
    make_server, tiny_spec, monkeypatch
):
    from winnow.search_space import datasets

    loaders: list[str] = []  # the threads that loaded a dataset
    load = datasets.load_dataset

    def recording_load(spec):
        loaders.append(threading.current_thread().name)
        return load(spec)

    monkeypatch.setattr(datasets, "load_dataset", recording_load)
    server = make_server()
    with Client(server.address, retries=0) as client:
        with pytest.raises(WinnowError) as raised:  # known from its argument: refused at once
            client.submit(tiny_spec(task={"dataset": "synthetic:20", "input_shape": [3, 8, 8]}))
        assert raised.value.code == "INVALID_ARGUMENT"
        shape = "field 'task.input_shape': [3, 8, 8] is not the shape of synthetic:20 ([20])"
        assert shape in raised.value.message
        search = client.submit(tiny_spec(task={"dataset": "digits", "num_classes": 3}))
        info = search.wait(timeout=120)
    assert info["status"] == "failed"
    assert (
        "field 'task.num_classes': 3 is not the number of classes of digits (10)" in (info["error"])
    )
    assert loaders and not any(name.startswith("grpc") for name in loaders)


def test_candidates_over_the_servers_size_cap_fail_unbuilt(make_server, tiny_spec):
    # 1,000: the least MLP passes the submit check at the probe's 16 features (338
    # parameters), but every MLP on the digits' 64 features has more (1,242 at least)
    server = make_server(max_params=1000)
    with Client(server.address, retries=0) as client:
        search = client.submit(tiny_spec())
        info = search.wait(timeout=120)
        rows = search.trials()
    assert info["status"] == "failed" and "over the server's cap of 1,000" in info["error"]
    assert rows and all(r["stage"] == "costs" and r["status"] == "failed" for r in rows)


def test_a_space_whose_least_candidate_is_over_the_size_cap_is_refused(make_server, tiny_spec):
    server = make_server(max_params=300)  # the least MLP has 338 at the probe's 16 features
    with Client(server.address, retries=0) as client:
        with pytest.raises(WinnowError) as refused:
            client.submit(tiny_spec())
        assert refused.value.code == "INVALID_ARGUMENT"
        assert "least candidate" in str(refused.value)
        assert "over this server's cap of 300" in str(refused.value)
        assert client.searches() == []  # nothing stored
