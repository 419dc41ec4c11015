"""Triton kernels of the fused optimizer step: one launch updates a flat float32 buffer.

Imported only when ``backend.use_triton`` chooses the kernel (``fused_optimizers.py``), since it
imports triton. Each kernel replays torch's per-element arithmetic op for op, rounding where
torch rounds, so the kernel and the eager optimizer agree to the last bit wherever torch's own
kernels do:

- every launch passes ``enable_fp_fusion=False``, so the compiler contracts no ``a * b + c``
  into an fma; the fmas torch itself computes are written out (``tl.fma``): ATen's
  ``add(x, y, alpha)`` is ``fma(y, alpha, x)`` and its ``lerp`` is one fma from the nearer end
  (``Lerp.h``, ``LerpKernel.cpp``), its ``addcmul(x, a, b, value)`` is ``fma(value * a, b,
  x)``, and ``addcdiv`` rounds after each op (a division cannot be contracted);
- ``tl.math.div_rn`` and ``tl.math.sqrt_rn``: fp32 ``/`` and ``tl.sqrt`` are approximate in
  compiled Triton (exact in the interpreter, which runs numpy);
- scalars are rounded to float32 on the host by the caller exactly as ATen rounds a Python
  number (``Scalar.to<float>()``).

What could differ compiled: where nvcc contracts an eager CUDA kernel differently from ATen's
CPU vector code (an ulp, never a sign: Lion's ``sign`` reads a lerp, which is one fma on
both). The tests run the kernels in the interpreter, and compiled where a GPU is present.
"""

from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl

from winnow.kernels import backend

# The interpreter runs one program at a time in numpy: few large blocks are fastest there.
_BLOCK_COMPILED = 1024
_BLOCK_INTERPRETED = 1 << 16


def _grid(n: int) -> tuple[tuple[int], int]:
    if backend.interpreting():
        block = min(_BLOCK_INTERPRETED, triton.next_power_of_2(max(n, 1)))
    else:
        block = _BLOCK_COMPILED
    return (triton.cdiv(n, block),), block


@triton.jit
def _lerp(start, end, weight):
    # ATen's lerp: start + weight * (end - start) for weight < 0.5, else from the end.
    diff = end - start
    return tl.where(weight < 0.5, tl.fma(weight, diff, start), tl.fma(weight - 1.0, diff, end))


