"""The winnow gRPC server: ``SearchService`` with health checking and reflection, optional bearer
token and TLS, message size limits, and a ``SearchManager`` running the searches.

``WinnowServer(...).start()`` serves in background threads (tests, ``winnow demo``);
``winnow serve`` runs one in the foreground until SIGTERM or Ctrl-C, then drains: new calls are
refused, running evaluations finish and are stored, and unfinished searches are left queued for
the next server to resume.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from winnow.search_space.trial import EpochCallback, TrialResult, TrialSpec
from winnow.service.api.allowed_modules import allowed_modules
from winnow.service.api.manager import SearchManager
from winnow.service.api.servicer import SearchServicer
from winnow.service.store import Store
from winnow.v1 import search_pb2, search_pb2_grpc
from winnow.workers.executor import Executor
from winnow.workers.pools import PoolConfig, make_pool

log = logging.getLogger("winnow.server")

SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
MAX_MESSAGE_BYTES = 8 << 20  # requests and responses; a spec is limited further (1 MiB)
HEALTH_POLL_SECONDS = 1.0  # how often the pool's health is copied to the health service
DEFAULT_MAX_PARAMS = 100_000_000  # winnow serve --max-params
THREADS, WATCHERS = 32, 24  # watch streams hold a thread each: some are kept for other calls


@dataclass(frozen=True)
class ServerConfig:
    db_url: str
    address: str = "127.0.0.1:50051"
    pool: PoolConfig = PoolConfig()  # the one worker pool every search of the server shares
    max_concurrent_searches: int = 2
    max_queued_searches: int = 64
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    data_roots: tuple[Path, ...] = ()  # where specs may name dataset files (npz:, imagefolder:)
    # modules (and those under them) whose code specs may name (python: datasets); none: no
    # user code is imported
    allowed_modules: tuple[str, ...] = ()
    # Candidates of more parameters fail before anything builds them (None: no cap). 1e8
    # float32 parameters are 0.4 GB, and training holds several times that.
    max_params: int | None = DEFAULT_MAX_PARAMS
    # Kept trial weights (``store.artifacts``); None: beside a SQLite database, and none kept
    # with PostgreSQL (the server may not share the database's disk).
    artifacts: Path | None = None

    def __post_init__(self) -> None:
        if self.max_concurrent_searches < 1:  # 0 would queue every search and run none
            raise ValueError(
                f"max_concurrent_searches must be at least 1, not {self.max_concurrent_searches}"
            )
        if self.max_queued_searches < 1:  # 0 would accept no submission at all
            raise ValueError(
                f"max_queued_searches must be at least 1, not {self.max_queued_searches}"
            )
        allowed_modules(self.allowed_modules)  # each a module name: ImportPathError if not
        if self.max_params is not None and self.max_params < 1:
            raise ValueError(
                f"max_params must be at least 1 (or None: no cap), not {self.max_params}"
            )


class SharedExecutor(Executor):
    """One pool lent to every search of the server: its workers are shared (no search starts
    a pool of its own) and only the server closes it."""

    def __init__(self, pool: Executor) -> None:
        self.pool, self.slots, self.device = pool, pool.slots, pool.device
        self.trains = pool.trains  # an oracle pool still refuses ``strategy.confirm``

    def submit(
        self, spec: TrialSpec, on_epoch: EpochCallback | None = None
    ) -> futures.Future[TrialResult]:
        return self.pool.submit(spec, on_epoch)

    @property
    def healthy(self) -> bool:
        return self.pool.healthy


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Every call must carry ``authorization: Bearer <token>``; else ``UNAUTHENTICATED``."""

    def __init__(self, token: str) -> None:
        self.expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = str(metadata.get("authorization", "")).encode()
        if hmac.compare_digest(given, self.expected):  # constant time: no timing oracle
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return _refusing(handler, "missing or wrong bearer token (pass --token or token=...)")


