"""A small generic registry: named constructors with a helpful error on a miss.

An entry is registered as the object itself (`register`) or declared by where it is defined
(`declare(name, "package.module:attribute")`), imported on first `get`: naming the entries (choices,
--help, config checks) then imports nothing heavy, so the CLI answers `--help` without loading torch.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects. `register`/`declare` refuse duplicates, `get` lists valid names on a miss."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._declared: dict[str, str] = {}  # name -> "package.module:attribute", until first imported

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self._refuse_duplicate(name)
            self._items[name] = obj
            return obj

        return decorator

    def declare(self, name: str, target: str) -> None:
        """Register the object at `target` ("package.module:attribute"), imported by the first `get(name)`."""
        self._refuse_duplicate(name)
        self._declared[name] = target

    def get(self, name: str) -> T:
        self.check(name)
        if name not in self._items:
            module, _, attribute = self._declared[name].partition(":")
            self._items[name] = getattr(importlib.import_module(module), attribute)
        return self._items[name]

    def check(self, name: str) -> None:
        """Raise the error `get` raises for an unknown name, without importing anything."""
        check_name(self.kind, name, self.names())

    def names(self) -> list[str]:
        return sorted({*self._items, *self._declared})

    def _refuse_duplicate(self, name: str) -> None:
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._declared

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def check_name(kind: str, name: object, names: list[str]) -> None:
    """Refuse a name not in `names`, listing them with a "did you mean": a registry's miss, and a config's
    choice declared as a list of names (config/ names the tasks and strategies without their registries)."""
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=1) if isinstance(name, str) else []
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"Unknown {kind} {name!r}. Valid {kind}s: {', '.join(names)}.{hint}")
