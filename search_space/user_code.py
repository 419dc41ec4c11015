"""User code named by import path (``"my_pkg.data:load"``), and which modules a server admits.

A spec may name a function of the user's own: a dataset loader (``task.dataset:
"python:my_pkg.data:load"``), and later an architecture builder or a training function. Two
small pieces serve every such field:

- ``import_object(path)``: the object ``attr`` of module ``pkg.mod`` for ``"pkg.mod:attr"``,
  with errors that say what is wrong (no such module, no such attribute, not callable), as
  ``importlib.metadata``'s entry points (``module:attr``) spell it.
- ``check_import_allowed(path, allowed)``: whether a server may import it. ``winnow serve
  --allow-module my_pkg`` admits ``my_pkg`` and every module under it (``my_pkg.data``), and
  nothing else; with no ``--allow-module`` a server imports no user code at all. The check
  reads only the path's text: nothing is imported to decide.

Outside a server (``winnow search run``, the CLI's local commands, the SDK's engine) the
user's own process imports what the user names: there is no allow-list to pass.

The attribute is one public name, not a dotted chain nor one with a leading underscore:
``my_pkg.data:os.system`` would otherwise reach any module an admitted one imports, and
``my_pkg:__builtins__``-style dunders reach what no module author meant to offer. The
module must be importable by the Python that loads it (installed, or on ``PYTHONPATH``); a
server's local worker processes are spawned with its ``sys.path``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable

_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")
_ATTRIBUTE = re.compile(r"[A-Za-z]\w*\Z")  # public names only: no __class__, no _private
USAGE = "an import path is MODULE:NAME, e.g. my_pkg.data:load"


class ImportPathError(ValueError):
    """An import path that is not ``pkg.mod:attr`` (known from its text alone)."""


class UserCodeError(RuntimeError):
    """An import path that does not lead to what it should: no such module, no such
    attribute, or not a callable."""


class ImportNotAllowedError(PermissionError):
    """A module the operator did not admit (``winnow serve --allow-module``)."""

    def __init__(self, module: str, allowed: tuple[str, ...], field: str | None = None) -> None:
        self.module, self.allowed, self.field = module, allowed, field
        admitted = (
            f"it admits {', '.join(allowed)} and the modules under them"
            if allowed
            else "it admits none"
        )
        where = f"field {field!r}: " if field else ""
        super().__init__(
            f"{where}module {module!r} is not allowed on this server ({admitted}); the "
            f"operator allows it with winnow serve --allow-module {module.split('.')[0]}"
        )


def check_module_name(module: str) -> str:
    """``module`` if it is a dotted name of identifiers (no relative ``..mod``), else
    ``ImportPathError``."""
    if not _MODULE.match(module):
        raise ImportPathError(f"{module!r} is not a module name ({USAGE})")
    return module


def parse_import_path(path: str) -> tuple[str, str]:
    """``(module, attribute)`` of ``"module:attribute"``, checked as text only."""
    module, colon, attribute = path.partition(":")
    if not colon or not _ATTRIBUTE.match(attribute):
        raise ImportPathError(f"{path!r} is not an import path ({USAGE})")
    return check_module_name(module), attribute


def module_allowed(module: str, allowed: Iterable[str]) -> bool:
    """Whether ``module`` is one of ``allowed`` or lies under one (``a.b`` under ``a``; not
    ``ab``)."""
    return any(module == root or module.startswith(root + ".") for root in allowed)


def check_import_allowed(path: str, allowed: Iterable[str], field: str | None = None) -> None:
    """Raise ``ImportNotAllowedError`` naming the module of ``path`` (``"pkg.mod:attr"`` or a
    bare module, named by spec field ``field``) unless ``allowed`` admits it;
    ``ImportPathError`` for a malformed path."""
    module = parse_import_path(path)[0] if ":" in path else check_module_name(path)
    allowed = tuple(allowed)
    if not module_allowed(module, allowed):
        raise ImportNotAllowedError(module, allowed, field)


def import_object(path: str, callable_: bool = True) -> object:
    """The object ``path`` (``"pkg.mod:attr"``) names, importing its module; with
    ``callable_``, it must be callable. Errors name the path and the missing piece."""
    module_name, attribute = parse_import_path(path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not module_allowed(module_name, [error.name]):
            raise  # the module exists but imports something missing: its own error, unchanged
        raise UserCodeError(
            f"{path}: no module named {error.name!r} on this Python's path (install it, or "
            "add its folder to PYTHONPATH)"
        ) from None
    try:
        found = getattr(module, attribute)
    except AttributeError:
        message = f"{path}: module {module_name!r} has no attribute {attribute!r}"
        raise UserCodeError(message) from None
    if callable_ and not callable(found):
        raise UserCodeError(f"{path}: {type(found).__name__} is not callable")
    return found
