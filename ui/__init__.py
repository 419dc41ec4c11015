"""The Streamlit dashboard (not built yet; see docs/architecture.md)."""
