"""How a setting is declared: a dataclass field with its default, help text and, for a number, the range
of values it accepts; and the checks `__post_init__` runs on numbers and choices.

Every numeric setting declares its range (`setting(3, "...", Range(1))`); `check_ranges` checks them all
when a section is built, so a value out of range fails while the config loads, before any data or
model does, with the key and the range in the message. `--help` shows the range beside the help.

Its own module because both config.py (the run's sections) and strategies.py (each strategy's
section) declare settings, and config.py imports strategies.py to collect their sections.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts (each item, for a list of numbers): from `low` to `high`, None
    meaning unbounded, each bound included unless `low_open` / `high_open`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        low = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return low and high

    def __str__(self) -> str:
        low, high = _shown(self.low), _shown(self.high)
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {high}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


def _shown(bound: float | None) -> str:
    """A bound as written: 4294967295, not 4.29497e+09; 0.5 as 0.5."""
    return str(int(bound)) if bound is not None and float(bound).is_integer() else f"{bound}"


AUTO = "auto"  # how a setting that the run chooses when left unset (null) may also be written


def setting(default: Any, help: str, valid: Range | None = None, auto: bool = False) -> Any:
    """A leaf setting; its help text is what `hf-transfer train --help` prints. A number's `valid` range is
    checked by `check_ranges` (in the section's `__post_init__`) and shown in `--help`. `auto`: the default
    (None) means the run chooses the value (logged, and recorded in config.yaml); the value may also be
    written `auto`, and `--help` shows the default so."""
    metadata: dict[str, Any] = {"help": help}
    if valid is not None:
        metadata["range"] = valid
    if auto:
        metadata["auto"] = True
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def section(cls: type, help: str) -> Any:
    """A nested group of settings (a dataclass), e.g. `train` or a strategy's own section."""
    return field(default_factory=cls, metadata={"help": help})


def choices(options: Any, sep: str = " | ") -> str:
    """The values of a `Literal[...]` type, or the names in a registry, for help texts and errors."""
    return sep.join(str(value) for value in typing.get_args(options) or options)


def check_choice(key: str, value: Any, literal: Any) -> None:
    """For configs built in Python: loading a file or an override already checked the Literal type."""
    if value not in typing.get_args(literal):
        raise ConfigError(f"{key} must be one of {choices(literal, ', ')}, got {value!r}")


def check_number(
    key: str, value: Any, valid: str, test: Callable[[float], bool], kind: str = "a finite number"
) -> None:
    """Reject NaN, infinities and values outside the range that `valid` describes (e.g. "> 0")."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and test(value)):
        raise ConfigError(f"{key} must be {kind} {valid}, got {value!r}")


def check_ranges(section: Any, prefix: str) -> None:
    """Check every setting of `section` (a dataclass instance) that declares a Range; `prefix` is the
    section's key (`train`, `lora`): the message names `train.seed`. None (an optional setting left
    unset) is always valid."""
    hints = typing.get_type_hints(type(section))
    for f in fields(section):
        valid = f.metadata.get("range")
        value = getattr(section, f.name)
        if valid is None or value is None:
            continue
        types = (hints[f.name], *typing.get_args(hints[f.name]))
        kind = "an integer" if int in types else "a finite number"
        optional = type(None) in types
        shown = f"{valid}{(' (or auto)' if f.metadata.get('auto') else ' (or null)') if optional else ''}"
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            key = f"{prefix}.{f.name}" + (f"[{index}]" if index is not None else "")
            check_number(key, item, shown, valid.__contains__, kind)
