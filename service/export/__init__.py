"""Export formats by name (the ``EXPORT_FORMATS`` registry): what ``winnow export --format``,
``Search.export(format=...)`` and the ``ExportRecipe`` RPC can write for a completed trial.

An exporter takes the trial's recipe (``readout.recipe``: the canonical candidate, its task,
epochs and seed, its metrics and hashes) and returns the bundle's files as
``{relative path: bytes}``; the server sends them and the SDK writes them. Adding a format is
one module here with its exporter and one ``EXPORT_FORMATS.register`` line below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from winnow.search_space.registry import Registry
from winnow.service.export import extras, onnx_export, recipe

Exporter = Callable[[dict[str, Any]], dict[str, bytes]]

DEFAULT_FORMAT = "recipe"  # what an ExportRecipeRequest without a format asks for

EXPORT_FORMATS: Registry[Exporter] = Registry("export format")
EXPORT_FORMATS.register("recipe", recipe.files)
EXPORT_FORMATS.register(onnx_export.FORMAT_NAME, onnx_export.files)

__all__ = ["DEFAULT_FORMAT", "EXPORT_FORMATS", "Exporter", "extras", "onnx_export", "recipe"]
