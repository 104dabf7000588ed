"""Datasets: local folders, csv/json/parquet files and Hub ids; label resolution; splits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
from datasets import ClassLabel, Dataset
from datasets.exceptions import DatasetGenerationError

from .errors import ConfigError, DataError
from .specs import resolve_data

if TYPE_CHECKING:
    from .adapters.base import TaskAdapter
    from .config import RunConfig

logger = logging.getLogger(__name__)

_FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def load_source(source: str, folder_builder: str | None, path_column: str | None = None) -> Dataset:
    """One split from a class-folder directory, a data file, or a Hub dataset id ('id' or 'id:split').

    `path_column` names a column of file paths (images, audio): in a data file, relative paths are
    resolved against the file's own folder, as a user writing the CSV beside the files expects."""
    path = Path(source).expanduser()
    if path.is_dir():
        if folder_builder is None:
            raise DataError(f"{source!r} is a folder, but this task reads files (csv/json/parquet) or Hub ids")
        _check_class_folders(path)
        if folder_builder in _LISTED_FOLDERS:
            return _list_class_folders(path, *_LISTED_FOLDERS[folder_builder])
        return datasets.load_dataset(folder_builder, data_dir=str(path), split="train")
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DataError(
                f"Cannot read {source!r}: unsupported file type {path.suffix!r}. "
                f"Use one of {', '.join(sorted(_FILE_BUILDERS))}, a class-folder directory, or a Hub dataset id."
            )
        dataset = _load_file(path, builder, source)
        if path_column in dataset.column_names and dataset.features[path_column].dtype in ("string", "large_string"):
            base = path.resolve().parent
            dataset = dataset.map(
                lambda batch: {path_column: [str(base / p) if p else p for p in batch[path_column]]},
                batched=True,
                desc="Resolving file paths",
            )
        return dataset
    if source.startswith((".", "/", "~")) or path.suffix.lower() in _FILE_BUILDERS:
        raise DataError(f"Data path {source!r} does not exist. Check data.train / data.validation.")
    repo_id, _, split = source.partition(":")
    try:
        return datasets.load_dataset(repo_id, split=split or "train")
    except Exception as err:  # noqa: BLE001 - the Hub raises many types; the user needs one message
        raise DataError(
            f"{source!r} is not a local folder or file, and loading it as a Hub dataset failed: "
            f"{type(err).__name__}: {err}"
        ) from None


def _load_file(path: Path, builder: str, source: str) -> Dataset:
    """A csv/json/parquet file as one split, with one message for a file that holds no examples or cannot be parsed."""
    no_rows = f"Data file {source!r} holds no examples"
    if path.stat().st_size == 0:
        raise DataError(f"{no_rows} (0 bytes): write one row per example (for csv, after a header row).")
    kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    try:
        dataset = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except DatasetGenerationError as err:
        cause = err.__cause__ or err
        raise DataError(
            f"Cannot read data file {source!r} as {builder}: {type(cause).__name__}: {' '.join(str(cause).split())}. "
            "Fix or replace the file."
        ) from None
    except ValueError as err:
        if "corresponds to no data" not in str(err):  # datasets' words for a split without rows
            raise
        dataset = None
    if dataset is None or len(dataset) == 0:
        raise DataError(f"{no_rows} (only a header?): add one row per example.")
    return dataset


def _audio_extensions() -> frozenset[str]:
    from datasets.packaged_modules.audiofolder.audiofolder import AudioFolder

    return frozenset(AudioFolder.EXTENSIONS)


# Folder builders whose class folders we list ourselves: datasets 5's audiofolder encodes every row
# through torchcodec (FFmpeg), even for Audio(decode=False). Listing gives the same columns (file
# path + ClassLabel `label`, named as the builder names them) and the adapter decodes the files.
_LISTED_FOLDERS = {"audiofolder": ("audio", _audio_extensions)}


def _list_class_folders(path: Path, column: str, extensions: Callable[[], frozenset[str]]) -> Dataset:
    """`path/<label>/**/<file>` as a dataset of absolute file paths (`column`) and a ClassLabel `label`."""
    suffixes = extensions()
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    for index, name in enumerate(classes):
        for file in sorted((path / name).rglob("*")):
            if file.is_file() and not file.name.startswith(".") and file.suffix.lower() in suffixes:
                files.append(str(file.resolve()))
                labels.append(index)
    if not files:
        raise DataError(f"Folder {str(path)!r} holds no files of a known type ({', '.join(sorted(suffixes))}).")
    features = datasets.Features({column: datasets.Value("string"), "label": ClassLabel(names=classes)})
    return Dataset.from_dict({column: files, "label": labels}, features=features)


def _check_class_folders(path: Path) -> None:
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"Folder {str(path)!r} has no class sub-folders. Expected {path}/<label>/<file> for each example."
        )
    if len(classes) == 1:
        # (imagefolder would silently drop the label column of a single class.)
        raise DataError(
            f"Folder {str(path)!r} has one class folder ({classes[0].name!r}); classification needs at least "
            f"two class folders: {path}/<label>/<file>."
        )
    for folder in classes:
        if not any(f.is_file() for f in folder.rglob("*") if not f.name.startswith(".")):
            raise DataError(f"Class folder {str(folder)!r} is empty: add examples to it or remove it.")


