"""Writing a file so that a reader (another process, the next run after a crash) sees the whole old file
or the whole new one, never half of one: the package's one way to write a file in place.

The content goes to a hidden temporary name beside the target (`.NAME.PID.tmp`: the same folder, so the
move is a rename on one file system; the process id, so two processes writing one cache file never
share a temporary) and `os.replace` moves it over the target at once. A write that fails removes its
temporary; one killed midway leaves only a `.*.tmp` file, which RunDir knows to be an interrupted write.
Folders that are built whole (a checkpoint, a model's staging folder, a sample data set) are renamed
into place by their owners.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write `path`'s new content to (by any writer: text, safetensors, Arrow, a plot);
    when the block ends without an error it replaces `path` at once, else it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def json_safe(value: Any) -> Any:
    """`value` with every NaN/infinite float as null: JSON has no NaN, and strict parsers reject it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")
