"""The body of one ``LocalExecutor`` worker process (started with ``spawn``).

It pins its device before CUDA initialises (``CUDA_VISIBLE_DEVICES``; the spawn bootstrap may
already have imported torch, but CUDA starts lazily) and its torch threads, ignores Ctrl-C (the
parent drains and stops its workers; a terminal's SIGINT reaches the whole process group and
must not kill running trials), says it is ready, then answers ``(task_id, TrialSpec, epochs)``
messages with ``(task_id, TrialResult)`` until it receives ``None``; with ``epochs`` true it
also sends ``(task_id, EpochDone)`` after each training epoch, before the result. Datasets
stay loaded between trials (``load_dataset`` is cached per process).

A worker whose parent was killed (kill -9, an out-of-memory kill) notices at its next message:
an idle one at once (``recv`` ends), a training one when it reports its epoch, after saving that
epoch's checkpoint (the failed report ends the trial, whose result cannot be sent either). It
then exits quietly, so an orphan outlives its server by one epoch or one proxy stage (a
user's ``task.trainer`` that reports no epochs: by its whole run).
"""

from __future__ import annotations

import os
import signal
import socket
from multiprocessing.connection import Connection
from typing import NamedTuple

READY = ("ready", None)


class EpochDone(NamedTuple):
    """A training epoch of the worker's trial ended (the arguments of an ``EpochCallback``)."""

    epoch: int
    epochs: int
    loss: float
    seconds: float


def worker_main(conn: Connection, gpu: str | None, threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    from winnow.search_space.datasets import import_loaders
    from winnow.search_space.trial import Status, TrialResult
    from winnow.workers.run import run_trial

    import_loaders()
    torch.set_num_threads(threads)
    host = socket.gethostname()
    conn.send(READY)  # imports done: trial timeouts count from here
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent is gone
            return
        if message is None:
            return
        task_id, spec, epochs = message

        def send_epoch(*done: float, task_id: int = task_id) -> None:
            conn.send((task_id, EpochDone(*done)))

        try:
            result = run_trial(spec, send_epoch if epochs else None)
        except Exception as error:  # a worker never dies of a trial's exception
            result = TrialResult(Status.FAILED, error=f"{type(error).__name__}: {error}")
        result.host = host
        try:
            conn.send((task_id, result))
        except OSError:  # the parent is gone (kill -9): its trial is re-run by the next server
            return
