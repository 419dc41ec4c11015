"""``SearchServicer``: the gRPC ``winnow.v1.SearchService`` over a ``SearchManager`` and its store.

Every failure a caller can act on is a gRPC status with a sentence: an invalid spec is
``INVALID_ARGUMENT`` naming the field, an unknown search or trial ``NOT_FOUND``, a full queue
``RESOURCE_EXHAUSTED``, user code from a module the server does not allow
(``--allow-module``) ``PERMISSION_DENIED`` naming the module (at submission, and when an
export format would build the trial's network or read its dataset), an export format whose
optional dependency the server lacks
``FAILED_PRECONDITION`` (naming the extra to install). Anything else is ``INTERNAL`` (and
logged with its traceback); one bad request never touches another search.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from winnow.records import SearchRecord, SearchStatus, TrialRecord
from winnow.search_space.datasets import DatasetError
from winnow.search_space.registry import UnknownNameError
from winnow.search_space.spec import BUILTIN_SPACES, SpecError
from winnow.search_space.user_code import ImportNotAllowedError
from winnow.service import export
from winnow.service.api import convert
from winnow.service.api.allowed_modules import check_imports
from winnow.service.api.data_roots import DataRootError, check_dataset, resolved
from winnow.service.api.manager import (
    QueueFullError,
    RequestIdReusedError,
    SearchManager,
    ShuttingDownError,
    shown,
)
from winnow.service.engine import importance, readout
from winnow.service.search_spec import SearchSpec, parse_search_spec
from winnow.service.store import StoreError, reads
from winnow.v1 import search_pb2 as pb
from winnow.v1 import search_pb2_grpc

log = logging.getLogger("winnow.server")

MAX_SPEC_BYTES = 1 << 20
MAX_SPEC_DEPTH = 64  # nested arrays and objects; real specs need under ten
MAX_ID_CHARS = 128  # search and request ids (the server's are 12 characters, a UUID 36)
MAX_TRIAL_ROW_ID = (1 << 63) - 1  # the store's integer ids are 64-bit
DEFAULT_PAGE, MAX_PAGE = 100, 1000
# A page of searches ends before its messages pass this size (specs are up to 1 MiB each, a
# reply at most server.MAX_MESSAGE_BYTES); one search over SEARCH_BYTES is sent without its spec.
PAGE_BYTES, SEARCH_BYTES = 1 << 20, 4 << 20
WATCH_POLL_SECONDS = 0.2
# A status message travels percent-encoded in the grpc-message header, and gRPC refuses headers
# past 8 KiB (RESOURCE_EXHAUSTED at the client, whatever the status was): a message repeating a
# caller's huge value (an unknown field, a 1 MB name) is cut to this many encoded bytes.
STATUS_MESSAGE_BYTES = 4096


class RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _status_of(error: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, RequestError):
        return error.code, str(error)
    if isinstance(error, RequestIdReusedError):
        return grpc.StatusCode.ALREADY_EXISTS, str(error)
    if isinstance(error, QueueFullError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)
    if isinstance(error, ShuttingDownError):
        return grpc.StatusCode.UNAVAILABLE, str(error)  # clients retry: the next server takes it
    if isinstance(error, readout.UnknownTrialError):
        return grpc.StatusCode.NOT_FOUND, str(error)
    if isinstance(
        error, readout.SpecNoLongerValidError | export.ExportError | export.MissingExtraError
    ):
        return grpc.StatusCode.FAILED_PRECONDITION, str(error)  # an extra: what to install
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); see server log"


def _bounded(message: str) -> str:
    """``message`` cut where its percent-encoded size passes ``STATUS_MESSAGE_BYTES`` (printable
    ASCII but ``%`` is sent as is, anything else as ``%XX`` per UTF-8 byte)."""
    size = 0
    for index, char in enumerate(message):
        size += 1 if " " <= char <= "~" and char != "%" else 3 * len(char.encode())
        if size > STATUS_MESSAGE_BYTES:
            return f"{message[:index]}… (cut: {len(message)} characters)"
    return message


def _rpc(method: Callable) -> Callable:
    """Map exceptions to gRPC statuses (see the module docstring)."""

    @functools.wraps(method)
    def wrapper(self: SearchServicer, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as error:
            code, message = _status_of(error)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method.__name__)
            context.abort(code, _bounded(message))

    return wrapper


def _stream_rpc(method: Callable) -> Callable:
    @functools.wraps(method)
    def wrapper(self: SearchServicer, request: Any, context: grpc.ServicerContext) -> Iterator:
        try:
            yield from method(self, request, context)
        except Exception as error:
            code, message = _status_of(error)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method.__name__)
            context.abort(code, _bounded(message))

    return wrapper


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    """``data_roots``: folders under which a spec may name dataset files (``npz:PATH``,
    ``cifar10:DIR``); the server reads nothing else a client names. ``allowed_modules``: the
    modules (and those under them) whose code a spec may name (``python:`` datasets); the
    server imports no other. ``max_watchers``: streams open at once, kept below the server's
    threads so that other calls always find one."""

    def __init__(
        self,
        manager: SearchManager,
        data_roots: tuple[Path, ...] = (),
        allowed_modules: tuple[str, ...] = (),
        max_watchers: int = 24,
    ) -> None:
        self.manager = manager
        self.store = manager.store
        self.data_roots = resolved(data_roots)
        self.allowed_modules = tuple(allowed_modules)
        self.max_watchers = max_watchers
        self._watchers = threading.BoundedSemaphore(max_watchers)

    # --- searches -----------------------------------------------------------------------------

    @_rpc
    def SubmitSearch(self, request: pb.SubmitSearchRequest, context) -> pb.Search:
        _checked_id("request_id", request.request_id)
        try:
            spec = _parse_spec(request.spec_json)
            _check_imports(spec, self.allowed_modules)
            _check_dataset_path(spec.task.dataset, self.data_roots)
            _check_replyable(spec)
            row, created = self.manager.submit(spec, request.request_id or None)
        except (SpecError, DatasetError) as error:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        except ValueError as error:  # e.g. a shape that is not the dataset's
            if isinstance(error, StoreError):
                raise
            message = f"invalid search spec: {error}"
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, message) from None
        if not created:
            log.info("search %s: repeated request %s", row.id, request.request_id)
        return self._search_message(row)

    @_rpc
    def GetSearch(self, request: pb.GetSearchRequest, context) -> pb.Search:
        return self._search_message(self._search_row(request.search_id))

    @_rpc
    def ListSearches(self, request: pb.ListSearchesRequest, context) -> pb.ListSearchesResponse:
        size = _page_size(request.page_size)
        rows = self.store.searches_page(_search_token(request.page_token), size + 1)
        progress, notes = self._page_progress(rows[:size])
        messages = _within_budget(
            [convert.search_message(r, progress[r.id], notes.get(r.id)) for r in rows[:size]]
        )
        last = rows[len(messages) - 1] if len(messages) < len(rows) else None
        return pb.ListSearchesResponse(
            searches=messages,
            # the last row's place, not an offset: searches submitted meanwhile shift nothing
            next_page_token=f"{last.created_at!r}/{last.id}" if last else "",
        )

    @_rpc
    def CancelSearch(self, request: pb.CancelSearchRequest, context) -> pb.Search:
        self._search_row(request.search_id)
        return self._search_message(self.manager.cancel(request.search_id))

    # --- trials and results -------------------------------------------------------------------

    @_rpc
    def ListTrials(self, request: pb.ListTrialsRequest, context) -> pb.ListTrialsResponse:
        self._search_row(request.search_id)
        size = _page_size(request.page_size)
        filters = {
            k: v
            for k, v in {
                "status": request.status,
                "stage": request.stage,
                "epochs": request.epochs,
            }.items()
            if v
        }
        after = _token(request.page_token)
        rows = self.store.trials_page(request.search_id, after, size + 1, **filters)
        more = len(rows) > size
        return pb.ListTrialsResponse(
            trials=[convert.trial_message(r) for r in rows[:size]],
            next_page_token=str(rows[size - 1].id) if more else "",
        )

    @_rpc
    def GetParetoFront(self, request: pb.GetParetoFrontRequest, context) -> pb.ParetoFront:
        row = self._search_row(request.search_id)
        spec = readout.stored_spec(row.spec_json).spec  # a stand-in's front is empty
        return convert.front_message(readout.pareto(spec, self.store.trials(row.id)))

    @_rpc
    def ExportRecipe(self, request: pb.ExportRecipeRequest, context) -> pb.Recipe:
        name = request.format or export.DEFAULT_FORMAT
        exporter = _exporter(name)
        row = self._search_row(request.search_id)
        trial_id = request.trial_id if request.HasField("trial_id") else None
        recipe = readout.recipe(row, self.store.trials(row.id), trial_id)
        if name not in export.IMPORTS_NOTHING:  # it builds the network or reads the dataset
            _check_imports(readout.stored_spec(row.spec_json).valid(), self.allowed_modules)
        return convert.recipe_message(row.id, recipe, exporter(recipe))

    @_rpc
    def GetImportance(self, request: pb.GetImportanceRequest, context) -> pb.ImportanceReport:
        evaluator = request.evaluator or importance.DEFAULT_EVALUATOR
        if evaluator not in importance.EVALUATORS:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"field 'evaluator': unknown evaluator {shown(evaluator)!r}; allowed: "
                + ", ".join(importance.EVALUATORS),
            )
        if request.epochs < 0 or request.min_trials < 0:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT, "fields 'epochs' and 'min_trials' are >= 0"
            )
        row = self._search_row(request.search_id)
        spec = readout.stored_spec(row.spec_json).valid()  # the space rebuilds the params
        rows = self.store.trials(row.id)
        if request.epochs:
            rows = [r for r in rows if r.epochs == request.epochs]
        min_trials = request.min_trials or importance.MIN_TRIALS
        found = importance.importances(spec, rows, evaluator, min_trials=min_trials)
        return convert.importance_message(found, evaluator, min_trials)

    # --- watching -----------------------------------------------------------------------------

    @_stream_rpc
    def WatchSearch(self, request: pb.WatchSearchRequest, context) -> Iterator[pb.SearchEvent]:
        row = self._search_row(request.search_id)
        if not self._watchers.acquire(blocking=False):
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.max_watchers} watchers are connected (the server's limit); "
                "poll GetSearch instead, or retry later",
            )
        try:
            yield from self._watch(row, request.after_event_id, context)
        finally:
            self._watchers.release()

    def _watch(self, row: SearchRecord, after: int, context) -> Iterator[pb.SearchEvent]:
        """Stored events after ``after``, then new ones, until the search ends."""
        quiet_while_ended = False
        while context.is_active():
            events = self.store.events(row.id, after)
            if events:
                snapshot = self._search_message(self.store.search(row.id))
                for event in events:
                    yield convert.event_message(event, snapshot)
                after = events[-1].id
                if any(e.kind == "search_finished" for e in events):
                    return
            ended = self.store.search(row.id).ended
            # A search that ended without a final event (e.g. run by an older winnow): stop
            # after one more quiet poll, so that an event written with the status is not missed.
            if ended and not events and quiet_while_ended:
                return
            quiet_while_ended = ended and not events
            time.sleep(WATCH_POLL_SECONDS)

    # --- helpers ------------------------------------------------------------------------------

    def _search_row(self, search_id: str) -> SearchRecord:
        if not search_id:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "field 'search_id' is empty")
        _checked_id("search_id", search_id)
        try:
            return self.store.search(search_id)
        except StoreError:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"no search {shown(search_id)!r} on this server; `winnow list` shows the searches",
            ) from None

    def _search_message(self, row: SearchRecord) -> pb.Search:
        counts = self.manager.progress(row.id)
        if counts is not None:  # a running engine's: its spec is valid, and parsed
            return _sendable(convert.search_message(row, counts))
        stored = readout.stored_spec(row.spec_json)
        counts = readout.progress(stored.spec, self.store.trials(row.id))
        return _sendable(convert.search_message(row, counts, stored.note))

    def _page_progress(
        self, rows: list[SearchRecord]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str | None]]:
        """The progress of a page of searches, and the notes of stored specs that no longer
        validate (``readout.StoredSpec.note``): a running one's from its engine, the others'
        from four aggregate reads of the whole page (counts, proposals, completed results,
        confirmation rows), not a read of every row of every search."""
        found = {r.id: p for r in rows if (p := self.manager.progress(r.id)) is not None}
        stored = [r for r in rows if r.id not in found]
        specs = {r.id: readout.stored_spec(r.spec_json) for r in stored}
        notes = {search_id: spec.note for search_id, spec in specs.items()}
        if not stored:
            return found, notes
        ids = [r.id for r in stored]
        counts = reads.counts(self.store, ids)
        proposals = reads.proposals(self.store, ids)
        results = reads.trained(self.store, ids)
        runs: dict[str, list[TrialRecord]] = {}  # the confirmation's rows (strategy.confirm)
        for run in reads.confirmation_runs(self.store, ids):
            runs.setdefault(run.search_id, []).append(run)
        for row in stored:
            mine = counts["search_id"] == row.id, results["search_id"] == row.id
            found[row.id] = _stored_progress(
                specs[row.id].spec,
                counts[mine[0]],
                proposals.get(row.id, 0),
                results[mine[1]],
                runs.get(row.id, []),
            )
        return found, notes


def _within_budget(messages: list[pb.Search]) -> list[pb.Search]:
    """The first messages whose sizes sum to at most ``PAGE_BYTES`` (at least one, so that every
    page moves on)."""
    page, total = [], 0
    for message in messages:
        total += _sendable(message).ByteSize()
        if page and total > PAGE_BYTES:
            break
        page.append(message)
    return page


def _sendable(message: pb.Search) -> pb.Search:
    """``message``, without its ``spec_json`` when it is over ``SEARCH_BYTES`` (a search stored
    by an older server, which took larger specs): no reply carrying it may pass gRPC's limit."""
    if message.ByteSize() > SEARCH_BYTES:
        log.warning(
            "search %s: its spec (%d bytes) is too large to send",
            message.id,
            len(message.spec_json),
        )
        message.spec_json = ""
    return message


