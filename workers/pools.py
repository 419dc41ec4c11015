"""Executors by name (the ``EXECUTORS`` registry), each built from one ``PoolConfig``: for the
server, the demo and the benchmarks.

``local``: ``LocalExecutor``, worker processes of this machine (``workers`` of them; default one
per GPU, or one per two cores). ``ray``: ``RayExecutor`` on the cluster at ``ray_address``
(``auto``, ``ray://HOST:PORT``), or on a local Ray of ``workers`` CPUs when no address is given.
``inprocess``: ``InProcessExecutor``, each trial in the thread that submits it (a server's
searches each train in their own thread). Each imports its machinery only when chosen (Ray
takes seconds to import).

Adding an executor is one module with an ``Executor`` and one ``EXECUTORS.register`` line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from winnow.search_space.registry import Registry

if TYPE_CHECKING:
    from winnow.workers.executor import Executor


DEFAULT_TRIAL_TIMEOUT = 6 * 3600.0  # seconds: a runaway trial (rungs: [10000]) frees its worker


@dataclass(frozen=True)
class PoolConfig:
    """Where a server's (or a benchmark's) trials run; every executor reads what it needs."""

    executor: str = "inprocess"  # a name in EXECUTORS
    workers: int | None = None  # local: processes (default: one per GPU, or cores/2); ray: CPUs
    # seconds before a running trial (local, ray) is stopped and failed; None: no limit
    timeout: float | None = DEFAULT_TRIAL_TIMEOUT
    ray_address: str | None = None  # ray: "auto", "ray://HOST:PORT"; None starts a local Ray
    max_retries: int = 2  # local, ray: reruns of a trial whose worker died under it

    def __post_init__(self) -> None:
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"a trial timeout must be > 0 seconds or None, not {self.timeout}")


EXECUTORS: Registry[Callable[[PoolConfig], Executor]] = Registry("executor")


@EXECUTORS.register("local")
def _local(config: PoolConfig) -> Executor:
    from winnow.workers.local import LocalExecutor

    return LocalExecutor(
        workers=config.workers, timeout=config.timeout, max_retries=config.max_retries
    )


@EXECUTORS.register("ray")
def _ray(config: PoolConfig) -> Executor:
    from winnow.workers.ray_executor import RayExecutor

    return RayExecutor(
        address=config.ray_address,
        num_cpus=config.workers,
        timeout=config.timeout,
        max_retries=config.max_retries,
    )


@EXECUTORS.register("inprocess")
def _inprocess(config: PoolConfig) -> Executor:
    from winnow.workers.executor import InProcessExecutor

    return InProcessExecutor()


def make_pool(config: PoolConfig) -> Executor:
    """The executor ``config.executor`` names (an ``UnknownNameError`` lists the allowed)."""
    return EXECUTORS.get(config.executor)(config)
