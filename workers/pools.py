"""Worker pools by name, for the server, the demo and the benchmarks.

``local``: ``LocalExecutor``, worker processes of this machine (``workers`` of them; default one
per GPU, or one per two cores). ``ray``: ``RayExecutor`` on the cluster at ``ray_address``
(``auto``, ``ray://HOST:PORT``), or on a local Ray of ``workers`` CPUs when no address is given.
Both import their machinery only when chosen (Ray takes seconds to import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the executors import torch; the CLI reads POOLS at start-up
    from winnow.workers.executor import Executor

POOLS = ("local", "ray")


def make_pool(
    name: str,
    workers: int | None = None,
    timeout: float | None = None,
    ray_address: str | None = None,
) -> Executor:
    if name == "local":
        from winnow.workers.local import LocalExecutor

        return LocalExecutor(workers=workers, timeout=timeout)
    if name == "ray":
        from winnow.workers.ray_executor import RayExecutor

        return RayExecutor(address=ray_address, num_cpus=workers, timeout=timeout)
    raise ValueError(f"unknown worker pool {name!r}; allowed: {', '.join(POOLS)}")
