"""Executors that run one trial at one fidelity (not built yet; see docs/architecture.md)."""
