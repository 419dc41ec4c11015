"""``SearchManager``: the server's searches, each driven by an ``Engine`` in its own thread.

Submitted searches are stored ``queued`` at once (so nothing accepted is lost) and start when one
of ``max_concurrent`` slots is free; more than ``max_queued`` waiting is refused
(``QueueFullError``). All searches share one store, hence one equivalence cache, and the
server's size cap (``max_params``: candidates of more parameters fail unbuilt). On start the
manager resumes every search a previous server left ``queued`` or ``running``; ``shutdown``
stops proposing, lets running evaluations finish and store their results, and leaves the
searches ``queued`` for the next server. A search's dataset is checked against this server's
``--data-root`` folders (``data_roots``) and its user code against its ``--allow-module``
modules (``allowed_modules``) again as it starts: one accepted by a server with other roots or
modules ends FAILED, unread and unimported. One server per store: two servers on one database
would both resume its unfinished searches.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from winnow.records import SearchRecord, SearchStatus
from winnow.search_space.specfile import SpecError
from winnow.search_space.user_code import ImportNotAllowedError
from winnow.service.api.allowed_modules import check_imports
from winnow.service.api.data_roots import DataRootError, check_dataset, resolved
from winnow.service.engine import Engine, readout
from winnow.service.search_spec import SearchSpec
from winnow.service.store import Store
from winnow.workers.executor import Executor

log = logging.getLogger("winnow.server")

SHOWN_CHARS = 64


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` characters and "…" for messages: a status message travels in a
    header, which a caller's very long id repeated in full would overflow."""
    return text if len(text) <= limit else text[:limit] + "…"


# Why a stored search cannot start that is no bug of the server's: logged without a traceback
EXPECTED_START_ERRORS = (
    DataRootError,
    ImportNotAllowedError,
    SpecError,
    readout.SpecNoLongerValidError,
)


class QueueFullError(RuntimeError):
    """More searches are waiting than the server accepts."""


class RequestIdReusedError(RuntimeError):
    """A request id came back with another spec: not a retry but a client's mistake, which would
    otherwise get the first search back without a word."""


class ShuttingDownError(RuntimeError):
    """The server is draining; a client should retry against the next one."""


