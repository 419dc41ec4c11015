"""The search service: engine, store, gRPC API, client SDK and the ``winnow`` CLI."""
