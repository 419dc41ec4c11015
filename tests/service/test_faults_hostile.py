"""Hostile requests against a real ``winnow serve`` with a token and a data root (issue 16's
abuse suite): malformed and hostile values sent raw with the generated stubs to every RPC,
each answered with the right status code (never INTERNAL or UNKNOWN); afterwards the server is
SERVING, every stored search is readable and cancellable, and a canary search finishes.

The cases are one table (``CASES``); the checks after the barrage are the last test of the
module, on the same server."""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from winnow.service.client import Client
from winnow.v1 import search_pb2 as pb

from ..conftest import TINY_SPEC
from .served import SERVING, Served, wait_until

pytestmark = pytest.mark.slow
TOKEN = "s3cret-token-0123456789abcdef"
SEARCH_SECONDS = 180
SHORT_MESSAGE = 400  # characters: a status message travels in a header
HEADER_BYTES = 8192  # gRPC's default limit of a reply's headers
C = grpc.StatusCode


@dataclass
class Target:
    """What the cases run against: the server, its data root, and two stored searches (one
    finished, one running for the whole barrage)."""

    served: Served
    root: Path
    outside: Path
    done: str
    running: str
    done_request: str
    stub: Any = None
    channel: Any = None


@dataclass(frozen=True)
class Case:
    rpc: str
    request: Callable[[Target], Any]  # the request message, built against the target
    code: grpc.StatusCode
    metadata: tuple | None = None  # None: the right token
    short: bool = False  # the answer's message must stay short whatever the request repeats


# --- request builders ---------------------------------------------------------------------------


def spec(*changes: tuple[str, Any], drop: tuple[str, ...] = ()) -> str:
    """The tiny spec's JSON with dotted fields set (``("budget.max_trials", 2**31)``) or
    dropped; NaN and infinities are written as the bare JSON extensions a hostile client
    can send."""
    data = copy.deepcopy(TINY_SPEC) | {"name": "hostile"}
    for dotted, value in changes:
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    for dotted in drop:
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        del node[last]
    return json.dumps(data, allow_nan=True)


def submit(text: str | Callable[[Target], str], request_id: str = "") -> Callable:
    def build(t: Target) -> pb.SubmitSearchRequest:
        spec_json = text(t) if callable(text) else text
        return pb.SubmitSearchRequest(
            request_id=request_id or uuid.uuid4().hex, spec_json=spec_json
        )

    return build


def dataset(make: Callable[[Target], str]) -> Callable:
    return submit(lambda t: spec(("task.dataset", make(t))))


def of(kind: type, **fields: Any) -> Callable:
    """``kind(**fields)``, where a field given as ``"{done}"`` or ``"{running}"`` names a stored
    search."""

    def build(t: Target) -> Any:
        names = {"{done}": t.done, "{running}": t.running}
        return kind(**{k: names.get(v, v) if isinstance(v, str) else v for k, v in fields.items()})

    return build


def deep_json(levels: int) -> str:
    return '{"name": "deep", "space": ' + "[" * levels + "]" * levels + "}"


def token(value: str) -> tuple:
    return (("authorization", value),)


GET, CANCEL, FRONT = pb.GetSearchRequest, pb.CancelSearchRequest, pb.GetParetoFrontRequest
LIST, TRIALS, WATCH = pb.ListSearchesRequest, pb.ListTrialsRequest, pb.WatchSearchRequest
EXPORT, IMPORTANCE = pb.ExportRecipeRequest, pb.GetImportanceRequest
LONG_ID, MAX_ID = "x" * 10_000, "y" * 128
INVALID, MISSING, OK, DENIED = C.INVALID_ARGUMENT, C.NOT_FOUND, C.OK, C.UNAUTHENTICATED


def case(name: str, rpc: str, request: Callable, code: grpc.StatusCode, *marks, **options):
    return pytest.param(Case(rpc, request, code, **options), id=name, marks=marks)


