"""Registries by name: norms, activations, optimizers, datasets, architecture families.

Adding an entry is one function and one line (``REGISTRY.register("name", factory)``), the way
timm's ``create_norm_layer`` works. Lookups of unknown names fail with the allowed names listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A registry lookup with a name that was never registered (a ValueError too, so that
    pydantic validators report it as a field error)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Registry(Generic[T]):
    """An ordered mapping from names to entries of one kind (e.g. "normalization")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> T | Callable[[T], T]:
        """Register ``entry`` under ``name``; without ``entry``, works as a decorator."""
        if entry is None:
            return lambda e: self.register(name, e)  # type: ignore[return-value]
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    @contextmanager
    def registered(self, name: str, entry: T) -> Iterator[T]:
        """``entry`` registered as ``name`` for the ``with`` block only: how a test tries an
        extra entry through its real caller without leaving it behind for the next test."""
        self.register(name, entry)
        try:
            yield entry
        finally:
            del self._entries[name]

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
