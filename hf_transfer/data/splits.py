"""Labelled splits: a split's input and label columns found, prepared for the adapter and its labels encoded;
a run's training and validation sets (`load_splits`), and one labelled split for `evaluate` (`load_labelled`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from datasets import ClassLabel, Dataset, DatasetDict, IterableDataset

from ..core.errors import ConfigError, DataError
from .columns import ColumnRequest, Columns, resolve_columns
from .files import IN_MEMORY_PREFIX, Source
from .sources import in_memory_name, open_source

if TYPE_CHECKING:
    from ..adapters.base import InputCodec, InputKind
    from ..config.schema import DataConfig, RunConfig

logger = logging.getLogger(__name__)


def load_source(source: str, folder_builder: str | None, path_column: str | None = None) -> Dataset:
    """One split of a source, as loaded: the split it names, or its only (or `train`) split. With
    `path_column`, relative file paths in that column of a data file are made absolute."""
    opened = open_source(source, folder_builder)
    dataset = opened.splits[opened.choose("train")]
    if path_column is not None and opened.base_dir is not None:
        dataset = _absolute_paths(dataset, path_column, opened.base_dir)
    return dataset


def labelled(
    dataset: Dataset | IterableDataset,
    source: Source,
    adapter: InputCodec,
    columns: Columns,
    labels: list[str] | None,
    where: str,
) -> tuple[Dataset | IterableDataset, list[str]]:
    """A split ready for the adapter: its input column named as the adapter reads it, relative file paths
    made absolute, prepared, and an integer `labels` column encoded against `labels` (a validation or
    test split, or data.labels: every label must be known) or against its own label set (a training
    split). A stream is prepared lazily, as it is read."""
    if columns.input != adapter.input_column:
        if adapter.input_column in dataset.column_names:
            dataset = dataset.remove_columns(adapter.input_column)
        dataset = dataset.rename_column(columns.input, adapter.input_column)
    if adapter.input_is_file and source.base_dir is not None:
        dataset = _absolute_paths(dataset, adapter.input_column, source.base_dir)
    # Prepared before any split or subset, so that a bad row is reported by its position in the source.
    dataset = adapter.prepare_dataset(dataset)
    if labels is None:
        labels = resolve_labels(dataset, columns.label)
        if len(labels) < 2:
            raise DataError(f"{where!r} has {len(labels)} class(es); classification needs at least 2.")
    return encode_labels(dataset, columns.label, labels, where), labels


def _absolute_paths(dataset: Dataset | IterableDataset, column: str, base: Path) -> Dataset | IterableDataset:
    """Relative file paths in a data file are relative to the file's own folder, as a user writing the
    CSV beside the files expects."""
    if column not in dataset.column_names or dataset.features[column].dtype not in ("string", "large_string"):
        return dataset

    def resolve(batch: dict) -> dict:
        return {column: [str(base / p) if p else p for p in batch[column]]}

    if isinstance(dataset, IterableDataset):
        return dataset.map(resolve, batched=True, features=dataset.features)
    return dataset.map(resolve, batched=True, desc="Resolving file paths")


def load_labelled(
    source: str | Dataset | DatasetDict,
    adapter: InputCodec,
    request: ColumnRequest | None = None,
    labels: list[str] | None = None,
    subset: str | None = None,
) -> tuple[Dataset, list[str]]:
    """One labelled split (the one `source` names, or its only one), ready for the adapter, and its class
    names: loaded, its columns found as `request` says (given, else detected, its preferred names first),
    prepared, and an integer `labels` column encoded against `labels` (every label must be known) or its
    own label set."""
    opened = open_source(source, adapter.folder_builder, subset)
    split = opened.choose("evaluate")
    dataset, where = opened.splits[split], opened.origins[split]
    columns = resolve_columns(dataset, adapter.column_kind, request or ColumnRequest(), where)
    return labelled(dataset, opened, adapter, columns, labels, where)


def column_request(
    d: DataConfig, kind: InputKind, prefer: tuple[str | None, str | None] = (None, None)
) -> ColumnRequest:
    """The columns a run's data config gives (data.label_column, data.<the input column's key>), `prefer`'s
    names tried first where one is left to detect."""
    return ColumnRequest(label=d.label_column, input=getattr(d, kind.key), prefer=prefer)


@dataclass
class Splits:
    """A run's data: the training and validation sets (with an integer `labels` column), the class names,
    and the config with what was resolved against the data (the column names, an in-memory source)."""

    train: Dataset | IterableDataset  # a stream with data.streaming (see streaming.py)
    validation: Dataset
    labels: list[str]
    config: RunConfig
    # Where the rows of each come from, as the log names them (a held-out part: the training source, whose
    # row numbers its rows keep): an error names a row that cannot be decoded by its number there.
    origins: tuple[str | None, str | None] = (None, None)


def load_splits(config: RunConfig, adapter: InputCodec, data: Dataset | DatasetDict | None = None) -> Splits:
    """The training and validation sets of a run. Validation data: `data.validation`, else the source's
    own validation split (a validation/ folder, a Hub or save_to_disk split), else a seeded stratified
    part of the training set. `data`: a Dataset or DatasetDict given in memory instead of `data.train`."""
    d = config.data if data is None else _in_memory_config(config.data, data)
    if d.streaming:
        raise ConfigError(
            "data.streaming is true, but this reads the whole training set (hf-transfer compare and rank do): set "
            "data.streaming=false (only hf-transfer train reads streams)."
        )
    if not d.train:
        raise ConfigError("data.train is not set: point it at a folder, a data file or a Hub dataset id.")
    source = open_source(d.train, adapter.folder_builder, d.subset, data)
    name = source.choose("train")
    where = source.origins[name]
    kind = adapter.column_kind
    columns = resolve_columns(source.splits[name], kind, column_request(d, kind), where)
    logger.info(
        "Columns of %s: input %r (%s), label %r (%s)",
        where,
        columns.input,
        columns.input_how,
        columns.label,
        columns.label_how,
    )
    train, labels = labelled(source.splits[name], source, adapter, columns, d.labels, where)
    used = {name}
    request = column_request(d, kind, prefer=(columns.label, columns.input))
    if d.validation:
        other = open_source(d.validation, adapter.folder_builder, d.subset, data)
        split = other.choose("validation")
        validation = _validation(other, split, adapter, request, labels)
        rows_from = other.origins[split]
        origin = f"{rows_from} (data.validation)"
    elif (split := source.validation_split(besides=name)) is not None:
        validation = _validation(source, split, adapter, request, labels)
        used.add(split)
        rows_from = source.origins[split]
        origin = f"{rows_from} (from the {source.kind})"
    else:
        train, validation = split_train(train, d.validation_split, config.train.seed)
        rows_from = where
        origin = f"{d.validation_split:.0%} of it held out (data.validation_split)"
    logger.info("Training split: %s; validation split: %s", where, origin)
    unused = [s for s in source.splits if s not in used]
    if unused:
        logger.info(
            "Not used in training: %s; score the finished run on it with %s",
            ", ".join(source.origins[s] for s in unused),
            _evaluate_hint(source, unused, config.output_dir),
        )
    if d.max_train_samples:
        train = train.select(range(min(d.max_train_samples, len(train))))
    if d.max_eval_samples:
        validation = validation.select(range(min(d.max_eval_samples, len(validation))))
    # config.yaml records the columns as found, so the run's folder says exactly what it read.
    d = replace(d, label_column=columns.label, **{adapter.input_column_key: columns.input})
    return Splits(train, validation, labels, replace(config, data=d), (where, rows_from))


def _evaluate_hint(source: Source, splits: list[str], output_dir: str) -> str:
    """How to score a finished run on `splits` of `source`: the command, or for a dataset passed in memory
    (which no command can name) the Python call."""
    if source.location.startswith(IN_MEMORY_PREFIX):
        calls = "; ".join(f"evaluate_run(load_run({output_dir!r}), data[{s!r}])" for s in splits)
        return f"`from hf_transfer import evaluate_run, load_run; {calls}` (data: the DatasetDict given to train)"
    return f"`hf-transfer evaluate OUTPUT_DIR --data {' | '.join(f'{source.location}:{s}' for s in splits)}`"


def _validation(source: Source, split: str, adapter: InputCodec, request: ColumnRequest, labels: list[str]) -> Dataset:
    dataset, where = source.splits[split], source.origins[split]
    columns = resolve_columns(dataset, adapter.column_kind, request, where)
    return labelled(dataset, source, adapter, columns, labels, where)[0]


def _in_memory_config(d: DataConfig, data: Dataset | DatasetDict) -> DataConfig:
    """data.train names the in-memory dataset (its kind and fingerprint), for config.yaml and the card."""
    if d.train and not d.train.startswith(IN_MEMORY_PREFIX):
        raise ConfigError(f"Both data= (a dataset in memory) and data.train={d.train!r} are given: give one of them.")
    validation = None if d.validation and d.validation.startswith(IN_MEMORY_PREFIX) else d.validation
    return replace(d, train=in_memory_name(data), validation=validation)


def resolve_labels(dataset: Dataset | IterableDataset, column: str) -> list[str]:
    """Class names: a ClassLabel's names, in their order; else the sorted distinct values (numbers as numbers).
    A stream is not read whole for them: its label column must be a ClassLabel, else data.labels names them."""
    feature = dataset.features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    if isinstance(dataset, IterableDataset):
        raise DataError(
            f"The label column {column!r} of the stream is not a ClassLabel, so its classes are known only after "
            "reading all of it: set data.labels=[name,name,...] (the class names, in the order of the outputs)."
        )
    values = dataset.unique(column)
    if any(v is None for v in values):
        raise DataError(f"Label column {column!r} has empty values; every example needs a label.")
    if all(isinstance(v, (int, float)) for v in values):
        return [str(v) for v in sorted(values)]
    return sorted(str(v) for v in values)


def encode_labels(
    dataset: Dataset | IterableDataset, column: str, labels: list[str], source: str
) -> Dataset | IterableDataset:
    """Add an integer `labels` column (a ClassLabel over `labels`), checking every value is known (in a
    stream: as it is read)."""
    index = {name: i for i, name in enumerate(labels)}
    feature = dataset.features[column]
    names = feature.names if isinstance(feature, ClassLabel) else None

    def encode(batch: dict, indices: list[int] | None = None) -> dict:
        out = []
        for j, value in enumerate(batch[column]):
            name = names[value] if names is not None and value is not None and value >= 0 else value
            key = None if name is None else str(name)
            if key not in index:
                # A stream's rows have no stable number (each process reads its own part): the label says it.
                row = f"Row {indices[j]} of {source!r}" if indices is not None else f"An example of {source!r}"
                raise DataError(
                    f"{row} has label {name!r}, which is not in the training labels ({', '.join(labels)}). "
                    "Fix the row, add examples of that class to the training data, or add it to data.labels."
                )
            out.append(index[key])
        return {"labels": out}

    features = dataset.features.copy()
    features["labels"] = ClassLabel(names=labels)
    if isinstance(dataset, IterableDataset):
        return dataset.map(encode, batched=True, features=features)
    return dataset.map(encode, batched=True, with_indices=True, features=features, desc="Encoding labels")


def split_train(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A seeded split stratified by `labels` (plain seeded split when a class is too small to stratify)."""
    try:
        parts = dataset.train_test_split(test_size=fraction, seed=seed, stratify_by_column="labels")
    except ValueError as err:
        logger.warning("Cannot stratify the validation split (%s); using a plain seeded split.", err)
        parts = dataset.train_test_split(test_size=fraction, seed=seed)
    return parts["train"], parts["test"]
