"""The export formats' optional dependencies: one ``export`` extra in pyproject.toml (onnx,
onnxruntime, onnxscript, lightning), and ``require``, which a format calls before it needs one
so that a missing package is an error naming the extra, not a bare ImportError."""

from __future__ import annotations

import importlib

EXTRA = "export"
INSTALL = f"pip install 'winnow[{EXTRA}]'"


class MissingExportDependencyError(ImportError):
    """An export format's optional dependency is not installed; the message says how to
    install it (the server answers FAILED_PRECONDITION with it)."""


def require(export_format: str, *modules: str) -> None:
    """Import ``modules`` or raise :class:`MissingExportDependencyError` naming the extra."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise MissingExportDependencyError(
                f"the {export_format} export format needs the {name!r} package, which is not "
                f"installed here: {INSTALL}"
            ) from error