def _stored_progress(
    spec: SearchSpec, counts: Any, proposals: int, trained: Any, runs: list[TrialRecord]
) -> dict[str, Any]:
    """One stored search's progress from its part of the page's ``reads.counts`` and
    ``reads.trained`` frames (``readout.front_points`` picks the front) and its confirmation
    rows (``runs``: a confirmed front leads by its means, as ``GetSearch`` and ``pareto``)."""
    results = zip(trained["number"], trained["rung"], trained["metrics"], strict=True)
    front = readout.front_points(spec, results)
    confirming, confirmed = readout.listed_confirmation(spec, runs, trained, *front[1:])
    groups = reads.tally_groups(counts)
    return readout.stored_progress(
        spec, groups, proposals, front, confirming=confirming, confirmed=confirmed
    )


def _parse_spec(text: str) -> SearchSpec:
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"field 'spec_json' is {len(text.encode())} bytes; the limit is {MAX_SPEC_BYTES}",
        )
    if not text.strip():
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "field 'spec_json' is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT, f"field 'spec_json' is not JSON: {error}"
        ) from None
    except RecursionError:  # the decoder recurses per level: deep enough text exhausts it
        raise _too_deep() from None
    if _depth(data) > MAX_SPEC_DEPTH:  # validation recurses too, and nothing real is this deep
        raise _too_deep()
    if not isinstance(data, dict):
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT, "field 'spec_json' must be a JSON object"
        )
    space = data.get("space")
    if isinstance(space, str) and space not in BUILTIN_SPACES:
        # a path would be read on the server's disk: spaces from files travel inline
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"field 'space': {space!r} is not a built-in space ({', '.join(BUILTIN_SPACES)}); "
            "send a space file's content inline (the SDK and CLI do)",
        )
    return parse_search_spec(data)


