"""Workers: run one trial at one fidelity (``run_trial``) and the executors that run them:
in-process (``executor.InProcessExecutor``), worker processes of this machine
(``local.LocalExecutor``) and Ray tasks (``ray_executor.RayExecutor``), by name in ``pools``.

``run_trial`` loads on first use, so that the pool names (``pools``) import without torch: the
CLI's options list them. (Importing torch is harmless for a GPU worker anyway: it pins its device
with ``CUDA_VISIBLE_DEVICES`` before CUDA initialises, which torch does lazily.)
"""

from typing import Any

__all__ = ["run_trial"]


def __getattr__(name: str) -> Any:
    if name == "run_trial":
        from winnow.workers.run import run_trial

        return run_trial
    raise AttributeError(f"module 'winnow.workers' has no attribute {name!r}")
