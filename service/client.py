"""The client SDK: ``Client(address, token=None)`` talks to a winnow server (both default to
the environment: ``WINNOW_ADDRESS``, ``WINNOW_TOKEN_FILE``, ``WINNOW_TOKEN``); ``submit(spec)``
returns a ``Search`` handle to watch, wait for, read and export.

    from winnow import Client, SearchSpec
    client = Client("127.0.0.1:50051")
    search = client.submit("examples/digits-search.yaml")
    search.wait(progress=True)
    print(search.pareto())
    search.export(path="recipe.json")

Calls have a deadline (``timeout``, retries included) and are retried with backoff when the
server is unavailable or restarting; submissions carry a request id, so a retried submit never
makes two searches.
``watch`` reconnects and resumes from the last event it saw. Server errors surface as
``WinnowError`` with the gRPC status name and the server's sentence.

The SDK imports gRPC and the generated code, never torch or optuna: a spec is parsed here (its
shape) and its names (space, dataset, strategy, proxies) are checked by the server, which
answers INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
from tqdm import tqdm

from winnow.records import TERMINAL
from winnow.search_space.builtin_spaces import BUILTIN_SPACES, read_space_file
from winnow.search_space.specfile import SpecError
from winnow.service import env, progress_text
from winnow.service.api import convert
from winnow.service.export import recipe
from winnow.service.search_spec import SearchSpec, load_search_spec, parse_search_spec
from winnow.v1 import search_pb2 as pb
from winnow.v1 import search_pb2_grpc

RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
# Pings on an idle connection, so that a watch on a server that vanished without closing it
# fails (and reconnects) instead of waiting forever.
# The server's reply limit (``api.server.MAX_MESSAGE_BYTES``, which imports torch: not here);
# gRPC clients refuse replies over 4 MiB by default, and an export bundle can be near 8 MiB.
MAX_REPLY_BYTES = 8 << 20
KEEPALIVE = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", MAX_REPLY_BYTES),
]
# While the server's watch streams are all taken (RESOURCE_EXHAUSTED), a watch polls GetSearch
# this often, and tries the stream again each time (a slot may have freed).
POLL_SECONDS = 1.0


class WinnowError(Exception):
    """A call the server refused or that failed; ``code`` is the gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    time: float
    payload: dict[str, Any]
    search: dict[str, Any]


class Client:
    """A connection to a winnow server.

    Args:
        address: HOST:PORT (default: ``$WINNOW_ADDRESS``, else 127.0.0.1:50051).
        token: the bearer token (default: the content of ``token_file``, else of
            ``$WINNOW_TOKEN_FILE``, else ``$WINNOW_TOKEN``; see ``winnow.service.env``).
        token_file: a file holding the bearer token.
        tls_ca: the CA certificate (PEM) of a TLS server.
        timeout: seconds each call may take in all, its retries and their waits included.
        retries: how many times a call is retried while the server is unavailable.
    """

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        tls_ca: str | Path | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        token_file: str | Path | None = None,
    ) -> None:
        address, token = env.address(address), env.token(token, token_file)
        self.address, self.timeout, self.retries = address, timeout, retries
        if tls_ca is not None:
            credentials = grpc.ssl_channel_credentials(Path(tls_ca).read_bytes())
            self.channel = grpc.secure_channel(address, credentials, options=KEEPALIVE)
        else:
            self.channel = grpc.insecure_channel(address, options=KEEPALIVE)
        self.stub = search_pb2_grpc.SearchServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- searches -----------------------------------------------------------------------------

    def submit(
        self,
        spec: SearchSpec | dict | str | Path,
        request_id: str | None = None,
        warm_start: Iterator[str | Path | dict] | list[str | Path | dict] = (),
    ) -> Search:
        """Validate ``spec`` here (a file path, a mapping or a ``SearchSpec``), send it with its
        space inline, and return the search's handle. ``warm_start``: exported recipes (files
        or mappings) or candidates the search tries first, after the spec's own
        ``warm_start``; the server refuses one outside the space (INVALID_ARGUMENT)."""
        spec = _with_warm_starts(_as_spec(spec), [_warm_start(item) for item in warm_start])
        request = pb.SubmitSearchRequest(
            request_id=request_id or uuid.uuid4().hex, spec_json=_inline(spec).to_json()
        )
        return Search(self, self._call("SubmitSearch", request).id)

    def search(self, search_id: str) -> Search:
        """The handle of an existing search (NOT_FOUND when the server has none)."""
        self._call("GetSearch", pb.GetSearchRequest(search_id=search_id))
        return Search(self, search_id)

    def searches(self, page_size: int = 100) -> list[dict[str, Any]]:
        """Every search on the server, newest first (all pages)."""
        found, token = [], ""
        while True:
            request = pb.ListSearchesRequest(page_size=page_size, page_token=token)
            response = self._call("ListSearches", request)
            found += [convert.search_dict(s) for s in response.searches]
            token = response.next_page_token
            if not token:
                return found

    # --- calls --------------------------------------------------------------------------------

    def _call(self, method: str, request: Any) -> Any:
        """One unary call, retried with backoff while the server is away; ``timeout`` bounds
        the whole of it: each try gets what is left, and no retry starts whose wait would end
        past the deadline."""
        start = time.monotonic()
        deadline = start + self.timeout
        for attempt in range(self.retries + 1):
            try:
                return getattr(self.stub, method)(
                    request, timeout=max(deadline - time.monotonic(), 0.0), metadata=self.metadata
                )
            except grpc.RpcError as error:
                pause = min(0.2 * 2**attempt, 5.0)
                out_of_time = time.monotonic() + pause >= deadline
                if error.code() not in RETRYABLE:
                    raise _error(error) from None
                if attempt == self.retries or out_of_time:
                    seconds = time.monotonic() - start
                    raise _gave_up(error, self.address, attempt + 1, seconds) from None
                time.sleep(pause)
        raise AssertionError("unreachable")

    def _stream(self, method: str, request: Any, timeout: float | None = None) -> Iterator[Any]:
        return getattr(self.stub, method)(request, timeout=timeout, metadata=self.metadata)


