"""How a setting is declared: a dataclass field with its default and help text, and the checks
`__post_init__` runs on numbers and choices.

Its own module because both config.py (the run's sections) and strategies.py (each strategy's
section) declare settings, and config.py imports strategies.py to collect their sections.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from dataclasses import field
from typing import Any

from .errors import ConfigError


def setting(default: Any, help: str) -> Any:
    """A leaf setting; its help text is what `hf-transfer train --help` prints."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


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


def check_number(key: str, value: Any, valid: str, test: Callable[[float], bool]) -> None:
    """Reject NaN, infinities and values outside the range that `valid` describes (e.g. "> 0")."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and test(value)):
        raise ConfigError(f"{key} must be a finite number {valid}, got {value!r}")
