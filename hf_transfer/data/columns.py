"""What the columns of a source hold: the task the data is for (image or audio files, or a table of texts),
and which columns are the model input and the label (given, else by their usual names, their feature type,
or what they hold).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, IterableDataset

from ..catalog.specs import resolve_data
from ..core.errors import ConfigError, DataError
from .files import FILE_BUILDERS, IN_MEMORY_PREFIX, is_saved_dataset, media_extensions, split_spec, visible_files
from .sources import in_memory_name, open_source

if TYPE_CHECKING:
    from ..adapters.base import InputKind

# Label columns of common datasets, most usual first (`cls`: webdataset's class key); else the one ClassLabel column.
LABEL_COLUMNS = ("label", "labels", "class", "target", "cls")


_TASKS = {"image": "image-classification", "audio": "audio-classification", "text": "text-classification"}


def infer_task(
    source: str | None,
    subset: str | None = None,
    memory: Dataset | DatasetDict | None = None,
    streaming: bool = False,
) -> tuple[str, str]:
    """The task data is for, and why: a folder of image (audio) files is an image (audio) task; else an
    Image/Audio column, or a column of image/audio file names; else a table with text is a text task.
    With `streaming`, a data file or Hub dataset is read as a stream (its first rows only)."""
    if memory is not None:
        source = in_memory_name(memory)
    if not source:
        raise ConfigError(
            "data.train is not set: point it at a folder, a data file or a Hub dataset id "
            "(hf-transfer train --data PATH)."
        )
    if not source.startswith(IN_MEMORY_PREFIX):
        path = Path(split_spec(resolve_data(source))[0]).expanduser()
        if path.is_dir() and not is_saved_dataset(path):
            suffixes = {f.suffix.lower() for f in visible_files(path)}
            found = [kind for kind in ("image", "audio") if suffixes & media_extensions(f"{kind}folder")]
            if len(found) == 2:
                raise ConfigError(
                    f"Folder {source!r} holds both image and audio files: set task=image-classification or "
                    "task=audio-classification."
                )
            if found:
                return _TASKS[found[0]], f"{found[0]} files"
            if not suffixes & set(FILE_BUILDERS):
                raise ConfigError(
                    f"Folder {source!r} holds no image, audio or csv/json/parquet files, nor webdataset .tar shards."
                )
    opened = open_source(source, None, subset, memory, streaming)
    names = list(opened.splits)
    dataset = opened.splits[opened.split or ("train" if "train" in names else names[0])]
    return _task_from_columns(dataset, source)


def _task_from_columns(dataset: Dataset | IterableDataset, source: str) -> tuple[str, str]:
    if dataset.features is None:  # a stream whose columns are known only once read
        raise ConfigError(
            f"Cannot tell the task from {source!r} before reading it: set task=... ({', '.join(_TASKS.values())})."
        )
    for column, feature in dataset.features.items():
        if isinstance(feature, (datasets.Image, datasets.Audio)):
            kind = "image" if isinstance(feature, datasets.Image) else "audio"
            return _TASKS[kind], f"its {column!r} column holds {kind}s"
    texts = [c for c, f in dataset.features.items() if isinstance(f, datasets.Value) and f.dtype.endswith("string")]
    head = _head(dataset, texts, 20) if texts else {}
    for column in texts:
        suffixes = {Path(v).suffix.lower() for v in head[column] if v}
        for kind in ("image", "audio"):
            if suffixes and suffixes <= media_extensions(f"{kind}folder"):
                return _TASKS[kind], f"its {column!r} column names {kind} files"
    if texts:
        return _TASKS["text"], "a table with text columns"
    raise ConfigError(
        f"Cannot tell the task from {source!r} (columns: {', '.join(dataset.column_names)}): set task=... "
        f"({', '.join(_TASKS.values())})."
    )


def _head(dataset: Dataset | IterableDataset, columns: list[str], rows: int) -> dict[str, list]:
    """The first `rows` values of `columns` (of a stream: read from its start)."""
    if isinstance(dataset, IterableDataset):
        head = list(dataset.select_columns(columns).take(rows))
        return {column: [row[column] for row in head] for column in columns}
    return dataset.select_columns(columns)[:rows]


@dataclass(frozen=True)
class Columns:
    """The columns of a split that hold the model input and the label, and how each was chosen."""

    input: str
    label: str
    input_how: str
    label_how: str


@dataclass(frozen=True)
class ColumnRequest:
    """Which label and input columns to find in a split: the given ones (None: detect), the names to try
    first when detecting (a run's own columns, for its validation or evaluation data), and the settings
    that choose them, named in the error when one is missing or ambiguous (by default the config keys,
    data.label_column and data.<the input column's key>; the CLI's options for `evaluate`)."""

    label: str | None = None
    input: str | None = None
    prefer: tuple[str | None, str | None] = (None, None)
    keys: tuple[str, str] | None = None


@dataclass(frozen=True)
class _Sought:
    """One column to find: its role, the column given for it (None: detect), the usual names to try in
    order, the feature type that marks it, and the setting that chooses it."""

    role: str
    given: str | None
    names: tuple[str, ...]
    feature_type: type | None
    key: str


def resolve_columns(dataset: Dataset | IterableDataset, kind: InputKind, request: ColumnRequest, where: str) -> Columns:
    """The label and input columns: the given ones (which must exist), else detected: the first of the
    usual names present (`request.prefer`'s names first), else the one column of the right feature type
    (ClassLabel; Image, Audio), else the one column that looks the part: for the input, the one of free
    text (text) or of file names of the task's kind (image, audio); for the label, the one of few values,
    each shared by several rows (a CSV's `stars`, `sentiment`). Several such columns are named in the
    error, never guessed between. `request.keys` name the settings that choose them, for the error."""
    label_key, input_key = request.keys or ("data.label_column", f"data.{kind.key}")
    sought_label = _Sought("label", request.label, _names(request.prefer[0], LABEL_COLUMNS), ClassLabel, label_key)
    names = _names(request.prefer[1], kind.names)
    sought_input = _Sought("input", request.input, names, kind.feature, input_key)
    label = _named_column(dataset, sought_label, where, exclude=None)
    named = label[0] if label else None
    found = _named_column(dataset, sought_input, where, exclude=named)
    if found is None:
        builder = kind.folder_builder
        holds = f"{builder.removesuffix('folder')} file names" if builder else "free text"
        candidates = dict.fromkeys(_input_candidates(dataset, builder, exclude=named))
        found = _one_of(dataset, sought_input, candidates, holds, where)
    if label is None:
        candidates = _label_candidates(dataset, exclude=found[0])
        label = _one_of(dataset, sought_label, candidates, "few repeated values", where)
    return Columns(input=found[0], label=label[0], input_how=found[1], label_how=label[1])


def _names(preferred: str | None, usual: tuple[str, ...]) -> tuple[str, ...]:
    return (preferred, *(n for n in usual if n != preferred)) if preferred else usual


def _named_column(
    dataset: Dataset | IterableDataset, sought: _Sought, where: str, exclude: str | None
) -> tuple[str, str] | None:
    """The given column, the first of the usual names, or the one column of the feature type; else None."""
    columns, key, feature_type = dataset.column_names, sought.key, sought.feature_type
    if sought.given is not None:
        if sought.given not in columns:
            raise DataError(
                f"Column {sought.given!r} not found in {where!r} (columns: {', '.join(columns)}). Set {key}=<column>."
            )
        return sought.given, f"set by {key}"
    for name in sought.names:
        if name in columns and name != exclude:
            return name, f"detected; {key} sets another"
    typed = [c for c in columns if feature_type and isinstance(dataset.features[c], feature_type) and c != exclude]
    if len(typed) == 1:
        return typed[0], f"detected: the {feature_type.__name__} column; {key} sets another"
    return None


def _one_of(
    dataset: Dataset | IterableDataset, sought: _Sought, candidates: dict[str, int | None], kind: str, where: str
) -> tuple[str, str]:
    """The one column that holds `kind` (`candidates`: column -> its number of distinct values, if counted) as
    the sought column, and how it was found. None: the usual names were not found either; several: each is
    named. Either way the sought column's setting chooses."""
    count = lambda column: f" ({candidates[column]} values)" if candidates[column] is not None else ""  # noqa: E731
    key, names = sought.key, sought.names
    if len(candidates) == 1:
        column = next(iter(candidates))
        return column, f"detected: the one column of {kind}{count(column)}; {key} sets another"
    columns = ", ".join(dataset.column_names)
    if candidates:
        listed = ", ".join(f"{column!r}{count(column)}" for column in candidates)
        raise DataError(
            f"Cannot tell which column of {where!r} is the {sought.role}: {listed} all hold {kind} "
            f"(columns: {columns}). Set {key}=<column>."
        )
    others = ", ".join(repr(n) for n in names[1:])
    raise DataError(
        f"Column {names[0]!r} not found in {where!r}, nor {others} (columns: {columns}). Set {key}=<column>."
    )


# Rows read to tell what a column holds (file names, free text); a stream's first rows also count its values.
_SAMPLE_ROWS = 1000


# A label column has at most this many classes (and each class, on average, in at least two rows).
_MAX_CLASSES = 1000


def _candidate_columns(dataset: Dataset | IterableDataset, exclude: str | None) -> list[str]:
    """Columns that may be detected as input or label: not the other one, nor webdataset's __key__ / __url__."""
    return [c for c in dataset.column_names if c != exclude and not c.startswith("__")]


def _input_candidates(dataset: Dataset | IterableDataset, folder_builder: str | None, exclude: str | None) -> list[str]:
    """String columns whose first rows are all file names of `folder_builder`'s media (image/audio), or mostly
    distinct, multi-word text (None: text)."""
    strings = [
        c
        for c in _candidate_columns(dataset, exclude)
        if isinstance(dataset.features[c], datasets.Value) and dataset.features[c].dtype in ("string", "large_string")
    ]
    head = _head(dataset, strings, _SAMPLE_ROWS) if strings else {}
    found = []
    for column in strings:
        values = [v for v in head[column] if v]
        if not values:
            continue
        if folder_builder:
            suffixes = media_extensions(folder_builder)
            if all(Path(v).suffix.lower() in suffixes for v in values):
                found.append(column)
        elif 2 * sum(len(v.split()) > 1 for v in values) >= len(values) and 2 * len(set(values)) >= len(values):
            found.append(column)
    return found


def _label_candidates(dataset: Dataset | IterableDataset, exclude: str | None) -> dict[str, int | None]:
    """Integer, boolean or string columns of few distinct values, each in two rows or more on average (not an
    id, not a score), with their number of values: counted over the whole table, or a stream's first rows."""
    kinds = ("int", "uint", "bool", "string", "large_string")
    columns = [
        c
        for c in _candidate_columns(dataset, exclude)
        if isinstance(dataset.features[c], datasets.Value) and dataset.features[c].dtype.startswith(kinds)
    ]
    if isinstance(dataset, IterableDataset):
        head = _head(dataset, columns, _SAMPLE_ROWS) if columns else {}
        counts = {c: len({v for v in head[c] if v is not None}) for c in columns}
        rows = len(next(iter(head.values()), []))
    else:
        counts = {c: len([v for v in dataset.unique(c) if v is not None]) for c in columns}
        rows = len(dataset)
    return {c: n for c, n in counts.items() if 2 <= n <= min(_MAX_CLASSES, rows // 2)}
