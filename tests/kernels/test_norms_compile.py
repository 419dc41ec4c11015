"""The norm kernels compile for a GPU (sm_90) on a machine without one, with the IEEE division
and square root their comments promise (the interpreter's tests cannot see either)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from winnow.kernels import backend

SCRIPT = Path(__file__).with_name("compile_norms.py")


@pytest.mark.slow  # a process of its own and 18 compilations: ~20 s on two busy cores
@pytest.mark.skipif(
    not backend.triton_available() or importlib.util.find_spec("triton.backends.nvidia") is None,
    reason="triton's NVIDIA backend is not installed",
)
def test_the_norm_kernels_compile_for_sm90_with_ieee_division_and_sqrt():
    # TRITON_DEFAULT_FP_FUSION unset: a kernel launched without enable_fp_fusion would warn
    env = {k: v for k, v in os.environ.items() if k != "TRITON_DEFAULT_FP_FUSION"}
    run = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env=env | {"TRITON_INTERPRET": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "TRITON_DEFAULT_FP_FUSION" not in run.stderr, run.stderr
    kernels = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(kernels) == 18
    for kernel in kernels:
        assert kernel["cubin"], kernel
        assert "div.rn.f32" in kernel["ops"], kernel
        assert not [op for op in kernel["ops"] if op.endswith("f32") and ".rn." not in op], kernel
    assert all("sqrt.rn.f32" in k["ops"] for k in kernels if k["kernel"] == "_norm_forward")
