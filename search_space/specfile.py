"""Spec files and spec errors: the one YAML/JSON loader behind ``load_space``,
``load_search_spec`` and the client SDK, and the errors that name what is wrong.

No torch, optuna or pydantic import: the client SDK reads spec files through this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import yaml

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError


# One problem of a spec: the dotted place of the field at fault, and what is wrong with it.
Problem = tuple[str, str]


class SpecError(ValueError):
    """An invalid spec; the message lists every bad field with what is allowed. ``problems``
    holds them as (field, message) pairs, so that a spec nesting another (a search spec's
    inline space) can report the inner problems as its own fields, under one heading."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)

    @classmethod
    def of(cls, kind: str, problems: Sequence[Problem]) -> SpecError:
        return cls(format_field_errors(kind, problems), problems)


class SpecFileError(SpecError):
    """A spec file that cannot be used: missing, not valid YAML/JSON, not a mapping, or with
    invalid fields (then ``problem`` lists each field at fault). ``path`` is the file."""

    def __init__(self, path: str | Path, problem: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(f"{path}: {problem}", problems)
        self.path, self.problem = Path(path), problem


class FieldProblems(ValueError):
    """Raised inside a pydantic validator that checks several fields of its model at once:
    each problem is reported at its own field below the model's, not at the model itself
    (``validation_problems`` finds the exception in pydantic's error context)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))
        self.problems = list(problems)


def raise_problems(problems: Sequence[Problem]) -> None:
    """The validator's way out: nothing when there is no problem."""
    if problems:
        raise FieldProblems(problems)


def nested_problems(parent: str, error: ValueError) -> list[Problem]:
    """An inner spec's error as problems of the outer spec, its fields under ``parent``."""
    problems = getattr(error, "problems", None)
    if problems:
        return [(join_field(parent, field), message) for field, message in problems]
    return [(parent, str(error))]


def join_field(parent: str, field: str | int) -> str:
    """``budget`` + ``max_trials`` is ``budget.max_trials``; ``objectives`` + 0 is
    ``objectives[0]`` (the spelling every error uses)."""
    if isinstance(field, int):
        return f"{parent}[{field}]"
    if not parent or not field:
        return parent or field
    return f"{parent}[{field[1:]}" if field.startswith("[") else f"{parent}.{field}"


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


def format_field_errors(kind: str, problems: Iterable[Problem]) -> str:
    """``invalid KIND:`` and one ``field 'a.b': message`` line per problem (a multi-line
    message is indented under its field)."""
    lines = [
        f"field '{field or kind}': {message}".replace("\n", "\n  ") for field, message in problems
    ]
    return f"invalid {kind}:\n  " + "\n  ".join(lines)


def format_validation_error(error: ValidationError, kind: str, model: type[BaseModel]) -> str:
    """A pydantic ``ValidationError`` of ``model`` as ``format_field_errors`` lines."""
    return format_field_errors(kind, validation_problems(error, model))


def validation_problems(error: ValidationError, model: type[BaseModel]) -> list[Problem]:
    """Every error of a pydantic ``ValidationError`` as a (field, message) problem that says
    what is allowed: an unknown field lists the model's fields, a literal its values, a
    family (a discriminated union's tag) the registered ones. Fields are spelled by
    ``join_field``; pydantic's internal steps in a location (a union member's tag or type
    name) are left out, since the user never wrote them."""
    problems: list[Problem] = []
    for detail in error.errors(include_url=False):
        problems += _problems_of(model, detail)
    return _merge_alternatives(problems)


def _merge_alternatives(problems: list[Problem]) -> list[Problem]:
    """One line per field: a value that fits none of a union's members (``space: 5``) gets
    one error per member from pydantic, which read as one sentence joined by "or"."""
    merged: dict[str, list[str]] = {}
    for field, message in problems:
        merged.setdefault(field, []).append(message)
    return [(field, _either(messages)) for field, messages in merged.items()]


def _either(messages: list[str]) -> str:
    prefix, got = "Input should be ", "; got "
    if len(messages) == 1 or not all(m.startswith(prefix) for m in messages):
        return "; ".join(messages)
    wanted = [m.removeprefix(prefix).partition(got)[0] for m in messages]
    return prefix + " or ".join(wanted) + got + messages[0].partition(got)[2]


def _problems_of(root: Any, detail: dict[str, Any]) -> list[Problem]:
    parts, parent, leaf = _walk(root, detail["loc"])
    field = ""
    for part in parts:
        field = join_field(field, part)
    kind, ctx = detail["type"], detail.get("ctx") or {}
    if kind == "value_error" and isinstance(ctx.get("error"), FieldProblems):
        return [(join_field(field, f), m) for f, m in ctx["error"].problems]
    if kind == "value_error" and isinstance(getattr(ctx.get("error"), "problems", None), list):
        return nested_problems(field, ctx["error"])  # a nested spec's SpecError
    if kind == "extra_forbidden":
        return [(field, f"unknown field; allowed: {', '.join(_field_names(parent))}")]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = ctx.get("discriminator", "").strip("'")
        allowed = ", ".join(_union_tags(leaf, tag))
        if kind == "union_tag_not_found":
            return [(join_field(field, tag), f"missing; allowed: {allowed}")]
        return [(join_field(field, tag), f"unknown {tag} {ctx.get('tag')!r}; allowed: {allowed}")]
    if kind == "literal_error":
        values = _literal_values(leaf) or [ctx.get("expected", "")]
        return [(field, f"{detail['input']!r} is not allowed; allowed: {', '.join(values)}")]
    if kind == "missing":
        return [(field, "missing (required)")]
    message = detail["msg"].removeprefix("Value error, ")
    if kind != "value_error" and not isinstance(detail.get("input"), dict | list):
        message += f"; got {detail.get('input')!r}"
    return [(field, message)]


def _walk(root: Any, loc: Iterable[str | int]) -> tuple[list[str | int], Any, Any]:
    """The user's spelling of a pydantic location (``loc`` less union tags and type names),
    the annotation holding its last step and the annotation at it (None where unknown)."""
    parts: list[str | int] = []
    parent, here = None, root
    for key in loc:
        parent = here
        here, shown = _step(here, key)
        if shown:
            parts.append(key)
    return parts, parent, here


def _step(annotation: Any, key: str | int) -> tuple[Any, bool]:
    """One step into an annotation: a model's field, a list's item, a dict's value, or a
    union's member (a step the user did not write)."""
    from pydantic import BaseModel

    annotation = _optional_model(_unwrap(annotation))  # ``Model | None``: pydantic adds no step
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(key))
        return (field.annotation if field else None), True
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, UnionType):
        member = next((m for m in args if key in _tags_of(m)), None)
        return member, False
    if origin in (list, tuple, set) and isinstance(key, int):
        return (args[0] if args else None), True
    if origin is dict:
        return (args[1] if len(args) == 2 else None), True
    return None, True


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _tags_of(member: Any) -> list[Any]:
    """The literal values a union member's fields are fixed to (its discriminator tag)."""
    from pydantic import BaseModel

    member = _unwrap(member)
    if not (isinstance(member, type) and issubclass(member, BaseModel)):
        return []
    return [v for f in member.model_fields.values() for v in _literal_values(f.annotation)]


def _union_tags(annotation: Any, discriminator: str) -> list[str]:
    members = get_args(_unwrap(annotation))
    return [
        str(m.model_fields[discriminator].default)
        for m in members
        if hasattr(m, "model_fields") and discriminator in m.model_fields
    ]


def _literal_values(annotation: Any) -> list[str]:
    annotation = _unwrap(annotation)
    if get_origin(annotation) is Literal:
        return [str(v) for v in get_args(annotation)]
    return []


def _optional_model(annotation: Any) -> Any:
    """The model of an optional model field (``Model | None``), else the annotation."""
    from pydantic import BaseModel

    if get_origin(annotation) in (Union, UnionType):
        members = [_unwrap(m) for m in get_args(annotation) if m is not type(None)]
        if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], BaseModel):
            return members[0]
    return annotation


def _field_names(model: Any) -> list[str]:
    model = _optional_model(_unwrap(model))
    return list(getattr(model, "model_fields", {}))
