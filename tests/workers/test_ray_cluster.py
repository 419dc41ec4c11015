"""A two-node Ray cluster on this machine (a head and a second node of one CPU each, started
with ``ray start``) under a real ``winnow serve --executor ray --ray-address``: the second node
killed with SIGKILL mid-search, the search finishes with every trial finished before the kill
kept as it was, and the trials lost with the node run again on the head.

The second node runs in its own UTS namespace (``unshare --uts``) under its own host name, so
that the host each trial records tells the nodes apart as it would on two machines; each node
runs in its own session, so that it can be killed alone and nothing of it outlives the test
(``ray stop`` would stop every Ray on the machine, other users' included)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from winnow.service.client import Client
from winnow.service.store import Store, sqlite_url

from ..service.served import free_port

pytestmark = pytest.mark.cluster

NODE2 = "winnow-node2"  # the second node's host name
BUDGET = 10
TASK_TITLE = b"ray::_run_on_ray"  # Ray names a worker process after the task it runs
SPEC = {
    "name": "two-nodes",
    "space": {
        "architecture": {"family": "mlp", "depth": [1, 2], "width": [64, 128]},
        "optimizer": {"name": "adamw", "lr": {"low": 1e-3, "high": 1e-2, "log": True}},
    },
    "task": {"dataset": "digits"},
    "objectives": [{"name": "accuracy", "direction": "maximize"}],
    "budget": {"max_trials": BUDGET, "max_epochs": 50 * BUDGET},
    "strategy": {"name": "random", "rungs": [50]},  # seconds a trial: long enough to kill
    "seed": 0,
}
# The GCS declares a node dead after 3 missed 1 s health checks (Ray's default: 5 of 3 s).
FAST_NODE_DEATH = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def ray_start(*args: str) -> list[str]:
    """``ray start`` with this venv's Python (its workers must import this checkout), each
    port of its own: two nodes on one machine must not both take Ray's default ones."""
    ports = ["--dashboard-agent-listen-port", "--metrics-export-port", "--runtime-env-agent-port"]
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", *args, "--num-cpus", "1"]
    command += ["--object-store-memory", str(100 * 2**20), "--disable-usage-stats", "--block"]
    for option in ports:
        command += [option, str(free_port())]
    return command


def session_pids(session: int) -> list[int]:
    """Every live process of a session, whatever process group it moved to (a zombie, dead
    and waiting for its parent to reap it, is not counted)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == session and fields[0] != "Z":
                    pids.append(int(entry.name))
    return pids


def running_trials(session: int) -> list[int]:
    """The session's worker processes running a trial now."""
    pids = []
    for pid in session_pids(session):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(TASK_TITLE):
                pids.append(pid)
    return pids


