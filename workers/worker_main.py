"""The body of one ``LocalExecutor`` worker process (started with ``spawn``).

It pins its device before CUDA initialises (``CUDA_VISIBLE_DEVICES``; the spawn bootstrap may
already have imported torch, but CUDA starts lazily) and its torch threads, ignores Ctrl-C (the
parent drains and stops its workers; a terminal's SIGINT reaches the whole process group and
must not kill running trials), says it is ready, then answers ``(task_id, TrialSpec, epochs)``
messages with ``(task_id, TrialResult)`` until it receives ``None``; with ``epochs`` true it
also sends ``(task_id, EpochDone)`` after each training epoch, before the result. Datasets
stay loaded between trials (``load_dataset`` is cached per process).

A worker whose parent was killed (kill -9, an out-of-memory kill) exits within about half a
second, even mid-trial: a daemon thread watches the parent (``watch_parent``). Otherwise an
orphan would train on until its next message to the dead server failed (a user's
``task.trainer`` that reports no epochs: its whole rung), holding a CPU or GPU while a
restarted server re-runs the candidate, and could save the candidate's checkpoint after the new
run deleted it. A failed send (the pipe broken) ends the worker the same way.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import NamedTuple

READY = ("ready", None)
PARENT_POLL_SECONDS = 0.5
ORPHANED = 3  # the exit status of a worker whose parent died (nobody reads it: for ps and logs)
# What a send to a dead parent raises (``OSError`` at large would hide real bugs).
PARENT_GONE = (BrokenPipeError, ConnectionResetError, EOFError)


class EpochDone(NamedTuple):
    """A training epoch of the worker's trial ended (the arguments of an ``EpochCallback``)."""

    epoch: int
    epochs: int
    loss: float
    seconds: float


def parent_pid() -> int:
    """The process that started this worker: multiprocessing's record of it (right even if the
    parent died before this line ran), else the current parent."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid is not None else os.getppid()


def give_up(why: str) -> None:
    """End the worker at once (no cleanup: the trial's state belongs to a server now gone)."""
    print(f"winnow worker {os.getpid()}: {why}; exiting", file=sys.stderr, flush=True)
    os._exit(ORPHANED)


def watch_parent(pid: int) -> threading.Thread:
    """A daemon thread that ends the process once its parent ``pid`` is gone (an orphan is
    re-parented, so ``os.getppid()`` changes). Polling rather than Linux's
    ``prctl(PR_SET_PDEATHSIG)``: that is Linux-only, and it fires when the parent *thread*
    that started the worker ends, not the parent process (the executor may start a worker
    from a thread that later exits); half a second of polling costs nothing."""

    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(PARENT_POLL_SECONDS)
        give_up(f"its parent {pid} is gone")

    thread = threading.Thread(target=watch, name="winnow-parent-watch", daemon=True)
    thread.start()
    return thread


def worker_main(conn: Connection, gpu: str | None, threads: int) -> None:
    watch_parent(parent_pid())
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
    send(conn, READY)  # imports done: trial timeouts count from here
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent is gone
            return
        if message is None:
            return
        task_id, spec, epochs = message

        def send_epoch(*done: float, task_id: int = task_id) -> None:
            send(conn, (task_id, EpochDone(*done)))

        try:
            result = run_trial(spec, send_epoch if epochs else None)
        except Exception as error:  # a worker never dies of a trial's exception
            result = TrialResult(Status.FAILED, error=f"{type(error).__name__}: {error}")
        result.host = host
        send(conn, (task_id, result))  # a dead parent's trial is re-run by the next server


def send(conn: Connection, message: object) -> None:
    """Send ``message`` to the parent, or end the worker if the parent is gone."""
    try:
        conn.send(message)
    except PARENT_GONE as error:
        give_up(f"its parent is gone ({type(error).__name__})")
