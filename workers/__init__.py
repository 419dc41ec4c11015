"""Workers: run one trial at one fidelity (``run_trial``) and the executors that run them:
in-process (``executor.InProcessExecutor``), a local process pool (``local.LocalExecutor``).

``run_trial`` loads on first use: a worker process must pin its GPU before torch is imported,
and importing this package must not import torch.
"""

from typing import Any

__all__ = ["run_trial"]


def __getattr__(name: str) -> Any:
    if name == "run_trial":
        from winnow.workers.run import run_trial

        return run_trial
    raise AttributeError(f"module 'winnow.workers' has no attribute {name!r}")