class SearchManager:
    def __init__(
        self,
        store: Store,
        make_executor: Callable[[], Executor],
        max_concurrent: int = 2,
        max_queued: int = 64,
        data_roots: tuple[Path, ...] = (),
        max_params: int | None = None,
        allowed_modules: tuple[str, ...] = (),
    ) -> None:
        self.store, self.max_params = store, max_params
        self.data_roots = resolved(data_roots)
        self.allowed_modules = tuple(allowed_modules)
        self.make_executor = make_executor
        self.max_concurrent, self.max_queued = max_concurrent, max_queued
        self.live: dict[str, Engine] = {}
        self.pending: deque[str] = deque()
        self.starting: set[str] = set()  # taken from the queue, engine not built yet
        self.cancel_requested: set[str] = set()  # cancelled while starting
        self._lock = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Queue what a previous server left unfinished (running ones first), start the slots."""
        rows = [r for r in self.store.searches() if not r.ended]
        rows.sort(key=lambda r: (r.status != SearchStatus.RUNNING, r.created_at))
        with self._lock:
            self.pending.extend(r.id for r in rows)
        if rows:
            log.info("resuming %d unfinished search(es): %s", len(rows), [r.id for r in rows])
        for slot in range(self.max_concurrent):
            thread = threading.Thread(target=self._slot, name=f"search-slot-{slot}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop proposing; running evaluations finish and are stored; searches stay resumable."""
        with self._lock:
            self._stopping = True
            for engine in self.live.values():
                engine.cancel(status=SearchStatus.QUEUED)
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    # --- requests -----------------------------------------------------------------------------

    def submit(self, spec: SearchSpec, request_id: str | None = None) -> tuple[SearchRecord, bool]:
        """Store and queue a search; returns it and whether it is new. A known ``request_id``
        returns the search that request created (for the same spec)."""
        if request_id:
            existing = self._requested(request_id, spec)
            if existing is not None:
                return existing, False
        # Only what the spec's arguments say: a dataset is never read or built in a request
        # handler (it shares the GIL with every other call); Engine.resume checks the rest.
        spec.task.check_dataset(load=False)
        spec.check_user_code(load=False)  # imports only what --allow-module admitted
        self._check_size(spec)
        with self._lock:
            if self._stopping:
                raise ShuttingDownError("the server is shutting down; retry once it restarted")
            if len(self.pending) >= self.max_queued:
                raise QueueFullError(
                    f"{len(self.pending)} searches are already waiting (the server's limit is "
                    f"{self.max_queued}); retry when some have started, or cancel some"
                )
            if request_id:  # again under the lock: two concurrent retries create one search
                existing = self._requested(request_id, spec)
                if existing is not None:
                    return existing, False
            search_id = self.store.create_search(
                spec.name, spec.task.key, spec.to_json(), SearchStatus.QUEUED, request_id
            )
            self.store.add_event(search_id, "status", {"status": SearchStatus.QUEUED})
            self.pending.append(search_id)
            self._lock.notify()
        log.info("search %s queued (%s)", search_id, spec.name)
        return self.store.search(search_id), True

    def _check_size(self, spec: SearchSpec) -> None:
        """Refuse a space whose least candidate (``SearchSpace.least``) is over the size cap:
        its candidates would fail one by one (``cascade.SizeCapStage``). Counted on the meta
        device, at the stated input shape or else the family's probe shape (a few features or
        pixels: no dataset is read here), so it is a lower end, never a false refusal for
        families whose size grows with the input."""
        if self.max_params is None:
            return
        from winnow.search_space.archs import FAMILIES
        from winnow.search_space.costs import parameters_of
        from winnow.search_space.functional_hash import Probe

        least = spec.search_space.least()
        family = least.architecture["family"]
        if spec.task.input_shape is None and FAMILIES.get(family).probes_task_shape:
            return  # no stand-in shape for a network that needs the task's own (Engine caps it)
        shape = tuple(spec.task.input_shape or Probe().input_shape(family))
        try:
            parameters = parameters_of(least, spec.task.num_classes or 2, shape)
        except Exception:  # noqa: BLE001 - a network that cannot be built fails as its trial
            return
        if parameters > self.max_params:
            raise SpecError(
                f"field 'space': its least candidate (every numeric choice at its least) has "
                f"{parameters:,} parameters, over this server's cap of {self.max_params:,} "
                "(winnow serve --max-params)"
            )

    def _requested(self, request_id: str, spec: SearchSpec) -> SearchRecord | None:
        """The search ``request_id`` created, which must be of ``spec``."""
        existing = self.store.search_by_request(request_id)
        if existing is not None and existing.spec_json != spec.to_json():
            raise RequestIdReusedError(
                f"request id {shown(request_id)!r} already created search {existing.id} with "
                "another spec; a new search needs a new request id"
            )
        return existing

    def cancel(self, search_id: str) -> SearchRecord:
        """Cancel a queued or running search; a finished one is left as it is."""
        self.store.search(search_id)  # StoreError when unknown
        with self._lock:
            engine = self.live.get(search_id)
            if engine is not None:
                engine.cancel()
            elif search_id in self.starting:
                self.cancel_requested.add(search_id)  # _run cancels it once built
            elif search_id in self.pending:
                self.pending.remove(search_id)
                self._end_unstarted(search_id, SearchStatus.CANCELLED)
            elif not self.store.search(search_id).ended:
                # unfinished but not this server's (written into the store by another
                # process): nothing runs it, so cancelling ends it here
                self._end_unstarted(search_id, SearchStatus.CANCELLED)
        log.info("search %s: cancel requested", search_id)
        return self.store.search(search_id)

    def progress(self, search_id: str) -> dict[str, Any] | None:
        """A live search's counters (None when it is not running here)."""
        engine = self.live.get(search_id)
        return engine.progress() if engine is not None else None

    @property
    def queued(self) -> int:
        return len(self.pending)

    # --- the slots ----------------------------------------------------------------------------

    def _slot(self) -> None:
        while True:
            with self._lock:
                while not self.pending and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                search_id = self.pending.popleft()
                self.starting.add(search_id)
            with self.make_executor() as executor:
                self._run(search_id, executor)

    def _run(self, search_id: str, executor: Executor) -> None:
        try:
            self._check_admitted(search_id)  # before the engine loads or imports anything
            engine = Engine.resume(self.store, search_id, executor, max_params=self.max_params)
        except Exception as error:  # a spec the code no longer accepts, a missing dataset
            self._not_started(search_id, error)
            return
        with self._lock:
            self.starting.discard(search_id)
            self.live[search_id] = engine
            if search_id in self.cancel_requested:
                self.cancel_requested.discard(search_id)
                engine.cancel()
            if self._stopping:
                engine.cancel(status=SearchStatus.QUEUED)
        log.info("search %s running", search_id)
        try:
            report = engine.run()
            log.info("search %s %s: %d trained", search_id, report.status, report.trained)
        except Exception as error:  # the engine stored the status; watchers need the end
            log.exception("search %s failed", search_id)
            payload = {"status": SearchStatus.FAILED, "error": f"{type(error).__name__}: {error}"}
            self.store.add_event(search_id, "search_finished", payload)
        finally:
            with self._lock:
                self.live.pop(search_id, None)

    def _not_started(self, search_id: str, error: Exception) -> None:
        """End a search whose engine could not be built: FAILED saying why, or CANCELLED when
        a cancel came meanwhile. Under the lock, so that a cancel cannot slip in between
        (it would find the search neither starting nor ended, and end it first)."""
        if isinstance(error, EXPECTED_START_ERRORS):  # the caller's, not a bug: no traceback
            log.warning("search %s cannot start: %s", search_id, error)
            message = str(error)
        else:
            log.exception("search %s cannot start", search_id)
            message = f"{type(error).__name__}: {error}"
        with self._lock:
            self.starting.discard(search_id)
            if search_id in self.cancel_requested:
                self.cancel_requested.discard(search_id)
                self._end_unstarted(search_id, SearchStatus.CANCELLED)
            else:
                self._end_unstarted(search_id, SearchStatus.FAILED, message)

    def _check_admitted(self, search_id: str) -> None:
        """The submit-time checks again: a search stored under another server's
        ``--data-root`` and ``--allow-module`` (or a store written by ``winnow search run``)
        must not read outside this server's roots nor import modules it does not allow."""
        stored = readout.stored_spec(self.store.search(search_id).spec_json)
        if stored.problem is None:  # else Engine.resume ends it, saying why
            check_dataset(stored.spec.task.dataset, self.data_roots)
            check_imports(stored.spec, self.allowed_modules)

    def _end_unstarted(
        self, search_id: str, status: SearchStatus, error: str | None = None
    ) -> None:
        self.store.set_search_status(search_id, status, error)
        self.store.add_event(search_id, "search_finished", {"status": status, "error": error})