def _check_replyable(spec: SearchSpec) -> None:
    """Build the reply of a search of ``spec`` before storing it: a stored search that no
    reply can carry would break every later call on it (GetSearch, CancelSearch, listings)."""
    progress = readout.progress(spec, [])
    past = convert.out_of_range(progress)
    if past:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"invalid search spec: its progress ({', '.join(past)}) is past the int32 range "
            "that replies carry",
        )
    status = SearchStatus.QUEUED
    row = SearchRecord("", spec.name, spec.task.key, spec.to_json(), status, None, 0.0, 0.0)
    try:
        convert.search_message(row, progress).SerializeToString()
    except (ValueError, TypeError) as error:  # what protobuf raises for a value it cannot carry
        message = f"invalid search spec: a reply cannot carry it: {error}"
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, message) from None


def _too_deep() -> RequestError:
    return RequestError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"field 'spec_json' is nested too deep (the limit is {MAX_SPEC_DEPTH} levels)",
    )


def _depth(data: Any) -> int:
    """How deeply arrays and objects nest in parsed JSON (iteratively: no recursion limit)."""
    deepest, stack = 0, [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth + 1)
            stack.extend((item, depth + 1) for item in value)
    return deepest


def _exporter(name: str) -> export.Exporter:
    try:
        return export.EXPORT_FORMATS.get(name)
    except UnknownNameError as error:  # names the allowed formats
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"field 'format': {error}") from None


