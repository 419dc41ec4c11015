"""A real ``winnow serve`` process on a loopback port for the fault-and-abuse suite: start it,
kill it with SIGKILL, find and kill its worker processes, ask its health service. Every wait
has a deadline, so that a broken server fails a test instead of hanging it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from winnow.service.store import Store, sqlite_url
from winnow.v1 import search_pb2_grpc

START_SECONDS = 90  # a cold start imports torch: seconds on a loaded 2-core machine
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(check: Callable[[], object], seconds: float, what: str, step: float = 0.1):
    """``check()``'s first truthy value within ``seconds``; else an AssertionError naming
    ``what``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not within {seconds:g} s: {what}")


class Served:
    """``winnow serve`` on 127.0.0.1 with its SQLite store in ``folder``; ``args`` are more
    options of ``serve``. ``start()`` again after ``kill()`` restarts it on the same store and
    port."""

    def __init__(self, folder: Path, *args: str, token: str | None = None) -> None:
        self.folder, self.args, self.token = folder, list(args), token
        self.db_url = sqlite_url(folder / "winnow.db")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.store = Store(self.db_url)
        self.process: subprocess.Popen | None = None
        self.log = folder / "serve.log"
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        if token:
            (folder / "token").write_text(token)
            self.args += ["--token-file", str(folder / "token")]

    def start(self) -> Served:
        command = [sys.executable, "-m", "winnow.service.cli", "serve", "--db", self.db_url]
        command += ["--address", self.address, "--log-format", "text", "--grace", "1"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("WINNOW_TOKEN")}
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                command + self.args,
                env=env | {"OMP_NUM_THREADS": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, seconds: float = START_SECONDS) -> Served:
        """Until the server answers its health service (SERVING or not)."""
        wait_until(lambda: self.health() is not None, seconds, f"{self.address} answers")
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye, as an out-of-memory kill or a power cut. Its workers
        are killed after it (a worker notices a dead server only at its next message, and would
        compete with a restarted server's for the CPUs meanwhile)."""
        workers = self.worker_pids()
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(30)
        for pid in workers:
            kill_pid(pid)

    def close(self) -> None:
        self.kill()
        self.store.close()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    # --- its workers --------------------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        """The server's live worker processes: its ``spawn`` children, not multiprocessing's
        resource tracker (read from /proc: no psutil here)."""
        if not self.alive():
            return []
        return [pid for pid in _children(self.process.pid) if _is_spawned_worker(pid)]

    # --- calls --------------------------------------------------------------------------------

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def stub(self, channel: grpc.Channel) -> search_pb2_grpc.SearchServiceStub:
        return search_pb2_grpc.SearchServiceStub(channel)

    def health(self, service: str = "") -> int | None:
        """The health status, or None while the server does not answer."""
        with self.channel() as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                request = health_pb2.HealthCheckRequest(service=service)
                return stub.Check(request, timeout=2, metadata=self.metadata).status
            except grpc.RpcError:
                return None


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, from each one's /proc stat (the kernel's
    /proc/PID/task/*/children needs CONFIG_PROC_CHILDREN, which not every kernel has)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid and fields[0] != "Z":  # fields: state, ppid, ...
                    found.append(int(entry.name))
    return found


def _is_spawned_worker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"spawn_main" in cmdline


def kill_pid(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False
