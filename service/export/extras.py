"""The optional dependencies of export formats: the ``export`` extra of pyproject.toml.

An exporter that needs one calls ``require``; a missing one is a ``MissingExtraError`` that
says what to install (the server answers it FAILED_PRECONDITION, so ``winnow export`` prints
it), not a bare ImportError from deep inside the exporter.
"""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL = "pip install 'winnow[export]'"


class MissingExtraError(ImportError):
    """An export format's optional dependency is not installed where the bundle is written."""


def require(module: str, format: str) -> ModuleType:
    """Import ``module`` for format ``format``, or say which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"the {format!r} export format needs {module}, which the server cannot import "
            f"({error}); install the export extra there: {INSTALL}"
        ) from None
