"""Opening a data source: every form of data a run reads, as named splits (files.py reads data files and Hub
datasets, folders.py local folders; columns.py finds the input and label columns, splits.py labels the splits).

A data source (`data.train`, `data.validation`, `hf-transfer evaluate --data`) is
- a csv/tsv/json/jsonl/parquet file: one split; relative file paths in it are relative to the file;
- a folder: a `save_to_disk` folder (Dataset or DatasetDict); an image or audio folder in datasets'
  imagefolder/audiofolder layout (class sub-folders, or metadata.csv/jsonl/parquet naming each
  `file_name`, optionally in train/ validation/ test/ split folders); or a folder of data files in
  the Hub's layout (train.csv + validation.csv, data/train-*.parquet, README `configs:`);
- a Hub dataset id, with `data.subset` naming its configuration (`load_dataset`'s `name`);
- `sample:<name>/<split>` (catalog/specs.py), or a Dataset/DatasetDict passed as `train(config, data=...)`.

`SOURCE:SPLIT` names one split of a source that has several (`ROOT:test`, `glue:validation`).
Split names follow datasets' conventions (a `val/` or `dev/` folder is the `validation` split).

Opened with `streaming=True` (data.streaming; see streaming.py), each split is a `datasets.IterableDataset`:
data files and Hub datasets through `load_dataset(..., streaming=True)`, nothing converted or cached;
tables that are already Arrow or small (save_to_disk folders, in-memory datasets, the file listing of
an image/audio folder) through `to_iterable_dataset`, so their rows too are decoded on the fly.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from datasets import Dataset, DatasetDict

from ..catalog.specs import resolve_data
from ..core.cache import fingerprint
from ..core.errors import ConfigError, DataError
from .files import (
    FILE_BUILDERS,
    IN_MEMORY_PREFIX,
    Source,
    is_saved_dataset,
    load_dataset_splits,
    load_file,
    media_extensions,
    source_location,
    split_spec,
    streamed,
    visible_files,
)
from .folders import LocalFolder, open_folder
from .internals import dataset_fingerprint


def open_source(
    source: str | Dataset | DatasetDict,
    folder_builder: str | None,
    subset: str | None = None,
    memory: Dataset | DatasetDict | None = None,
    streaming: bool = False,
) -> Source:
    """Open a data source (see the module's docstring) as named splits. `folder_builder` (imagefolder,
    audiofolder, or None for tables) says how a folder of media files is read; `memory` is the dataset
    that an `in-memory:` source names; `streaming` opens each split as an IterableDataset."""
    if not isinstance(source, str):
        source, memory = in_memory_name(source), source
    if source.startswith(IN_MEMORY_PREFIX):
        return streamed(_open_in_memory(source, memory), streaming)
    location, split = split_spec(resolve_data(source))
    path = Path(location).expanduser()
    if path.is_dir():
        return open_folder(LocalFolder(source, location, split, path), folder_builder, subset, streaming)
    if path.is_file():
        builder = FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DataError(
                f"Cannot read {source!r}: unsupported file type {path.suffix!r}. Use one of "
                f"{', '.join(sorted(FILE_BUILDERS))}, a folder, or a Hub dataset id."
            )
        dataset = load_file(path, builder, location, streaming)
        return Source(source, location, {"train": dataset}, {"train": location}, split, path.resolve().parent, "file")
    if location.startswith((".", "/", "~")) or path.suffix.lower() in FILE_BUILDERS:
        raise DataError(f"Data path {location!r} does not exist. Check data.train / data.validation.")
    splits = load_dataset_splits(location, subset, split, hub=True, streaming=streaming)
    shown = location + (f" (subset {subset})" if subset else "")
    return Source(source, location, splits, {s: f"{shown}:{s}" for s in splits}, split)


def in_memory_name(data: Dataset | DatasetDict) -> str:
    """How config.yaml and the model card name a dataset passed as an object: its kind and fingerprint."""
    if isinstance(data, DatasetDict):
        return (
            f"{IN_MEMORY_PREFIX}DatasetDict@{fingerprint(*(f'{k}={dataset_fingerprint(v)}' for k, v in data.items()))}"
        )
    if isinstance(data, Dataset):
        return f"{IN_MEMORY_PREFIX}Dataset@{dataset_fingerprint(data)}"
    raise DataError(f"data= takes a datasets.Dataset or DatasetDict, got {type(data).__name__}.")


def _open_in_memory(spec: str, memory: Dataset | DatasetDict | None) -> Source:
    name, _, split = spec[len(IN_MEMORY_PREFIX) :].partition(":")
    location = IN_MEMORY_PREFIX + name
    if memory is None:
        raise DataError(
            f"{spec!r} names a dataset that was passed in memory: pass it again, train(config, data=dataset), "
            "or point data.train at files."
        )
    if in_memory_name(memory) != location:
        raise DataError(f"{spec!r} is not the dataset passed as data= ({in_memory_name(memory)}): pass that one.")
    splits = dict(memory) if isinstance(memory, DatasetDict) else {"train": memory}
    origins = {s: f"{location}:{s}" for s in splits} if isinstance(memory, DatasetDict) else {"train": location}
    return Source(spec, location, splits, origins, split or None)


def check_output_outside_data(output_dir: str, train: str | None, validation: str | None) -> None:
    """Refuse an output_dir inside a local data folder (`train`, `validation`: data.train and data.validation):
    every later run on that folder would read the run's files as data (an image folder's sub-folder is a
    class, a table folder's json files are rows)."""
    output = Path(output_dir).expanduser().resolve()
    for key, source in (("data.train", train), ("data.validation", validation)):
        location = Path(source_location(source)).expanduser() if source else None
        if location is not None and location.is_dir() and output.is_relative_to(location.resolve()):
            beside = os.path.relpath(location.resolve().parent / "runs" / location.resolve().name)
            raise ConfigError(
                f"output_dir {output_dir} is inside the data folder {str(location)!r} ({key}): the run's "
                "files would be read as data by every later run on that folder (a sub-folder as a class). Give "
                f"an output_dir outside it, e.g. output_dir={beside}."
            )


def source_format(source: str, folder_builder: str | None) -> str:
    """The format a local data source is read as, named as datasets names its builders (the model card's
    dataset type): csv, json, parquet, webdataset, imagefolder / audiofolder (`folder_builder`, for a
    folder of media files), arrow (a save_to_disk folder), in-memory; custom for anything else."""
    if source.startswith(IN_MEMORY_PREFIX):
        return "in-memory"
    path = Path(split_spec(resolve_data(source))[0]).expanduser()
    if path.is_file():
        return FILE_BUILDERS.get(path.suffix.lower(), "custom")
    if not path.is_dir():
        return "custom"
    if is_saved_dataset(path):
        return "arrow"
    files = visible_files(path)
    if folder_builder is not None and any(f.suffix.lower() in media_extensions(folder_builder) for f in files):
        return folder_builder
    # A folder of data files: datasets reads it with the builder of its most common kind of file.
    kinds = Counter(FILE_BUILDERS[f.suffix.lower()] for f in files if f.suffix.lower() in FILE_BUILDERS)
    return kinds.most_common(1)[0][0] if kinds else "custom"
