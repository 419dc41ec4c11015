"""Zero-cost proxies and their calibrated ensemble (not built yet; see docs/architecture.md)."""
