"""Triton kernels with exact torch fallbacks (not built yet; see docs/architecture.md)."""
