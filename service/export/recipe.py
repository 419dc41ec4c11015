"""The ``recipe`` export format: the recipe itself as one JSON file, ``recipe.json`` (the
format ``winnow export`` has always written, byte for byte)."""

from __future__ import annotations

import json
from typing import Any

FILE_NAME = "recipe.json"


def to_json(recipe: dict[str, Any]) -> str:
    """The one spelling of a recipe as JSON: the ``recipe_json`` of every export reply."""
    return json.dumps(recipe, indent=2, sort_keys=True)


def files(recipe: dict[str, Any]) -> dict[str, bytes]:
    return {FILE_NAME: (to_json(recipe) + "\n").encode()}
