"""Workers: run one trial at one fidelity (``run_trial``). Executors (in-process, local process
pool, Ray) come with the engine."""

from winnow.workers.run import run_trial

__all__ = ["run_trial"]
