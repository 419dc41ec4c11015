"""Winnow's own definitions as source text, for the scripts an export writes.

A bundle's ``train.py`` must train as winnow trains without importing winnow, so it carries
copies of the functions that decide the numbers (an optimizer's factory, the LR multiplier, the
backward-and-step, the augmentation). Copying them from winnow's source files, rather than
writing them again here, keeps one implementation: a change to winnow's schedule is a change to
every bundle exported after it. The files are read and parsed (``ast``), not imported, so
nothing here needs torch.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Iterable
from pathlib import Path


class SourceError(LookupError):
    """A definition an export copies is not where it was looked for (a renamed function)."""


@functools.cache
def _module(module: str) -> tuple[str, tuple[ast.stmt, ...]]:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise SourceError(f"no source file for {module}")
    text = Path(spec.origin).read_text()
    return text, tuple(ast.parse(text).body)


def _defines(node: ast.stmt) -> set[str]:
    """The top-level names a statement binds (a def, a class, an assignment)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    return set()


def _segment(text: str, node: ast.stmt) -> str:
    """A statement's source with its decorators (``ast.get_source_segment`` starts at ``def``)."""
    lines = text.splitlines()
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return "\n".join(lines[first - 1 : node.end_lineno])


def definitions(module: str, names: Iterable[str]) -> str:
    """The source of the top-level definitions ``names`` of ``module``, in file order, with the
    module-level definitions they use (transitively); ``SourceError`` names any not found."""
    text, body = _module(module)
    defined = {name: node for node in body for name in _defines(node)}
    wanted, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        if name not in defined:
            raise SourceError(f"{module} defines no {name!r}")
        wanted.add(name)
        todo.extend(used_names(defined[name]) & defined.keys())
    chosen = [node for node in body if _defines(node) & wanted]
    return "\n\n\n".join(_segment(text, node) for node in chosen)


def used_names(node: ast.AST) -> set[str]:
    """Every plain name a definition reads (``torch`` of ``torch.optim.SGD``, ``_betas``)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def imported_from(module: str, names: Iterable[str]) -> dict[str, str]:
    """``{name: the module it is imported from}`` for those of ``names`` that ``module``
    imports with ``from X import name``."""
    _, body = _module(module)
    wanted = set(names)
    return {
        alias.asname or alias.name: node.module
        for node in body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
        if (alias.asname or alias.name) in wanted
    }


def function_names_used(module: str, function: str) -> set[str]:
    """The names function ``function`` of ``module`` reads."""
    _, body = _module(module)
    for node in body:
        if function in _defines(node):
            return used_names(node)
    raise SourceError(f"{module} defines no {function!r}")