CASES = [
    # --- authentication: every RPC needs the token, compared exactly -----------------------
    case("auth-missing", "GetSearch", of(GET, search_id="{done}"), DENIED, metadata=()),
    case(
        "auth-wrong",
        "GetSearch",
        of(GET, search_id="{done}"),
        DENIED,
        metadata=token("Bearer wrong"),
    ),
    case(
        "auth-near-miss",
        "GetSearch",
        of(GET, search_id="{done}"),
        DENIED,
        metadata=token(f"Bearer {TOKEN[:-1]}F"),
    ),
    case("auth-prefix", "ListSearches", of(LIST), DENIED, metadata=token(f"Bearer {TOKEN[:-1]}")),
    case("auth-longer", "ListSearches", of(LIST), DENIED, metadata=token(f"Bearer {TOKEN}x")),
    case("auth-no-scheme", "ListSearches", of(LIST), DENIED, metadata=token(TOKEN)),
    case("auth-lower-scheme", "ListSearches", of(LIST), DENIED, metadata=token(f"bearer {TOKEN}")),
    case("auth-two-spaces", "ListSearches", of(LIST), DENIED, metadata=token(f"Bearer  {TOKEN}")),
    case("auth-empty-bearer", "ListSearches", of(LIST), DENIED, metadata=token("Bearer ")),
    case(
        "auth-other-header",
        "ListSearches",
        of(LIST),
        DENIED,
        metadata=(("x-token", f"Bearer {TOKEN}"),),
    ),
    case("auth-submit", "SubmitSearch", submit(spec()), DENIED, metadata=token("Bearer nope")),
    case("auth-cancel", "CancelSearch", of(CANCEL, search_id="{running}"), DENIED, metadata=()),
    case("auth-watch", "WatchSearch", of(WATCH, search_id="{done}"), DENIED, metadata=()),
    case("auth-trials", "ListTrials", of(TRIALS, search_id="{done}"), DENIED, metadata=()),
    case("auth-front", "GetParetoFront", of(FRONT, search_id="{done}"), DENIED, metadata=()),
    case("auth-export", "ExportRecipe", of(EXPORT, search_id="{done}"), DENIED, metadata=()),
    case(
        "auth-importance", "GetImportance", of(IMPORTANCE, search_id="{done}"), DENIED, metadata=()
    ),
    # --- SubmitSearch: the spec's text --------------------------------------------------------
    case("spec-empty", "SubmitSearch", submit(""), INVALID),
    case("spec-blank", "SubmitSearch", submit(" \n\t "), INVALID),
    case("spec-not-json", "SubmitSearch", submit("{"), INVALID),
    case("spec-array", "SubmitSearch", submit("[]"), INVALID),
    case("spec-null", "SubmitSearch", submit("null"), INVALID),
    case("spec-string", "SubmitSearch", submit('"digits"'), INVALID),
    case("spec-nested-10000", "SubmitSearch", submit(deep_json(10_000)), INVALID),
    case("spec-nested-100", "SubmitSearch", submit(deep_json(100)), INVALID),
    case("spec-over-1mib", "SubmitSearch", submit(spec(("pad", "x" * (1 << 20)))), INVALID),
    case("message-over-8mib", "SubmitSearch", submit("x" * (9 << 20)), C.RESOURCE_EXHAUSTED),
    case("spec-unknown-field", "SubmitSearch", submit(spec(("evil", 1))), INVALID),
    case("spec-no-space", "SubmitSearch", submit(spec(drop=("space",))), INVALID),
    case("space-path-absolute", "SubmitSearch", submit(spec(("space", "/etc/passwd"))), INVALID),
    case("space-path-relative", "SubmitSearch", submit(spec(("space", "../../x.yaml"))), INVALID),
    case("name-1mb", "SubmitSearch", submit(spec(("name", "n" * 1_000_000))), INVALID),
    case("name-201", "SubmitSearch", submit(spec(("name", "n" * 201))), INVALID),
    # messages that repeat a huge value are cut to fit gRPC's header limit
    case("field-name-10000", "SubmitSearch", submit(spec(("k" * 10_000, 1))), INVALID),
    case(
        "objective-name-100000",
        "SubmitSearch",
        submit(spec(("objectives", [{"name": "m" * 100_000}]))),
        INVALID,
    ),
    case("dataset-unicode-3000", "SubmitSearch", dataset(lambda t: "ü" * 3000), INVALID),
    case("request-id-129", "SubmitSearch", submit(spec(), "r" * 129), INVALID, short=True),
    case("request-id-10000", "SubmitSearch", submit(spec(), "r" * 10_000), INVALID, short=True),
    # --- budgets and seeds --------------------------------------------------------------------
    case("max-trials-2^31", "SubmitSearch", submit(spec(("budget.max_trials", 2**31))), INVALID),
    case("max-trials-2^63", "SubmitSearch", submit(spec(("budget.max_trials", 2**63))), INVALID),
    case("max-trials-10^30", "SubmitSearch", submit(spec(("budget.max_trials", 10**30))), INVALID),
    case("max-trials-0", "SubmitSearch", submit(spec(("budget.max_trials", 0))), INVALID),
    case("max-trials-negative", "SubmitSearch", submit(spec(("budget.max_trials", -1))), INVALID),
    case("max-trials-fraction", "SubmitSearch", submit(spec(("budget.max_trials", 1.5))), INVALID),
    case("max-epochs-2^31", "SubmitSearch", submit(spec(("budget.max_epochs", 2**31))), INVALID),
    case(
        "max-proposals-2^40", "SubmitSearch", submit(spec(("budget.max_proposals", 2**40))), INVALID
    ),
    case(
        "max-seconds-nan",
        "SubmitSearch",
        submit(spec(("budget.max_seconds", float("nan")))),
        INVALID,
    ),
    case("max-seconds-negative", "SubmitSearch", submit(spec(("budget.max_seconds", -1))), INVALID),
    case("seed-2^32", "SubmitSearch", submit(spec(("seed", 2**32))), INVALID),
    case("seed-2^64", "SubmitSearch", submit(spec(("seed", 2**64))), INVALID),
    case("seed-negative", "SubmitSearch", submit(spec(("seed", -1))), INVALID),
    case("seed-sql", "SubmitSearch", submit(spec(("seed", "0; DROP TABLE search"))), INVALID),
    # --- numbers of the space, objectives and constraints ---------------------------------------
    case(
        "lr-low-minus-inf",
        "SubmitSearch",
        submit(spec(("space.optimizer.lr.low", float("-inf")))),
        INVALID,
    ),
    case(
        "lr-low-nan",
        "SubmitSearch",
        submit(spec(("space.optimizer.lr.low", float("nan")))),
        INVALID,
    ),
    case(
        "lr-high-inf",
        "SubmitSearch",
        submit(spec(("space.optimizer.lr.high", float("inf")))),
        INVALID,
    ),
    case(
        "objective-reference-nan",
        "SubmitSearch",
        submit(spec(("objectives", [{"name": "accuracy", "reference": float("nan")}]))),
        INVALID,
    ),
    case(
        "objective-reference-inf",
        "SubmitSearch",
        submit(
            spec(
                (
                    "objectives",
                    [{"name": "params", "direction": "minimize", "reference": float("inf")}],
                )
            )
        ),
        INVALID,
    ),
    case(
        "objective-unknown-metric",
        "SubmitSearch",
        submit(spec(("objectives", [{"name": "__class__"}]))),
        INVALID,
    ),
    case(
        "objective-bad-direction",
        "SubmitSearch",
        submit(spec(("objectives", [{"name": "accuracy", "direction": "up"}]))),
        INVALID,
    ),
    case(
        "constraint-nan-text",
        "SubmitSearch",
        submit(spec(("constraints", ["params <= nan"]))),
        INVALID,
    ),
    case(
        "constraint-nan-value",
        "SubmitSearch",
        submit(spec(("constraints", [{"metric": "params", "op": "<=", "value": float("nan")}]))),
        INVALID,
    ),
    case(
        "constraint-inf-text",
        "SubmitSearch",
        submit(spec(("constraints", ["params <= inf"]))),
        INVALID,
    ),
    case(
        "constraint-code",
        "SubmitSearch",
        submit(spec(("constraints", ["__import__('os').system('true') <= 1"]))),
        INVALID,
    ),
    case(
        "constraint-bad-op", "SubmitSearch", submit(spec(("constraints", ["params == 1"]))), INVALID
    ),
    case("batch-size-0", "SubmitSearch", submit(spec(("space.optimizer.batch_size", 0))), INVALID),
    case(
        "batch-size-negative",
        "SubmitSearch",
        submit(spec(("space.optimizer.batch_size", -64))),
        INVALID,
    ),
    case("width-0", "SubmitSearch", submit(spec(("space.architecture.width", [0]))), INVALID),
    case(
        "width-10^9", "SubmitSearch", submit(spec(("space.architecture.width", [10**9]))), INVALID
    ),
    case(
        "depth-10^6", "SubmitSearch", submit(spec(("space.architecture.depth", [10**6]))), INVALID
    ),
    case(
        "family-unknown",
        "SubmitSearch",
        submit(spec(("space.architecture.family", "evil"))),
        INVALID,
    ),
    case("strategy-unknown", "SubmitSearch", submit(spec(("strategy.name", "evil"))), INVALID),
    case("rungs-empty", "SubmitSearch", submit(spec(("strategy.rungs", []))), INVALID),
    case("rungs-0", "SubmitSearch", submit(spec(("strategy.rungs", [0]))), INVALID),
    case("rungs-10^6", "SubmitSearch", submit(spec(("strategy.rungs", [10**6]))), INVALID),
    # 17 G parameters, past the server's size cap (--max-params, 1e8 by default)
    case(
        "mlp-17g-params",
        "SubmitSearch",
        submit(spec(("space.architecture.width", [16384]), ("space.architecture.depth", [64]))),
        INVALID,
    ),
    # --- datasets: arguments and paths outside the data root --------------------------------
    case("npz-no-path", "SubmitSearch", dataset(lambda t: "npz:"), INVALID),
    case("synthetic-0", "SubmitSearch", dataset(lambda t: "synthetic:0"), INVALID),
    case("synthetic-negative", "SubmitSearch", dataset(lambda t: "synthetic:-3x8x8"), INVALID),
    case("cifar10-bare", "SubmitSearch", dataset(lambda t: "cifar10"), INVALID),
    case("dataset-unknown", "SubmitSearch", dataset(lambda t: "imagenet"), INVALID),
    case("npz-dotdot", "SubmitSearch", dataset(lambda t: "npz:../../../../etc/passwd"), INVALID),
    case("npz-absolute", "SubmitSearch", dataset(lambda t: "npz:/etc/passwd"), INVALID),
    case(
        "npz-root-dotdot",
        "SubmitSearch",
        dataset(lambda t: f"npz:{t.root}/../outside/data.npz"),
        INVALID,
    ),
    case(
        "npz-sibling-prefix",
        "SubmitSearch",
        dataset(lambda t: f"npz:{t.root}-evil/data.npz"),
        INVALID,
    ),
    case("npz-home", "SubmitSearch", dataset(lambda t: "npz:~/data.npz"), INVALID),
    case(
        "npz-symlink-file",
        "SubmitSearch",
        dataset(lambda t: f"npz:{t.root}/link-to-outside.npz"),
        INVALID,
    ),
    case(
        "cifar10-symlink-dir",
        "SubmitSearch",
        dataset(lambda t: f"cifar10:{t.root}/link-to-slash"),
        INVALID,
    ),
    case("cifar10-slash", "SubmitSearch", dataset(lambda t: "cifar10:/"), INVALID),
    case("npz-nul", "SubmitSearch", dataset(lambda t: f"npz:{t.root}/a\x00b.npz"), INVALID),
    case("npz-nul-only", "SubmitSearch", dataset(lambda t: "npz:\x00"), INVALID),
    # --- idempotency ----------------------------------------------------------------------------
    case(
        "request-id-reused-other-spec",
        "SubmitSearch",
        lambda t: pb.SubmitSearchRequest(request_id=t.done_request, spec_json=spec()),
        C.ALREADY_EXISTS,
    ),
    # --- search ids, on every RPC that takes one --------------------------------------------
    *(
        case(f"{rpc}-{label}", rpc, of(kind, search_id=value), code, short=True)
        for rpc, kind in [
            ("GetSearch", GET),
            ("CancelSearch", CANCEL),
            ("GetParetoFront", FRONT),
            ("ListTrials", TRIALS),
            ("WatchSearch", WATCH),
            ("ExportRecipe", EXPORT),
            ("GetImportance", IMPORTANCE),
        ]
        for label, value, code in [
            ("empty-id", "", INVALID),
            ("unknown-id", "nope", MISSING),
            ("id-128", MAX_ID, MISSING),
            ("id-10000", LONG_ID, INVALID),
        ]
    ),
    case("GetSearch-id-sql", "GetSearch", of(GET, search_id="' OR '1'='1"), MISSING),
    case(
        "importance-evaluator-huge",
        "GetImportance",
        of(IMPORTANCE, search_id="{done}", evaluator="e" * 100_000),
        INVALID,
    ),
    case(
        "importance-epochs-negative",
        "GetImportance",
        of(IMPORTANCE, search_id="{done}", epochs=-1),
        INVALID,
    ),
    case("GetSearch-id-nul", "GetSearch", of(GET, search_id="a\x00b"), MISSING),
    case(
        "GetSearch-id-unicode-128", "GetSearch", of(GET, search_id="ü" * 128), MISSING, short=True
    ),
    # --- pages ------------------------------------------------------------------------------
    case("list-page-size-negative", "ListSearches", of(LIST, page_size=-1), INVALID),
    case("list-page-size-huge", "ListSearches", of(LIST, page_size=2**31 - 1), OK),
    case("list-token-20-digits", "ListSearches", of(LIST, page_token="9" * 20), INVALID),
    case("list-token-garbage", "ListSearches", of(LIST, page_token="garbage"), INVALID),
    case("list-token-nan", "ListSearches", of(LIST, page_token="nan/abc"), INVALID),
    case("list-token-inf", "ListSearches", of(LIST, page_token="inf/abc"), INVALID),
    case(
        "list-token-long-id",
        "ListSearches",
        of(LIST, page_token="1.0/" + LONG_ID),
        INVALID,
        short=True,
    ),
    case("list-token-far-future", "ListSearches", of(LIST, page_token="1e308/abc"), OK),
    case(
        "trials-page-size-negative",
        "ListTrials",
        of(TRIALS, search_id="{done}", page_size=-5),
        INVALID,
    ),
    case(
        "trials-token-20-digits",
        "ListTrials",
        of(TRIALS, search_id="{done}", page_token="9" * 20),
        INVALID,
    ),
    case(
        "trials-token-int64-max",
        "ListTrials",
        of(TRIALS, search_id="{done}", page_token=str(2**63 - 1)),
        OK,
    ),
    case(
        "trials-token-negative",
        "ListTrials",
        of(TRIALS, search_id="{done}", page_token="-1"),
        INVALID,
    ),
    case(
        "trials-token-unicode-digits",
        "ListTrials",
        of(TRIALS, search_id="{done}", page_token="١٢٣"),
        INVALID,
    ),
    case(
        "trials-filter-sql",
        "ListTrials",
        of(TRIALS, search_id="{done}", status="ok' OR 1=1 --"),
        OK,
    ),
    case("trials-epochs-negative", "ListTrials", of(TRIALS, search_id="{done}", epochs=-1), OK),
    # --- watching and exports -------------------------------------------------------------------
    case(
        "watch-after-negative", "WatchSearch", of(WATCH, search_id="{done}", after_event_id=-1), OK
    ),
    case(
        "watch-after-int64-max",
        "WatchSearch",
        of(WATCH, search_id="{done}", after_event_id=2**63 - 1),
        OK,
    ),
    case(
        "export-format-unknown",
        "ExportRecipe",
        of(EXPORT, search_id="{done}", format="evil"),
        INVALID,
    ),
    case(
        "export-format-path",
        "ExportRecipe",
        of(EXPORT, search_id="{done}", format="../../etc/passwd"),
        INVALID,
        short=True,
    ),
    case(
        "export-trial-negative",
        "ExportRecipe",
        of(EXPORT, search_id="{done}", trial_id=-1),
        MISSING,
    ),
    case(
        "export-trial-int32-max",
        "ExportRecipe",
        of(EXPORT, search_id="{done}", trial_id=2**31 - 1),
        MISSING,
    ),
    case(
        "export-running-no-trial",
        "ExportRecipe",
        of(EXPORT, search_id="{running}", trial_id=10**6),
        MISSING,
    ),
]


