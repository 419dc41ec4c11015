"""Export formats by name (the ``EXPORT_FORMATS`` registry): what ``winnow export --format``,
``Search.export(format=...)`` and the ``ExportRecipe`` RPC can write for a completed trial.

An exporter takes the trial's recipe (``readout.recipe``: the canonical candidate, its task,
epochs and seed, its metrics and hashes) and returns the bundle's files as
``{relative path: bytes}``; the server sends them and the SDK writes them. Adding a format is
one module here with its exporter and one ``EXPORT_FORMATS.register`` line below. An exporter
that cannot export a trial in its format raises ``ExportError`` (the server answers
``FAILED_PRECONDITION``). The recipe's ``artifacts`` entry (the server's paths of what the
search kept for the trial, e.g. its weights) is for the exporters, never written out
(``recipe.public``).

- ``recipe``: ``recipe.json`` (``recipe.py``);
- ``pytorch``: model.py, train.py, requirements.txt, README.md, recipe.json
  (``pytorch_bundle.py``);
- ``lightning``: the ``pytorch`` bundle plus lightning_module.py and fit.py
  (``lightning_bundle.py``; needs ``lightning``, the ``export`` extra: ``extras.py``);
- ``weights``: weights.pt (the trial's kept ``state_dict``) and recipe.json (``weights.py``).

An exporter raises ``MissingExtraError`` (an ImportError) when an optional dependency is
missing, saying what to install; the server answers it FAILED_PRECONDITION.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from winnow.search_space.registry import Registry
from winnow.service.export import (
    extras,
    lightning_bundle,
    onnx_export,
    pytorch_bundle,
    recipe,
    weights,
)
from winnow.service.export.errors import ExportError
from winnow.service.export.extras import INSTALL, MissingExtraError

Exporter = Callable[[dict[str, Any]], dict[str, bytes]]

DEFAULT_FORMAT = "recipe"  # what an ExportRecipeRequest without a format asks for

# The formats that import none of the trial's code: the others rebuild its network (a custom
# family's builder) or read its dataset (a ``python:`` loader), so a server checks the stored
# spec's user code against its ``--allow-module`` list before running them.
IMPORTS_NOTHING = frozenset({"recipe", "weights"})

EXPORT_FORMATS: Registry[Exporter] = Registry("export format")
EXPORT_FORMATS.register("recipe", recipe.files)
EXPORT_FORMATS.register("pytorch", pytorch_bundle.files)
EXPORT_FORMATS.register("lightning", lightning_bundle.files)
EXPORT_FORMATS.register("weights", weights.files)
EXPORT_FORMATS.register(onnx_export.FORMAT_NAME, onnx_export.files)

__all__ = [
    "DEFAULT_FORMAT",
    "EXPORT_FORMATS",
    "IMPORTS_NOTHING",
    "INSTALL",
    "ExportError",
    "Exporter",
    "MissingExtraError",
    "extras",
    "lightning_bundle",
    "onnx_export",
    "pytorch_bundle",
    "recipe",
    "weights",
]