def _page_size(requested: int) -> int:
    if requested < 0:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "field 'page_size' is negative")
    return min(requested or DEFAULT_PAGE, MAX_PAGE)


def _bad_token(token: str) -> RequestError:
    return RequestError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"invalid page token: field 'page_token' {shown(token)!r} is not a token this server gave",
    )


def _token(token: str) -> int:
    """A trial page's token: the last row's id (a 64-bit integer, as the store keeps them)."""
    if not token:
        return 0
    if not (token.isascii() and token.isdigit()) or int(token) > MAX_TRIAL_ROW_ID:
        raise _bad_token(token)
    return int(token)


def _search_token(token: str) -> tuple[float, str] | None:
    """A search page's token: ``CREATED_AT/ID`` of the last search, as ``ListSearches`` wrote it."""
    if not token:
        return None
    created_at, slash, search_id = token.partition("/")
    try:
        when = float(created_at)
    except ValueError:
        raise _bad_token(token) from None
    if not (slash and search_id and len(search_id) <= MAX_ID_CHARS and math.isfinite(when)):
        raise _bad_token(token)
    return when, search_id


def _checked_id(field: str, value: str) -> str:
    """Ids beyond any this server makes are refused before they reach a query or a message (a
    message repeating one in full can pass gRPC's header limit)."""
    if len(value) > MAX_ID_CHARS:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"field {field!r} is too long ({len(value)} characters; the limit is {MAX_ID_CHARS})",
        )
    return value


def _check_imports(spec: SearchSpec, allowed: tuple[str, ...]) -> None:
    try:
        check_imports(spec, allowed)
    except ImportNotAllowedError as error:
        raise RequestError(grpc.StatusCode.PERMISSION_DENIED, str(error)) from None


def _check_dataset_path(dataset: str, roots: tuple[Path, ...]) -> None:
    try:
        check_dataset(dataset, roots)
    except DataRootError as error:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT, f"field 'task.dataset': {error}"
        ) from None