# --- the server ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Target:
    folder = tmp_path_factory.mktemp("hostile")
    root, outside = folder / "data", folder / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "data.npz").write_bytes(b"not yours")
    os.symlink(outside / "data.npz", root / "link-to-outside.npz")
    os.symlink("/", root / "link-to-slash")
    served = Served(folder, "--workers", "1", "--data-root", str(root), token=TOKEN).start()
    try:
        served.wait_ready()
        channel = served.channel()
        stub = served.stub(channel)
        done_request = uuid.uuid4().hex
        done = _submit(stub, spec(("name", "stored-done"), ("budget.max_trials", 2)), done_request)
        with Client(served.address, token=TOKEN, retries=10) as client:
            client.search(done).wait(timeout=SEARCH_SECONDS)
        # a 200-character name (the longest allowed), running through the whole barrage
        running = _submit(stub, spec(("name", "r" * 200), ("budget.max_trials", 100_000)))
        yield Target(served, root, outside, done, running, done_request, stub, channel)
        channel.close()
    finally:
        served.close()


def _submit(stub, spec_json: str, request_id: str = "") -> str:
    request = pb.SubmitSearchRequest(request_id=request_id or uuid.uuid4().hex, spec_json=spec_json)
    return stub.SubmitSearch(request, timeout=60, metadata=_good()).id


