"""The gRPC API: the servicer (requests to the manager and store), the server (auth, TLS,
health, reflection) and the search manager (queue, concurrent engines, cancel, resume)."""
