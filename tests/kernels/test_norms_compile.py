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
    env = os.environ | {"TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    run = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, check=True
    )
    kernels = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(kernels) == 18
    for kernel in kernels:
        assert kernel["cubin"], kernel
        assert "div.rn.f32" in kernel["ops"], kernel
        assert not [op for op in kernel["ops"] if op.endswith("f32") and ".rn." not in op], kernel
    assert all("sqrt.rn.f32" in k["ops"] for k in kernels if k["kernel"] == "_norm_forward")