def _good() -> tuple:
    return token(f"Bearer {TOKEN}")


def _call(target: Target, case: Case) -> tuple[grpc.StatusCode, str]:
    method = getattr(target.stub, case.rpc)
    metadata = _good() if case.metadata is None else case.metadata
    request = case.request(target)
    try:
        answer = method(request, timeout=60, metadata=metadata)
        if case.rpc == "WatchSearch":
            list(answer)  # a stream's status comes at its end
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return C.OK, ""


@pytest.mark.parametrize("case", CASES)
def test_hostile_request_gets_the_right_status(target, case):
    searches_before = len(target.served.store.searches())
    code, message = _call(target, case)
    assert code not in (C.INTERNAL, C.UNKNOWN), f"{case.rpc}: {code.name}: {message}"
    assert code == case.code, f"{case.rpc}: expected {case.code.name}, got {code.name}: {message}"
    assert len(message.encode()) < HEADER_BYTES
    if case.short:
        assert len(message) < SHORT_MESSAGE, f"a {len(message)}-character message"
    if code != C.OK and case.rpc == "SubmitSearch":
        assert len(target.served.store.searches()) == searches_before  # nothing stored
    assert target.served.alive(), target.served.log_tail()


def test_enough_hostile_cases_across_every_rpc():
    rpcs = {p.values[0].rpc for p in CASES}
    assert len([c for c in CASES if not c.marks]) >= 60  # cases that run
    assert rpcs == set(pb.DESCRIPTOR.services_by_name["SearchService"].methods_by_name)


