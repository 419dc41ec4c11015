"""``winnow bench kernels`` in triton's interpreter: every kernel is timed against its eager
fallback on the same inputs, agrees with it, and the quantized nb201 epoch runs both ways."""

from __future__ import annotations

import json

import pytest

from winnow.kernels import backend
from winnow.service.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not backend.triton_available(), reason="triton is not installed"),
]


def test_the_bench_times_every_kernel_against_its_fallback(capsys):
    argv = ["bench", "kernels", "--min-run-time", "0", "--epoch-steps", "1", "--channels", "2"]
    argv += ["--cells-per-stage", "1"]
    assert main([*argv, "--quiet", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["interpreter"] is backend.interpreting()
    kernels = {case["kernel"] for case in result["kernels"]}
    assert {"optimizer step adamw", "optimizer step lion", "optimizer step sgd"} <= kernels
    assert any(k.startswith("fake_quant") for k in kernels)
    assert any(k.startswith("rms_norm") for k in kernels)
    for case in result["kernels"]:
        assert case["kernel_ms"] > 0 and case["eager_ms"] > 0, case
        assert case["ratio"] == pytest.approx(case["eager_ms"] / case["kernel_ms"], rel=2e-2)
        assert case["max_rel_diff"] <= 1e-5, case  # the kernels compute what the fallbacks do
    epoch = result["epoch"]
    assert epoch["steps"] == 1 and epoch["kernels_on_seconds"] > 0
    assert epoch["kernels_off_seconds"] > 0