@dataclass
class Node:
    process: subprocess.Popen
    log: Path

    def wait_started(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Ray runtime started" in self.log.read_text(errors="replace"):
                return
            assert self.process.poll() is None, f"ray start ended:\n{self.log.read_text()}"
            time.sleep(0.5)
        log = self.log.read_text()
        raise AssertionError(f"the Ray node did not start in {timeout:g} s:\n{log}")

    def kill(self) -> None:
        """SIGKILL every process of the node (it runs in a session of its own)."""
        for _ in range(3):  # a process forked meanwhile is caught by the next sweep
            for pid in session_pids(self.process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


def wait_for_cpus(address: str, cpus: int, env: dict[str, str], timeout: float = 60) -> None:
    """Until the cluster counts ``cpus`` CPUs: the executor reads its slots once, at start."""
    status = [sys.executable, "-m", "ray.scripts.scripts", "status", "--address", address]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = subprocess.run(status, env=env, capture_output=True, text=True, timeout=60)
        if f"/{cpus:.1f} CPU" in shown.stdout:
            return
        time.sleep(1)
    raise AssertionError(f"the cluster never counted {cpus} CPUs:\n{shown.stdout}{shown.stderr}")


def start_node(command: list[str], log: Path, env: dict[str, str]) -> Node:
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return Node(process, log)


@pytest.fixture
def ray_env() -> Iterator[tuple[Path, dict[str, str]]]:
    """A short temporary folder (Ray's socket paths must stay under 108 characters) and the
    environment every process of the cluster shares: token authentication with a token of
    this test's own, in a file of its own (not ``~/.ray/auth_token``)."""
    folder = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    token = folder / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = os.environ | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    yield folder, env | {"OMP_NUM_THREADS": "1"}
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def cluster(ray_env) -> Iterator[tuple[str, Node]]:
    """A head and a second node under ``NODE2``: the head's address and the second node."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--uts", "true"]).returncode:
        pytest.skip("unshare --uts is not permitted here (a second host name for the node)")
    folder, env = ray_env
    port = free_port()
    head_args = ["--head", "--port", str(port), "--temp-dir", str(folder)]
    head_args += ["--include-dashboard=false", "--dashboard-port", str(free_port())]
    head_args += ["--ray-client-server-port", str(free_port())]
    nodes = [start_node(ray_start(*head_args), folder / "head.log", env | FAST_NODE_DEATH)]
    try:
        nodes[0].wait_started()
        import ray.util  # only here: the import is slow and the other tests need not pay it

        address = f"{ray.util.get_node_ip_address()}:{port}"
        second = ["unshare", "--uts", "sh", "-c", f'hostname {NODE2} && exec "$@"', "node"]
        second += ray_start("--address", address)
        nodes.append(start_node(second, folder / "node2.log", env))
        nodes[1].wait_started()
        wait_for_cpus(address, 2, env)
        yield address, nodes[1]
    finally:
        for node in reversed(nodes):
            node.kill()
        assert not any(session_pids(node.process.pid) for node in nodes), "Ray left running"


def serve(db_url: str, port: int, ray_address: str, env: dict[str, str], log: Path):
    command = [sys.executable, "-m", "winnow.service.cli", "serve", "--db", db_url]
    command += ["--address", f"127.0.0.1:{port}", "--log-format", "text", "--grace", "1"]
    command += ["--executor", "ray", "--ray-address", ray_address]
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_serving(server: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Until the server listens (joining the cluster takes it a while on a busy machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "winnow serving on" in log.read_text(errors="replace"):
            return
        assert server.poll() is None, f"the server ended:\n{log.read_text()}"
        time.sleep(0.5)
    raise AssertionError(f"the server did not start in {timeout:g} s:\n{log.read_text()}")


def rows_of(store: Store, search_id: str) -> dict[int, tuple]:
    return {
        r.id: (r.number, r.stage, r.epochs, r.status, r.metrics, r.host, r.finished_at)
        for r in store.trials(search_id)
    }


def wait_for_a_trial_to_kill(
    store: Store, search_id: str, node: Node, server: subprocess.Popen, timeout: float = 150
) -> None:
    """Until a trial finished on the second node and another one runs there now."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "the server ended early"
        rows = store.trials(search_id)
        if any(r.status == "ok" and r.host == NODE2 for r in rows) and running_trials(
            node.process.pid
        ):
            return
        assert sum(r.status == "ok" for r in rows) < BUDGET - 1, [(r.status, r.host) for r in rows]
        time.sleep(0.1)
    raise AssertionError(f"no trial ran on the second node within {timeout:g} s")


def test_a_node_killed_mid_search_loses_no_finished_trial(tmp_path, ray_env, cluster):
    address, node2 = cluster
    head = socket.gethostname()
    _, env = ray_env
    db_url, port = sqlite_url(tmp_path / "winnow.db"), free_port()
    store = Store(db_url)
    log = tmp_path / "serve.log"
    server = serve(db_url, port, address, env, log)
    try:
        wait_serving(server, log)
        with Client(f"127.0.0.1:{port}", retries=8) as client:
            search = client.submit(SPEC)
            wait_for_a_trial_to_kill(store, search.id, node2, server)
            at_kill = rows_of(store, search.id)
            node2.kill()
            # A result the node returned just before it died is stored within moments. (A lost
            # trial can be run again as soon: Ray retries a task whose worker it saw die at
            # once, and these trials take under a second.)
            time.sleep(2)
            before = rows_of(store, search.id)
            info = client.search(search.id).wait(timeout=150)
        after = rows_of(store, search.id)
    finally:
        server.kill()
        server.wait(30)
    assert info["status"] == "finished", log.read_text(errors="replace")
    assert info["progress"]["trained"] == BUDGET
    finished = {row: kept for row, kept in before.items() if kept[3] == "ok"}
    assert any(kept[5] == NODE2 for kept in finished.values())  # the node did finish some
    assert all(after[row] == kept for row, kept in finished.items())  # kept, not re-run
    lost = [row for row, kept in at_kill.items() if kept[3] == "running"]
    assert lost  # the one on the second node at least
    assert all(row[3] == "ok" for row in after.values()), after
    assert all(after[row][5] == head for row in after if row not in finished)  # re-ran there
    numbers = [number for number, stage, *_ in after.values() if stage == "train"]
    assert len(numbers) == len(set(numbers)) == BUDGET  # nothing run twice, nothing lost
