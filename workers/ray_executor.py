"""``RayExecutor``: trials as Ray tasks, on a running cluster or on a local one it starts.

Ray is the distributed engine (scheduling, placement, object store, node failure handling); this
module only maps the ``Executor`` interface onto it:

- each trial is one task, with ``num_cpus`` and ``num_gpus`` from the trial's needs: a whole GPU
  for training, ``PROXY_GPU_FRACTION`` of one for proxy scoring (several score side by side);
- a dataset is loaded once here and put in the object store; workers read it from there (and keep
  it for their next trials), so no node needs the file the spec names;
- a task whose worker dies (segfault, out-of-memory kill, node loss) is retried by Ray up to
  ``max_retries`` times, then the trial fails with the reason;
- trials wait in a queue here and at most ``slots`` are handed to Ray at once (several searches
  share one executor), so a trial's ``timeout`` counts from when it starts; a trial over it, or a
  cancelled one, is stopped with ``ray.cancel(force=True)``, which kills its worker process;
- ``slots`` is read from the cluster once, at start (the engine reads it once per search too):
  a node that joins later is used by Ray but adds no trials in flight, and one that leaves
  leaves its share waiting in Ray's queue until a CPU frees up;
- GPU trials run on a fresh worker process each (``max_calls=1``): a reused worker would keep
  its CUDA context and cached memory, on a GPU that may not be the one Ray gives its next task;
- ``healthy`` is False while the cluster has no alive node with CPUs (``ray.nodes()``, asked at
  most every ``HEALTH_SECONDS``), so the server's health check says NOT_SERVING while Ray cannot
  run a trial; queued trials wait for a node to come back;
- epochs are not relayed yet (``on_epoch`` is never called): a search on Ray shows its trials
  start and finish, not their epochs. Relaying them would take a ``ray.util.queue.Queue`` (an
  actor) that the tasks put ``EpochCallback`` arguments in and the watcher thread drains.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import ray
from ray.exceptions import RayError, RayTaskError, TaskCancelledError

from winnow.search_space.datasets import is_provided, load_dataset, provide_dataset
from winnow.search_space.trial import EpochCallback, Status, TrialResult, TrialSpec
from winnow.workers.executor import QueuedExecutor, settle

log = logging.getLogger("winnow.workers")
POLL_SECONDS = 0.1  # longest wait before a cancel or a timeout is noticed
PROXY_GPU_FRACTION = 0.25
HEALTH_SECONDS = 5.0  # how long a health answer stands: ray.nodes() is a call to the GCS


def has_cpu_node(nodes: list[dict]) -> bool:
    """Whether any node of ``ray.nodes()`` is alive and offers CPUs (every trial asks for
    some): a cluster whose worker nodes are all gone, or a head started with ``--num-cpus 0``
    and nothing else, runs nothing."""
    return any(node.get("Alive") and node.get("Resources", {}).get("CPU", 0) > 0 for node in nodes)


def _run_on_ray(spec: TrialSpec, dataset_box: list[ray.ObjectRef]) -> TrialResult:
    """The task body. The dataset's reference comes boxed in a list so that Ray does not fetch
    it for every task: a worker that already holds the dataset never reads it again."""
    from winnow.workers.run import run_trial

    if not is_provided(spec.dataset):
        provide_dataset(spec.dataset, ray.get(dataset_box[0]))
    result = run_trial(spec)
    result.host = socket.gethostname()
    return result


@dataclass
class _Call:
    spec: TrialSpec
    future: Future[TrialResult]
    deadline: float | None = None


class RayExecutor(QueuedExecutor):
    """See the module docstring. ``address``: ``None`` starts a local Ray (``num_cpus`` of this
    machine), ``"auto"`` joins the cluster this machine belongs to, ``"ray://HOST:PORT"`` a
    remote one. A Ray already initialised in this process is used as it is."""

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        timeout: float | None = None,
        max_retries: int = 2,
        cpus_per_trial: float = 1.0,
    ) -> None:
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(
                address=address,
                num_cpus=num_cpus if address is None else None,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        self.device = "cuda" if self.gpus else "cpu"
        cpu_slots = int(resources.get("CPU", 1) // cpus_per_trial)
        self.slots = max(1, self.gpus or cpu_slots)
        self.timeout, self.max_retries, self.cpus_per_trial = timeout, max_retries, cpus_per_trial
        self._cpu_task = ray.remote(_run_on_ray)
        self._gpu_task = ray.remote(max_calls=1)(_run_on_ray)
        self._datasets: dict[str, ray.ObjectRef] = {}
        self._calls: dict[ray.ObjectRef, _Call] = {}  # handed to Ray
        self._wakeup = threading.Event()
        self._health_lock = threading.Lock()
        self._health = (float("-inf"), True)  # (when asked, the answer): ask at the first call
        self._asking = False  # a caller is asking the cluster now
        self._init_queue("ray-executor", self._watch)
        self._thread.start()

    # --- QueuedExecutor -----------------------------------------------------------------------

    def _queued(
        self, spec: TrialSpec, future: Future[TrialResult], on_epoch: EpochCallback | None
    ) -> _Call:
        return _Call(spec, future)  # on_epoch: not relayed (see the module docstring)

    def _wake(self) -> None:
        self._wakeup.set()

    @property
    def healthy(self) -> bool:
        """Not closed, and the cluster had an alive node with CPUs when last asked (at most
        ``HEALTH_SECONDS`` ago: the server polls this every second). One caller asks at a time,
        outside the lock: ``ray.nodes()`` can block for a minute when the GCS is gone, and the
        other callers get the last answer meanwhile."""
        if self._closed:
            return False
        with self._health_lock:
            asked, answer = self._health
            if self._asking or time.monotonic() - asked < HEALTH_SECONDS:
                return answer
            self._asking = True
        answer = self._cluster_can_run()  # never raises
        with self._health_lock:
            self._health, self._asking = (time.monotonic(), answer), False
        return answer

    def _cluster_can_run(self) -> bool:
        try:
            return has_cpu_node(ray.nodes())
        except Exception as error:  # a lost connection to the cluster: nothing can run
            log.warning("could not read the Ray cluster's nodes: %s", error)
            return False

    def _release(self) -> None:
        if self._owns_ray:
            ray.shutdown()

    # --- submitting ---------------------------------------------------------------------------

    def _launch(self) -> None:
        """Hand queued trials to Ray while fewer than ``slots`` run."""
        while True:
            with self._lock:
                if len(self._calls) >= self.slots or not self._queue:
                    return
                call = self._queue.popleft()
            if call.future.cancelled():
                continue
            gpus = self._gpus(call.spec)
            task = self._gpu_task if gpus else self._cpu_task
            options = {
                "num_cpus": self.cpus_per_trial,
                "num_gpus": gpus,
                "max_retries": self.max_retries,  # system failures only: a dead worker or node
                "retry_exceptions": False,  # run_trial never raises for a bad candidate
            }
            try:
                dataset = self._dataset(call.spec)
                ref = task.options(**options).remote(call.spec, [dataset])
            except Exception as error:  # a dataset that cannot be read here fails its trial
                settle(call.future, self._failed(f"could not start the trial: {error}"))
                continue
            call.deadline = None if self.timeout is None else time.monotonic() + self.timeout
            with self._lock:
                self._calls[ref] = call

    def _gpus(self, spec: TrialSpec) -> float:
        if not self.gpus or spec.device == "cpu":
            return 0.0
        return PROXY_GPU_FRACTION if spec.stage == "proxy" else 1.0

    def _dataset(self, spec: TrialSpec) -> ray.ObjectRef:
        with self._lock:
            ref = self._datasets.get(spec.dataset)
        if ref is None:
            ref = ray.put(load_dataset(spec.dataset))
            with self._lock:
                ref = self._datasets.setdefault(spec.dataset, ref)
        return ref

    # --- watching running tasks ---------------------------------------------------------------

    def _watch(self) -> None:
        """The watcher thread. Whatever happens to it, every future still open ends."""
        reason = "the executor closed before the trial ended"
        try:
            while not self._closed:
                self._watch_once()
        except Exception as error:  # e.g. a lost connection to a ray:// cluster
            log.exception("the Ray executor's watcher failed")
            reason = f"the Ray executor failed: {error}"
            with self._lock:
                self._closed = True
        self._fail_all(reason)

    def _watch_once(self) -> None:
        self._launch()
        with self._lock:
            refs = list(self._calls)
        if not refs:
            self._wakeup.wait(POLL_SECONDS)
            self._wakeup.clear()
            return
        ready, rest = ray.wait(refs, num_returns=1, timeout=POLL_SECONDS)
        if ready and rest:  # collect every other task that is done too
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        for ref in ready:
            self._collect(ref)
        self._stop_cancelled_and_late()

    def _collect(self, ref: ray.ObjectRef) -> None:
        with self._lock:
            call = self._calls.pop(ref, None)
        if call is not None:
            settle(call.future, self._result(ref))

    def _result(self, ref: ray.ObjectRef) -> TrialResult:
        try:
            return ray.get(ref)
        except TaskCancelledError:
            return self._failed("cancelled")
        except RayTaskError as error:  # the task body raised (not a bad candidate: a bug)
            return self._failed(f"the trial raised: {error.cause!r}")
        except RayError as error:  # worker crash, out-of-memory kill, node loss
            reason = f"{type(error).__name__}: {str(error).splitlines()[0]}"
            return self._failed(f"its worker died ({self.max_retries} retries): {reason}")

    def _stop_cancelled_and_late(self) -> None:
        now = time.monotonic()
        with self._lock:
            calls = list(self._calls.items())
        for ref, call in calls:
            late = call.deadline is not None and now > call.deadline
            if not (call.future.cancelled() or late):
                continue
            with self._lock:
                self._calls.pop(ref, None)
            ray.cancel(ref, force=True)  # kills the worker process: the trial really stops
            if late:
                log.warning("a trial timed out after %g s; its worker was stopped", self.timeout)
                settle(call.future, self._failed(f"timed out after {self.timeout:g} s"))

    def _failed(self, message: str) -> TrialResult:
        return TrialResult(Status.FAILED, error=message, device=self.device)

    def _fail_all(self, message: str) -> None:
        with self._lock:
            running, self._calls = list(self._calls.items()), {}
            queued = list(self._queue)
            self._queue.clear()
        for ref, _call in running:
            with contextlib.suppress(Exception):  # Ray itself may be what failed
                ray.cancel(ref, force=True)
        for call in queued + [call for _, call in running]:
            settle(call.future, self._failed(message))
