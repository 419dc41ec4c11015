"""The ``winnow`` command line: the parser and ``main`` in ``main``, and one module per command
group (``space`` with ``evaluate``, ``search``, ``service``, ``ui``, ``bench``)."""

from winnow.service.cli.main import main

__all__ = ["main"]
