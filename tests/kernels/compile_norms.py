"""Compile the norm kernels for an sm_90 GPU without one (``python compile_norms.py``): triton's
frontend, its GPU passes, LLVM, PTX and ptxas, as a first launch on an H100 would. Prints one
JSON line per kernel: the IEEE division and square root the PTX uses. Run by
``test_norms_compile.py`` in a process of its own (TRITON_INTERPRET unset, unlike the tests')."""

from __future__ import annotations

import json
import re

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from winnow.kernels import norms_triton

TARGET = GPUTarget("cuda", 90, 32)
DATA = {"x_ptr", "y_ptr", "dy_ptr", "dx_ptr"}  # x's dtype; the other pointers are fp32


def _signature(fn, dtype: str, constexprs: dict) -> dict[str, str]:
    def kind(name: str) -> str:
        if name in constexprs:
            return "constexpr"
        if name.endswith("_ptr"):
            return f"*{dtype}" if name in DATA else "*fp32"
        return "fp32" if name in ("count", "eps") else "i32"

    return {name: kind(name) for name in fn.arg_names}


def compile_kernel(fn, dtype: str, constexprs: dict, warps: int) -> dict:
    source = ASTSource(fn, _signature(fn, dtype, constexprs), constexprs=constexprs)
    kernel = triton.compile(
        source,
        target=TARGET,
        options={"num_warps": warps, "enable_fp_fusion": norms_triton.FP_FUSION},
    )
    ptx = kernel.asm["ptx"]
    ops = sorted(set(re.findall(r"\b(?:div|sqrt|rsqrt)\.[a-z0-9.]+", ptx)))
    cubin = "cubin" in kernel.asm  # ptxas assembled it
    return {"kernel": fn.__name__, "dtype": dtype, **constexprs, "ops": ops, "cubin": cubin}


def main() -> None:
    for dtype in ("fp32", "bf16"):
        for centered in (True, False):
            flags = {"CENTERED": centered, "HAS_WEIGHT": True, "HAS_BIAS": centered}
            for blocks in ({"BLOCK_C": 16, "BLOCK_S": 256}, {"BLOCK_C": 2, "BLOCK_S": 2}):
                warps = norms_triton._warps(*blocks.values())
                for fn in (norms_triton._norm_forward, norms_triton._norm_backward):
                    print(json.dumps(compile_kernel(fn, dtype, flags | blocks, warps)), flush=True)
        blocks = {"BLOCK_C": 2, "BLOCK_S": 4096}
        print(json.dumps(compile_kernel(norms_triton._channel_moments, dtype, blocks, 8)))


if __name__ == "__main__":
    main()
