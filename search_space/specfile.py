"""Spec files and spec errors: the one YAML/JSON loader behind ``load_space``,
``load_search_spec`` and the client SDK, and the errors that name what is wrong.

No torch, optuna or pydantic import: the client SDK reads spec files through this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from pydantic import ValidationError


class SpecError(ValueError):
    """An invalid spec; the message lists every bad field with what is allowed."""


class SpecFileError(SpecError):
    """A spec file that cannot be used: missing, not valid YAML/JSON, not a mapping, or with
    invalid fields (then ``problem`` lists each field at fault). ``path`` is the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem


def load_yaml_or_json(
    path: str | Path, kind: str = "spec", expect: str = "a mapping", hint: str = ""
) -> dict[str, Any]:
    """The mapping a spec file holds: JSON for a ``.json`` file, YAML otherwise.

    ``kind`` says what the file should hold and ``expect`` what that is ("a search space",
    "a mapping with an 'architecture' field") in the errors; ``hint`` follows the message of a
    missing file (e.g. the built-in names one could have meant). Raises ``SpecFileError``."""
    file = Path(path)
    if not file.is_file():
        raise SpecFileError(path, f"no {kind.replace(' ', '-')} file{hint}")
    is_json = file.suffix == ".json"
    try:
        data = json.loads(file.read_text()) if is_json else yaml.safe_load(file.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise SpecFileError(path, f"not valid {'JSON' if is_json else 'YAML'}: {error}") from None
    if not isinstance(data, dict):
        raise SpecFileError(path, f"a {kind} is {expect}")
    return data


def format_field_errors(kind: str, problems: Iterable[tuple[str, str]]) -> str:
    """``invalid KIND:`` and one ``field 'a.b': message`` line per problem (a multi-line
    message, e.g. a nested space's own errors, is indented under its field)."""
    lines = [f"field '{field}': {message}".replace("\n", "\n  ") for field, message in problems]
    return f"invalid {kind}:\n  " + "\n  ".join(lines)


def format_validation_error(error: ValidationError, kind: str = "search space") -> str:
    """A pydantic ``ValidationError`` as ``format_field_errors`` lines, fields dotted."""
    return format_field_errors(
        kind,
        (
            (".".join(str(p) for p in e["loc"]) or "spec", e["msg"].removeprefix("Value error, "))
            for e in error.errors()
        ),
    )
