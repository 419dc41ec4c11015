"""The Streamlit dashboard (``winnow ui``): searches, a search's front, histories, cascade and
trials, and one trial's recipe. It reads the store (or a server, through the client) and never
touches the engine; see docs/architecture.md, "Dashboard"."""
