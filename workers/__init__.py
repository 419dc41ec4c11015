"""Workers: run one trial at one fidelity (``run_trial``) and the executors that run them:
in-process (``executor.InProcessExecutor``), worker processes of this machine
(``local.LocalExecutor``) and Ray tasks (``ray_executor.RayExecutor``), by name in ``pools``.

Importing torch here is harmless for a GPU worker: it pins its device with
``CUDA_VISIBLE_DEVICES`` before CUDA initialises, which torch does lazily.
"""

from winnow.workers.run import run_trial

__all__ = ["run_trial"]
