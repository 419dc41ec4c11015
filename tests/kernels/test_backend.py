"""The one decision between a Triton kernel and its torch fallback (kernels/backend.py)."""

from __future__ import annotations

import pytest

from winnow.kernels import backend
from winnow.kernels.backend import KernelUnavailableError, use_kernels, use_triton


def test_auto_runs_the_fallback_on_cpu_even_under_the_interpreter():
    with use_kernels("auto"):
        assert not use_triton("cpu")
        assert backend.backend_name("cpu") == "torch"


def test_torch_forces_the_fallback_everywhere():
    with use_kernels("torch"):
        assert not use_triton("cpu")
        assert not use_triton("cuda")


def test_triton_on_cpu_runs_the_interpreter_or_says_why_not(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with use_kernels("triton"):
        assert use_triton("cpu") == backend.triton_available()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with use_kernels("triton"), pytest.raises(KernelUnavailableError, match="TRITON_INTERPRET"):
        use_triton("cpu")


def test_the_environment_sets_the_mode_and_use_kernels_wins(monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, "torch")
    assert backend.mode() == "torch"
    with use_kernels("triton"):
        assert backend.mode() == "triton"
    assert backend.mode() == "torch"


def test_an_unknown_mode_names_the_allowed_ones(monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, "cuda")
    with pytest.raises(ValueError, match="auto, triton, torch"):
        backend.mode()
    with pytest.raises(ValueError, match="auto, triton, torch"), use_kernels("fast"):
        pass


def test_nothing_chooses_the_kernel_while_torch_compile_traces(monkeypatch):
    """Checked before the setting is read (dynamo cannot trace the ContextVar)."""
    monkeypatch.setattr(backend.torch.compiler, "is_compiling", lambda: True)
    monkeypatch.setattr(backend, "_forced", None)  # reading it would raise
    assert not use_triton("cuda")
    assert not use_triton("cpu")
