"""The ``winnow`` command line: one module per command group (``space``/``evaluate`` in
``main``, ``search``, ``service``, ``ui``, ``bench``)."""

from winnow.service.cli.main import main

__all__ = ["main"]
