"""Triton kernels for winnow's hot spots, each with a torch fallback that computes the same thing.

``backend.use_triton(device)`` is the one decision: the kernel for CUDA tensors when triton
imports, the fallback elsewhere; ``WINNOW_KERNELS`` (or ``use_kernels``) forces either. The
modules here import triton only when a kernel is chosen, so ``import winnow.kernels`` is cheap
and works on machines without triton.
"""