def test_after_the_barrage_the_server_serves_and_every_search_is_readable(target):
    """Last in the module: the cases above ran on this server first."""
    served, stub, metadata = target.served, target.stub, _good()
    assert served.health() == SERVING
    assert served.health("winnow.v1.SearchService") == SERVING
    listed, page = [], ""
    for _ in range(100):  # bounded: a page always moves on
        answer = stub.ListSearches(LIST(page_token=page), timeout=30, metadata=metadata)
        listed += [s.id for s in answer.searches]
        page = answer.next_page_token
        if not page:
            break
    stored = [s.id for s in served.store.searches()]
    assert sorted(listed) == sorted(stored)
    for search_id in stored:  # readable, then cancellable, whatever was accepted
        stub.GetSearch(GET(search_id=search_id), timeout=30, metadata=metadata)
        stub.GetParetoFront(FRONT(search_id=search_id), timeout=30, metadata=metadata)
        stub.ListTrials(TRIALS(search_id=search_id), timeout=30, metadata=metadata)
        stub.CancelSearch(CANCEL(search_id=search_id), timeout=30, metadata=metadata)
    wait_until(lambda: served.store.search(target.running).status == "cancelled", 60, "the cancel")
    canary = _submit(stub, spec(("name", "canary"), ("budget.max_trials", 1)))
    with Client(served.address, token=TOKEN, retries=10) as client:
        info = client.search(canary).wait(timeout=SEARCH_SECONDS)
    assert info["status"] == "finished" and info["progress"]["trained"] == 1, info
