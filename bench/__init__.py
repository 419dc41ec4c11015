"""Benchmarks behind ``winnow bench …``: each prints JSON. Only the CLI's bench commands import
this package (tests/test_packaging.py checks it)."""