class Search:
    """A handle on one search of a server."""

    def __init__(self, client: Client, search_id: str) -> None:
        self.client, self.id = client, search_id

    def __repr__(self) -> str:
        return f"Search({self.id!r} on {self.client.address})"

    def info(self) -> dict[str, Any]:
        """Name, status, error, spec and progress counters."""
        return convert.search_dict(
            self.client._call("GetSearch", pb.GetSearchRequest(search_id=self.id))
        )

    def watch(self, after_event_id: int = 0, timeout: float | None = None) -> Iterator[Event]:
        """Events as they happen until the search ends; reconnects after a dropped stream or a
        server restart, resuming after the last event seen. ``timeout`` (seconds, in all):
        ``TimeoutError`` when the search has not ended by then.

        When the server has no watch stream free (its limit of watchers), the search is polled
        every ``POLL_SECONDS`` instead: each change of status or progress comes as a ``polled``
        event, the end as a ``search_finished`` event (its ``id`` the last stored event seen,
        since a poll reads no events), and the stream is tried again at every poll."""
        deadline = None if timeout is None else time.monotonic() + timeout
        after, failures, last_polled = after_event_id, 0, None
        while True:
            request = pb.WatchSearchRequest(search_id=self.id, after_event_id=after)
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                for message in self.client._stream("WatchSearch", request, left):
                    failures = 0
                    after = message.id
                    yield _event(message)
                return
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None:
                    raise TimeoutError(f"search {self.id} did not end in {timeout} s") from None
                if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # every stream is taken
                    info = self.info()
                    if info["status"] in TERMINAL:
                        yield _polled_event(after, "search_finished", info)
                        return
                    if info != last_polled:
                        yield _polled_event(after, "polled", info)
                        last_polled = info
                    if deadline is not None and time.monotonic() + POLL_SECONDS >= deadline:
                        raise TimeoutError(f"search {self.id} did not end in {timeout} s") from None
                    time.sleep(POLL_SECONDS)
                    continue
                failures += 1
                if error.code() not in RETRYABLE or failures > self.client.retries:
                    raise _error(error) from None
                time.sleep(min(0.2 * 2**failures, 5.0))

    def wait(self, progress: bool = False, timeout: float | None = None) -> dict[str, Any]:
        """Block until the search ends (``TimeoutError`` after ``timeout`` seconds); returns
        its final ``info()``. ``progress`` draws a bar of trained trials on stderr with the
        front's size and leader, the hypervolume and the running trials' epochs."""
        info = self.info()
        bar = _ProgressBar(info) if progress else None
        try:
            for event in self.watch(timeout=timeout):
                if bar is not None:
                    bar.update(event)
        finally:
            if bar is not None:
                bar.close()
        return self.info()

    def pareto(self) -> list[dict[str, Any]]:
        """The front's points: ``{"trial_id", objective values..., "epochs", "candidate"}``,
        best first on the first objective. The front is over completed trials (trained at the
        top rung); while none is, over the trained trials of the highest rung reached, and
        ``epochs`` says which (:meth:`front` has the top rung's epochs too). With
        ``strategy.confirm``, a confirmed point's values are its confirmed means, and it has
        ``"confirmed": {objective: {"mean", "std", "lower"}, "seeds": n}`` (``std``, ``lower``
        None under two successful runs), ``"single_run"`` (the run that put it on the front)
        and ``"on_confirmed_front"`` (False: it fell off the front once confirmed; such
        points come last)."""
        return self.front()["points"]

    def front(self) -> dict[str, Any]:
        """The front with its fidelity: ``{"objectives", "points", "hypervolume", "epochs",
        "top_epochs"}``; ``epochs < top_epochs`` when no trial reached the top rung yet."""
        front = self.client._call("GetParetoFront", pb.GetParetoFrontRequest(search_id=self.id))
        return convert.front_dict(front)

    def hypervolume(self) -> float:
        request = pb.GetParetoFrontRequest(search_id=self.id)
        return self.client._call("GetParetoFront", request).hypervolume

    def trials(
        self, status: str = "", stage: str = "", epochs: int = 0, page_size: int = 500
    ) -> list[dict[str, Any]]:
        """Every stored row of the search (one per candidate per fidelity), filtered."""
        rows, token = [], ""
        while True:
            request = pb.ListTrialsRequest(
                search_id=self.id,
                page_size=page_size,
                page_token=token,
                status=status,
                stage=stage,
                epochs=epochs,
            )
            response = self.client._call("ListTrials", request)
            rows += [convert.trial_dict(t) for t in response.trials]
            token = response.next_page_token
            if not token:
                return rows

    def trials_dataframe(self, **filters: Any) -> Any:
        """The search's rows (:meth:`trials`, ``filters`` passed on) as a pandas DataFrame
        (needs pandas, which this module imports only here): one row per stored row, with
        ``number`` (the candidate's trial id), ``row_id``, ``stage``, ``epochs``, ``rung``,
        ``status``, ``seconds``, ``reused``, ``host``, ``error``; the candidate's decisions as
        ``params_<path>`` (``params_architecture.width``, ``params_optimizer.lr``); each metric
        as ``metrics_<name>``; and ``confirmation`` (a run of ``strategy.confirm``: stage
        ``confirm:<seed>``) with its ``seed`` (None for the other rows)."""
        import pandas as pd

        return pd.DataFrame([_frame_row(t) for t in self.trials(**filters)])

    def importance(
        self, fidelity: int | None = None, evaluator: str = "ped-anova", min_trials: int = 0
    ) -> dict[str, Any]:
        """How much each parameter matters for each objective, per fidelity (``fidelity``: one
        training rung's epochs; None: each), computed by the server with Optuna's
        ``evaluator`` (``ped-anova`` or ``fanova``) over the stored trained results:
        ``{"evaluator", "min_trials", "importances": [{"epochs", "objective", "trials",
        "results", "params": {name: importance} (highest first, summing to 1), "left_out"}]}``.
        A fidelity with fewer than ``min_trials`` results (0: the server's default, 10) has no
        entry; an unknown evaluator is INVALID_ARGUMENT."""
        request = pb.GetImportanceRequest(
            search_id=self.id, epochs=fidelity or 0, evaluator=evaluator, min_trials=min_trials
        )
        return convert.importance_dict(self.client._call("GetImportance", request))

    def cancel(self) -> dict[str, Any]:
        return convert.search_dict(
            self.client._call("CancelSearch", pb.CancelSearchRequest(search_id=self.id))
        )

    def export(
        self,
        trial_id: int | None = None,
        path: str | Path | None = None,
        format: str = "recipe",
    ) -> dict:
        """The recipe of ``trial_id`` (default: the front's best on the first objective). With
        ``path``, the bundle of ``format`` (an export format the server registers; ``recipe``:
        the recipe as JSON) is written there: a one-file bundle to ``path`` itself, a bundle of
        several files into the folder ``path``."""
        request = pb.ExportRecipeRequest(search_id=self.id, format=format)
        if trial_id is not None:
            request.trial_id = trial_id
        reply = self.client._call("ExportRecipe", request)
        if path is not None:
            files = dict(reply.files)
            if not files and format == "recipe":  # a server from before export formats
                files = {"recipe.json": (reply.recipe_json + "\n").encode()}
            _write_bundle(files, Path(path))
        return json.loads(reply.recipe_json)


