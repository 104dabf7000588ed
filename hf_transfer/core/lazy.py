"""Public names imported on first use, for the packages' `__init__` files: `import hf_transfer` (and so
the CLI, whose `--help` must not wait for torch) loads only the modules whose names it touches."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: `exports` maps each public name to the submodule that
    defines it (relative to `package`); the first access imports that submodule and keeps the value."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{exports[name]}", package), name)
        vars(sys.modules[package])[name] = value
        return value

    return __getattr__


def keep_functions(package: str, names: Iterable[str]) -> None:
    """Where a public function has its module's name (`hf_transfer.train`), keep the function as the
    package's attribute: importing the module (`from hf_transfer.train import prepare`, done lazily by
    any caller) makes Python set that attribute to the module, which would hide the function."""
    shadowed = frozenset(names)

    class Package(types.ModuleType):
        def __setattr__(self, name: str, value: Any) -> None:
            if name in shadowed and isinstance(value, types.ModuleType):
                value = getattr(value, name)
            super().__setattr__(name, value)

    sys.modules[package].__class__ = Package