def load_labelled(
    source: str,
    adapter: TaskAdapter,
    label_column: str,
    labels: list[str] | None = None,
    input_column: str | None = None,
    keys: tuple[str, str] | None = None,
) -> tuple[Dataset, list[str]]:
    """One labelled split, ready for the adapter, and its class names: loaded (folder, data file, Hub id
    or `sample:`), its columns checked, its input column named as the adapter expects, prepared, and an
    integer `labels` column encoded against `labels` (a validation or test split: every label must be
    known) or against its own sorted label set (a training split, which needs two classes or more).

    `keys` names the settings that choose the label and input columns, for the error when one is
    missing (the config keys by default; the CLI's options for `evaluate`)."""
    input_column = input_column or adapter.input_column
    label_key, input_key = keys or ("data.label_column", f"data.{adapter.input_column_key}")
    dataset = load_source(resolve_data(source), adapter.folder_builder, input_column if adapter.input_is_file else None)
    require_columns(dataset, {input_key: input_column, label_key: label_column}, source)
    if input_column != adapter.input_column:
        dataset = dataset.rename_column(input_column, adapter.input_column)
    # Prepared before any split or subset, so that a bad row is reported by its position in the source.
    dataset = adapter.prepare_dataset(dataset)
    if labels is None:
        labels = resolve_labels(dataset, label_column)
        if len(labels) < 2:
            raise DataError(f"{source!r} has {len(labels)} class(es); classification needs at least 2.")
    return encode_labels(dataset, label_column, labels, source), labels


def load_splits(config: RunConfig, adapter: TaskAdapter) -> tuple[Dataset, Dataset, list[str]]:
    """The training and validation sets of a run, with an integer `labels` column, and the class names.
    Without `data.validation`, a seeded stratified part of the training set is held out."""
    d = config.data
    if not d.train:
        raise ConfigError("data.train is not set: point it at a class-folder directory, a data file or a Hub id.")
    train, labels = load_labelled(d.train, adapter, d.label_column)
    if d.validation:
        validation, _ = load_labelled(d.validation, adapter, d.label_column, labels=labels)
    else:
        train, validation = split_train(train, d.validation_split, config.train.seed)
    if d.max_train_samples:
        train = train.select(range(min(d.max_train_samples, len(train))))
    if d.max_eval_samples:
        validation = validation.select(range(min(d.max_eval_samples, len(validation))))
    return train, validation, labels


def require_columns(dataset: Dataset, columns: dict[str, str], source: str) -> None:
    """`columns` maps the config key (e.g. 'data.label_column') to the column it names."""
    for key, column in columns.items():
        if column not in dataset.column_names:
            raise DataError(
                f"Column {column!r} not found in {source!r} (columns: {', '.join(dataset.column_names)}). "
                f"Set {key}=<column>."
            )


def resolve_labels(dataset: Dataset, column: str) -> list[str]:
    """Class names: a ClassLabel's names, else the sorted distinct values (numbers sorted as numbers)."""
    feature = dataset.features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    values = dataset.unique(column)
    if any(v is None for v in values):
        raise DataError(f"Label column {column!r} has empty values; every example needs a label.")
    if all(isinstance(v, (int, float)) for v in values):
        return [str(v) for v in sorted(values)]
    return sorted(str(v) for v in values)


def encode_labels(dataset: Dataset, column: str, labels: list[str], source: str) -> Dataset:
    """Add an integer `labels` column (a ClassLabel over `labels`), checking every value is known."""
    index = {name: i for i, name in enumerate(labels)}
    feature = dataset.features[column]
    names = feature.names if isinstance(feature, ClassLabel) else None

    def encode(batch: dict, indices: list[int]) -> dict:
        out = []
        for row, value in zip(indices, batch[column], strict=True):
            name = names[value] if names is not None and value is not None and value >= 0 else value
            key = None if name is None else str(name)
            if key not in index:
                raise DataError(
                    f"Row {row} of {source!r} has label {name!r}, which is not in the training labels "
                    f"({', '.join(labels)}). Fix the row or add examples of that class to the training data."
                )
            out.append(index[key])
        return {"labels": out}

    features = dataset.features.copy()
    features["labels"] = ClassLabel(names=labels)
    encoded = dataset.map(encode, batched=True, with_indices=True, features=features, desc="Encoding labels")
    return encoded


def split_train(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A seeded split stratified by `labels` (plain seeded split when a class is too small to stratify)."""
    try:
        parts = dataset.train_test_split(test_size=fraction, seed=seed, stratify_by_column="labels")
    except ValueError as err:
        logger.warning("Cannot stratify the validation split (%s); using a plain seeded split.", err)
        parts = dataset.train_test_split(test_size=fraction, seed=seed)
    return parts["train"], parts["test"]