FRAME_FIELDS = ("row_id", "stage", "epochs", "rung", "status", "seconds", "reused", "host", "error")


def _frame_row(trial: dict[str, Any]) -> dict[str, Any]:
    """One row of :meth:`Search.trials_dataframe` from a :func:`convert.trial_dict`."""
    stage = trial["stage"]
    confirming = stage.startswith("confirm:")
    row = {"number": trial["trial_id"], **{k: trial[k] for k in FRAME_FIELDS}}
    row |= {f"params_{k}": v for k, v in _flat(trial["candidate"]).items()}
    row |= {f"metrics_{k}": v for k, v in trial["metrics"].items()}
    seed = stage.partition(":")[2]
    row["confirmation"] = confirming
    row["seed"] = int(seed) if confirming and seed.isdigit() else None
    return row


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A candidate's nested decisions by dotted path (lists kept whole: a cell's edges)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _write_bundle(files: dict[str, bytes], path: Path) -> None:
    if not files:  # a server from before export formats ignores the format and sends none
        raise WinnowError("UNIMPLEMENTED", "the server sent no files (older than export formats)")
    if len(files) == 1:
        targets = {path: next(iter(files.values()))}
    else:
        targets = {_inside(path, name): data for name, data in files.items()}
    for target, data in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _inside(folder: Path, name: str) -> Path:
    """``folder / name``, refusing a name that would leave the folder (the server's names are
    relative paths; trusting them blindly would let a reply write anywhere)."""
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise WinnowError("INTERNAL", f"the server sent a bundle file outside the folder: {name!r}")
    return folder.joinpath(*relative.parts)


