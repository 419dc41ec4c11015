"""Which implementation of a kernel runs: the Triton kernel or its torch fallback.

The setting is ``WINNOW_KERNELS`` (``auto``, ``triton`` or ``torch``; default ``auto``), or
``use_kernels(mode)`` for a block of code (tests, ``winnow bench kernels``), which wins over the
environment. ``auto`` runs the kernel on CUDA tensors when triton imports and the fallback
elsewhere. ``triton`` forces the kernel: on CPU tensors that needs triton's interpreter
(``TRITON_INTERPRET=1``, set before triton is first imported), which is how CI checks the
kernels against their fallbacks. ``torch`` forces the fallback everywhere.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TypeVar

import torch

MODES = ("auto", "triton", "torch")
ENV_VAR = "WINNOW_KERNELS"

Entry = TypeVar("Entry", bound=Callable)

_forced: ContextVar[str | None] = ContextVar("winnow_kernels_mode", default=None)


class KernelUnavailableError(RuntimeError):
    """The kernel was forced (``triton``) where it cannot run."""


def _checked(mode: str, where: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{where} must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def mode() -> str:
    """The setting in force: ``use_kernels``'s, else ``WINNOW_KERNELS``'s, else ``auto``."""
    forced = _forced.get()
    if forced is not None:
        return forced
    return _checked(os.environ.get(ENV_VAR, "auto").strip().lower() or "auto", ENV_VAR)


@contextlib.contextmanager
def use_kernels(mode: str) -> Iterator[None]:
    """Run the block with the kernel setting ``mode`` (``auto``, ``triton`` or ``torch``)."""
    token = _forced.set(_checked(mode, "the kernel mode"))
    try:
        yield
    finally:
        _forced.reset(token)


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether triton is installed (found, not imported: importing it costs about a second)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether triton runs kernels in its interpreter (on CPU tensors, with numpy)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(device: torch.device | str) -> bool:
    """True when the kernel, not the fallback, should run on ``device``'s tensors.

    Always False while ``torch.compile`` traces (checked before the setting is read: dynamo
    cannot trace a ContextVar): what compile should see is the fallback's torch ops, which it
    fuses itself, not an opaque autograd.Function around a Triton launch."""
    if torch.compiler.is_compiling():
        return False
    device = torch.device(device)
    chosen = mode()
    if chosen == "torch":
        return False
    runnable = triton_available() and (device.type == "cuda" or interpreting())
    if chosen == "triton" and not runnable:
        raise KernelUnavailableError(_why_not(device))
    return runnable and (chosen == "triton" or device.type == "cuda")


def _why_not(device: torch.device) -> str:
    if not triton_available():
        return f"{ENV_VAR}=triton, but triton is not installed"
    return (
        f"{ENV_VAR}=triton on a {device.type} tensor needs triton's interpreter: set "
        "TRITON_INTERPRET=1 before triton is imported (or use a CUDA device)"
    )


def backend_name(device: torch.device | str) -> str:
    """``"triton"`` or ``"torch"``: what ``use_triton`` chooses, for reports and the bench."""
    return "triton" if use_triton(device) else "torch"


def falls_back_to(fallback: Callable) -> Callable[[Entry], Entry]:
    """Mark a kernel entry point with its torch fallback (``entry.torch_fallback``): the
    pytorch export carries the fallback, which imports only torch, into ``model.py``."""

    def mark(entry: Entry) -> Entry:
        entry.torch_fallback = fallback
        return entry

    return mark