def _refusing(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that aborts with UNAUTHENTICATED."""

    def abort(request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(
        abort,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class WinnowServer:
    """``make_executor`` overrides ``config.pool`` (e.g. the service benchmark's no-op)."""

    def __init__(
        self, config: ServerConfig, make_executor: Callable[[], Executor] | None = None
    ) -> None:
        self.config = config
        self.store = Store(config.db_url, artifacts=config.artifacts)
        if self.store.artifacts is None:
            log.info("no artifact folder: trained weights are not kept (winnow serve --artifacts)")
        self.pool: Executor | None = None
        self._stopping = threading.Event()
        self._health_thread = threading.Thread(
            target=self._watch_pool, name="winnow-health", daemon=True
        )
        try:
            self._build(config, make_executor)
        except BaseException:  # e.g. the port is taken: release the workers and the store
            if self.pool is not None:
                self.pool.close()
            self.store.close()
            raise

    def _build(self, config: ServerConfig, make_executor: Callable[[], Executor] | None) -> None:
        if make_executor is None:
            self.pool = make_pool(config.pool)
            make_executor = partial(SharedExecutor, self.pool)
        self.manager = SearchManager(
            self.store,
            make_executor,
            config.max_concurrent_searches,
            config.max_queued_searches,
            data_roots=config.data_roots,
            max_params=config.max_params,
            allowed_modules=config.allowed_modules,
        )
        interceptors = [BearerTokenInterceptor(config.token)] if config.token else []
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="grpc"),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # let clients' keepalive pings (client.KEEPALIVE) through on quiet watches
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ],
        )
        servicer = SearchServicer(
            self.manager, config.data_roots, config.allowed_modules, max_watchers=WATCHERS
        )
        search_pb2_grpc.add_SearchServiceServicer_to_server(servicer, self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = self._bind(config)

    def _bind(self, config: ServerConfig) -> int:
        if bool(config.tls_cert) != bool(config.tls_key):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        if config.tls_cert and config.tls_key:
            credentials = grpc.ssl_server_credentials(
                [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())]
            )
            port = self.server.add_secure_port(config.address, credentials)
        else:
            port = self.server.add_insecure_port(config.address)
        if port == 0:
            raise OSError(f"cannot listen on {config.address} (in use, or not an address here)")
        return port

    @property
    def address(self) -> str:
        host = self.config.address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def start(self) -> WinnowServer:
        self.manager.start()
        self.server.start()
        self._report_health()
        self._health_thread.start()
        log.info(
            "winnow serving on %s (store %s, executor %s, %d concurrent searches, auth %s, TLS %s)",
            self.address,
            self.config.db_url,
            self.config.pool.executor,
            self.config.max_concurrent_searches,
            "on" if self.config.token else "off",
            "on" if self.config.tls_cert else "off",
        )
        return self

    def _report_health(self) -> bool:
        """SERVING while the pool can run trials, NOT_SERVING while it cannot (e.g. its workers
        keep dying as they start): a load balancer then sends searches elsewhere."""
        healthy = self.pool is None or self.pool.healthy
        status = health_pb2.HealthCheckResponse
        for name in ("", SERVICE_NAME):
            self.health.set(name, status.SERVING if healthy else status.NOT_SERVING)
        return healthy

    def _watch_pool(self) -> None:
        healthy = True
        while not self._stopping.wait(HEALTH_POLL_SECONDS):
            if self._report_health() != healthy:
                healthy = not healthy
                log.warning("the worker pool is %s", "back" if healthy else "unable to run trials")

    def stop(self, grace: float = 10.0) -> None:
        """Drain: report NOT_SERVING, refuse new calls, let engines store what is running."""
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        stopped = self.server.stop(grace)
        self.manager.shutdown()
        stopped.wait()
        if self.pool is not None:
            self.pool.close()
        self.store.close()
        log.info("winnow server stopped")

    def wait(self) -> None:
        self.server.wait_for_termination()