class _ProgressBar:
    def __init__(self, info: dict[str, Any]) -> None:
        total = info["progress"]["max_trials"] or None
        self.bar = tqdm(total=total, desc=f"search {info['id']}", unit="trial", leave=True)
        self.running = progress_text.RunningTrials()

    def update(self, event: Event) -> None:
        self.running.observe(event.kind, event.payload)
        self.bar.n = event.search["progress"]["candidates"]  # what max_trials, the total, counts
        self.bar.set_postfix_str(bar_postfix(event.search, self.running))

    def close(self) -> None:
        self.bar.close()


# --- conversions ----------------------------------------------------------------------------


def bar_postfix(search: dict[str, Any], running: progress_text.RunningTrials) -> str:
    """``running; front 3 points; best accuracy: #12 accuracy=0.98 params=8010; HV 0.71;
    running #3 epoch 2/9``: the status, one trial's values, the hypervolume (labelled single
    runs beside a confirmed leader), the runs."""
    progress = search["progress"]
    front = progress_text.front_text(progress, progress_text.objective_names(search))
    parts = [search["status"], front, progress_text.hypervolume_text(progress), running.text()]
    return "; ".join(part for part in parts if part)


def _as_spec(spec: SearchSpec | dict | str | Path) -> SearchSpec:
    if isinstance(spec, SearchSpec):
        return spec
    if isinstance(spec, dict):
        return parse_search_spec(spec, check_names=False)
    return load_search_spec(spec, check_names=False)


def _warm_start(item: str | Path | dict) -> dict[str, Any]:
    """A warm start's candidate: from a recipe file, a recipe mapping or a bare candidate."""
    if not isinstance(item, dict):
        try:
            item = json.loads(Path(item).read_text())
        except (OSError, ValueError) as error:
            raise SpecError(f"warm start {str(item)!r}: not a readable recipe: {error}") from None
        if not recipe.is_recipe(item):
            raise SpecError(f"warm start: the file is not a recipe (format {recipe.FORMAT!r})")
    return recipe.read(item).candidate if recipe.is_recipe(item) else item


def _with_warm_starts(spec: SearchSpec, candidates: list[dict[str, Any]]) -> SearchSpec:
    if not candidates:
        return spec
    return spec.model_copy(update={"warm_start": [*spec.warm_start, *candidates]})


def _inline(spec: SearchSpec) -> SearchSpec:
    """A space given as a file path travels as its content (the server never reads paths)."""
    space = spec.space
    if not isinstance(space, str) or space in BUILTIN_SPACES:
        return spec
    return spec.model_copy(update={"space": read_space_file(space)})


def _error(error: grpc.RpcError) -> WinnowError:
    return WinnowError(error.code().name, error.details() or "")


def _gave_up(error: grpc.RpcError, address: str, tries: int, seconds: float) -> WinnowError:
    detail = f"{error.details() or 'no answer'} (gave up on {address}: {tries} tries in "
    return WinnowError(error.code().name, detail + f"{seconds:.1f} s)")


def _polled_event(after: int, kind: str, info: dict[str, Any]) -> Event:
    """What a poll of the search stands in for: its status (and error) as the payload."""
    payload = {"status": info["status"], "error": info["error"]}
    return Event(after, kind, time.time(), payload, info)


def _event(message: pb.SearchEvent) -> Event:
    return Event(
        message.id,
        message.kind,
        message.time,
        convert.payload(message),
        convert.search_dict(message.search),
    )