@triton.jit
def _offsets(n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return offsets, offsets < n


@triton.jit
def _adamw_kernel(
    param_ptr,
    grad_ptr,
    exp_avg_ptr,
    exp_avg_sq_ptr,
    n,
    decay,
    beta1_weight,
    beta2,
    beta2_weight,
    bias_correction2_sqrt,
    eps,
    neg_step_size,
    BLOCK: tl.constexpr,
):
    offsets, mask = _offsets(n, BLOCK)
    param = tl.load(param_ptr + offsets, mask=mask)
    grad = tl.load(grad_ptr + offsets, mask=mask)
    exp_avg = tl.load(exp_avg_ptr + offsets, mask=mask)
    exp_avg_sq = tl.load(exp_avg_sq_ptr + offsets, mask=mask)
    param = param * decay  # param.mul_(1 - lr * weight_decay)
    exp_avg = _lerp(exp_avg, grad, beta1_weight)  # exp_avg.lerp_(grad, 1 - beta1)
    # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2): ATen's addcmul is
    # fma(value * grad, grad, exp_avg_sq)
    exp_avg_sq = tl.fma(beta2_weight * grad, grad, exp_avg_sq * beta2)
    denom = tl.math.div_rn(tl.math.sqrt_rn(exp_avg_sq), bias_correction2_sqrt) + eps
    param = param + tl.math.div_rn(neg_step_size * exp_avg, denom)  # param.addcdiv_
    tl.store(param_ptr + offsets, param, mask=mask)
    tl.store(exp_avg_ptr + offsets, exp_avg, mask=mask)
    tl.store(exp_avg_sq_ptr + offsets, exp_avg_sq, mask=mask)


@triton.jit
def _lion_kernel(
    param_ptr,
    grad_ptr,
    exp_avg_ptr,
    n,
    decay,
    beta1_weight,
    beta2_weight,
    neg_lr,
    BLOCK: tl.constexpr,
):
    offsets, mask = _offsets(n, BLOCK)
    param = tl.load(param_ptr + offsets, mask=mask)
    grad = tl.load(grad_ptr + offsets, mask=mask)
    exp_avg = tl.load(exp_avg_ptr + offsets, mask=mask)
    param = param * decay
    update = _lerp(exp_avg, grad, beta1_weight)
    update = tl.where(update > 0, 1.0, tl.where(update < 0, -1.0, 0.0))  # sign_()
    exp_avg = _lerp(exp_avg, grad, beta2_weight)
    param = tl.fma(update, neg_lr, param)  # param.add_(update, alpha=-lr)
    tl.store(param_ptr + offsets, param, mask=mask)
    tl.store(exp_avg_ptr + offsets, exp_avg, mask=mask)


@triton.jit
def _sgd_kernel(
    param_ptr,
    grad_ptr,
    buffer_ptr,
    n,
    weight_decay,
    momentum,
    neg_lr,
    DECAY: tl.constexpr,
    MOMENTUM: tl.constexpr,
    NESTEROV: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offsets, mask = _offsets(n, BLOCK)
    param = tl.load(param_ptr + offsets, mask=mask)
    grad = tl.load(grad_ptr + offsets, mask=mask)
    if DECAY:
        grad = tl.fma(param, weight_decay, grad)  # grad.add(param, alpha=weight_decay)
    if MOMENTUM:
        buffer = tl.load(buffer_ptr + offsets, mask=mask)
        buffer = buffer * momentum + grad  # buf.mul_(momentum).add_(grad); a new buf is 0
        tl.store(buffer_ptr + offsets, buffer, mask=mask)
        # nesterov: grad.add(buf, alpha=momentum); else the buffer is the step
        grad = tl.fma(buffer, momentum, grad) if NESTEROV else buffer
    param = tl.fma(grad, neg_lr, param)  # param.add_(grad, alpha=-lr)
    tl.store(param_ptr + offsets, param, mask=mask)


def _f32(value: float) -> float:
    """``value`` rounded to float32 (to nearest, as ATen rounds a Python scalar for a float32
    op), so that the launcher's and the interpreter's conversions of it are both exact."""
    return struct.unpack("f", struct.pack("f", value))[0]


def adamw_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    decay: float,
    beta1: float,
    beta2: float,
    bias_correction2_sqrt: float,
    eps: float,
    step_size: float,
) -> None:
    """One AdamW update of flat float32 buffers in place (scalars as torch's AdamW computes
    them in double: ``decay = 1 - lr * wd``, ``step_size = lr / (1 - beta1**step)``)."""
    grid, block = _grid(param.numel())
    _adamw_kernel[grid](
        param,
        grad,
        exp_avg,
        exp_avg_sq,
        param.numel(),
        _f32(decay),
        _f32(1 - beta1),
        _f32(beta2),
        _f32(1 - beta2),
        _f32(bias_correction2_sqrt),
        _f32(eps),
        _f32(-step_size),
        BLOCK=block,
        enable_fp_fusion=False,
    )


def lion_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    *,
    decay: float,
    beta1: float,
    beta2: float,
    lr: float,
) -> None:
    """One Lion update of flat float32 buffers in place (``decay`` as pytorch_optimizer's)."""
    grid, block = _grid(param.numel())
    _lion_kernel[grid](
        param,
        grad,
        exp_avg,
        param.numel(),
        _f32(decay),
        _f32(1.0 - beta1),
        _f32(1.0 - beta2),
        _f32(-lr),
        BLOCK=block,
        enable_fp_fusion=False,
    )


def sgd_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    momentum_buffer: torch.Tensor | None,
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    nesterov: bool,
) -> None:
    """One SGD update of flat float32 buffers in place (``grad`` is read, not written)."""
    grid, block = _grid(param.numel())
    _sgd_kernel[grid](
        param,
        grad,
        grad if momentum_buffer is None else momentum_buffer,  # unread without momentum
        param.numel(),
        _f32(weight_decay),
        _f32(momentum),
        _f32(-lr),
        DECAY=weight_decay != 0,
        MOMENTUM=momentum_buffer is not None,
        NESTEROV=nesterov,
        BLOCK=block,
        enable_fp_fusion=False,
    )
