"""Python code generated from ``protos/winnow/v1/search.proto`` by grpcio-tools (do not edit;
``scripts/gen-protos.sh`` regenerates it and ``tests/service/test_protos.py`` checks that it
matches the proto)."""
