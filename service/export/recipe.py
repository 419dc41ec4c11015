"""The ``recipe`` export format: the recipe itself as one JSON file, ``recipe.json`` (the
format ``winnow export`` has always written, byte for byte), and ``read``, which takes such a
file back (``winnow evaluate --recipe``) as a ``Recipe``."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from winnow.search_space.specfile import SpecError, format_validation_error
from winnow.service.search_spec import Task

FILE_NAME = "recipe.json"
FORMAT = "winnow.recipe/v1"  # the ``format`` field of every recipe ``readout.recipe`` writes
PRIVATE = ("artifacts",)  # the server's side of a recipe: for exporters, never written out


def public(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe without its server-side entries (``PRIVATE``: the paths of kept files)."""
    return {k: v for k, v in recipe.items() if k not in PRIVATE}


def to_json(recipe: dict[str, Any]) -> str:
    """The one spelling of a recipe as JSON: the ``recipe_json`` of every export reply."""
    return json.dumps(public(recipe), indent=2, sort_keys=True)


def files(recipe: dict[str, Any]) -> dict[str, bytes]:
    return {FILE_NAME: (to_json(recipe) + "\n").encode()}


class Training(BaseModel):
    """How the recipe's candidate was trained: enough to train it again."""

    task: Task
    epochs: int = Field(ge=1)
    seed: int


class Recipe(BaseModel):
    """An exported recipe, read back. Fields this version does not know are kept (a newer
    winnow may add some); the candidate is validated where it is built."""

    model_config = ConfigDict(extra="allow")
    format: str
    candidate: dict[str, Any]
    training: Training
    metrics: dict[str, float | None] = {}  # None: a non-finite value (stored as null)
    search_id: str | None = None
    trial_id: int | None = None


def is_recipe(data: Any) -> bool:
    """A mapping that says it is an exported recipe (a bare candidate has no ``format``)."""
    return isinstance(data, dict) and data.get("format") == FORMAT


def read(data: dict[str, Any]) -> Recipe:
    """A recipe from its JSON mapping; ``SpecError`` names each field at fault."""
    if data.get("format") != FORMAT:
        raise SpecError(f"field 'format': {data.get('format')!r} is not {FORMAT!r}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as error:
        raise SpecError(format_validation_error(error, "recipe", Recipe)) from None
