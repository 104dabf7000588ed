"""Reading one data file, or a folder or Hub id through `datasets.load_dataset`, as named splits; the
`Source` that opening a data source gives (see sources.py); the files of a folder as datasets sees them.

A csv/tsv/json/jsonl/parquet file is one split (a webdataset .tar shard too); a folder in the Hub's layout
or a Hub id is read by `datasets.load_dataset`, cached by datasets. A file that holds no examples, cannot be
parsed or is not UTF-8 is named with what to do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
from datasets import Dataset, IterableDataset
from datasets.exceptions import DatasetGenerationError

from ..core.errors import DataError

if TYPE_CHECKING:
    pass


# Data files and the datasets builder that reads each; .tar: webdataset shards (xxx.jpg + xxx.cls per example).
FILE_BUILDERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".tar": "webdataset",
}


# What the imagefolder/audiofolder builders read as a folder's labels and file names.
METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")


# datasets' names for a validation split (its folder conventions map all of them to `validation`).
VALIDATION_SPLITS = ("validation", "valid", "val", "dev")


# A Dataset/DatasetDict passed in memory is named so in config.yaml and the model card.
IN_MEMORY_PREFIX = "in-memory:"


# Shards of a table read as a stream: enough for every process and DataLoader worker to read its own.
STREAM_SHARDS = 64


@dataclass
class Source:
    """A data source, opened: its splits as loaded (no column checked yet) and where each came from."""

    spec: str  # as given
    location: str  # the spec without its ':SPLIT'
    splits: dict[str, Dataset | IterableDataset]  # IterableDataset when opened as a stream
    origins: dict[str, str]  # split -> where it came from, for the log
    split: str | None = None  # the split the spec names
    base_dir: Path | None = None  # relative file paths in its columns are relative to this folder
    kind: str = "dataset"  # "folder" for local folders: the log says "(from the folder)"

    def choose(self, role: str) -> str:
        """The split to use as `role` (train, validation, evaluate): the one the spec names, the only one,
        or the one named for the role; a source with several splits and none of those names one."""
        names = list(self.splits)
        if self.split is not None:
            if self.split not in self.splits:
                raise DataError(f"{self.location!r} has no split {self.split!r}; its splits: {', '.join(names)}.")
            return self.split
        if len(names) == 1:
            return names[0]
        if role == "train" and "train" in self.splits:
            return "train"
        if role == "validation" and (found := self.validation_split()) is not None:
            return found
        raise DataError(
            f"{self.location!r} holds the splits {', '.join(names)}: name the one to use as "
            f"{self.location}:<split> (e.g. {self.location}:{names[-1]})."
        )

    def validation_split(self, besides: str | None = None) -> str | None:
        return next((s for s in VALIDATION_SPLITS if s in self.splits and s != besides), None)


def streamed(source: Source, streaming: bool) -> Source:
    """A source opened as tables, its splits read as streams when `streaming` (see the module's docstring)."""
    if streaming:
        source.splits = {
            name: split.to_iterable_dataset(num_shards=max(1, min(len(split), STREAM_SHARDS)))
            for name, split in source.splits.items()
        }
    return source


def source_location(source: str) -> str:
    """The folder, file or Hub id a data source names, without its ':SPLIT'."""
    return split_spec(source)[0]


def split_spec(source: str) -> tuple[str, str | None]:
    """'ROOT:test' -> ('ROOT', 'test') where ROOT exists (a path may hold ':' itself); 'id:split' for Hub ids."""
    if Path(source).expanduser().exists():
        return source, None
    head, sep, tail = source.rpartition(":")
    if sep and head and Path(head).expanduser().exists():
        return head, tail or None
    if source.startswith((".", "/", "~")):
        return source, None  # a local path that does not exist: said so by the caller
    repo, _, split = source.partition(":")
    return repo, split or None


def load_dataset_splits(
    path: str, subset: str | None, split: str | None, hub: bool, streaming: bool = False
) -> dict[str, Dataset | IterableDataset]:
    """`datasets.load_dataset(path, name=subset, split=split)` (a Hub id, or a local folder in the Hub's
    layout) as named splits, cached by datasets (HF_DATASETS_OFFLINE=1 reads the cache only); with
    `streaming`, read from the files as iterated (nothing is converted or cached)."""
    kwargs = {"streaming": True} if streaming else {}
    try:
        loaded = datasets.load_dataset(path, name=subset, split=split, **kwargs)
    except Exception as err:  # noqa: BLE001 - the Hub and the builders raise many types; the user needs one message
        raise _load_error(path, subset, err, hub) from None
    return {split: loaded} if split is not None else dict(loaded)


def _load_error(path: str, subset: str | None, err: Exception, hub: bool) -> DataError:
    text = " ".join(str(err).split())
    available = re.search(r"\[[^\]]*\]", text)
    names = available.group(0) if available else "the dataset's configurations"
    if "Config name is missing" in text:
        return DataError(f"Dataset {path!r} has several subsets (configurations): set data.subset to one of {names}.")
    if text.startswith("BuilderConfig"):
        return DataError(f"Dataset {path!r} has no subset {subset!r}: set data.subset to one of {names}.")
    if hub and isinstance(err, ConnectionError) and (datasets.config.HF_HUB_OFFLINE or "OfflineMode" in text):
        return DataError(
            f"{path!r} is not a local folder or file, nor a Hub dataset in the local datasets cache, and "
            "HF_DATASETS_OFFLINE is set (offline), so it cannot be downloaded: check the path, or load the dataset "
            "once with network access (it is cached then), or unset HF_DATASETS_OFFLINE."
        )
    if hub:
        return DataError(
            f"{path!r} is not a local folder or file, and loading it as a Hub dataset failed: "
            f"{type(err).__name__}: {text}"
        )
    # datasets' builders end in "An error occurred while generating the dataset"; what went wrong is its cause.
    cause = err.__cause__ if isinstance(err, DatasetGenerationError) and err.__cause__ is not None else err
    if isinstance(cause, UnicodeDecodeError):
        for file in visible_files(Path(path)):
            if file.suffix.lower() in _TEXT_FILES and (found := _non_utf8_line(file)):
                return DataError(_non_utf8_message(str(file), *found))
    text = " ".join(str(cause).split())
    return DataError(f"Cannot read folder {path!r} as a dataset: {type(cause).__name__}: {text}")


# Data files read as text (UTF-8, as datasets' csv and json builders read them).
_TEXT_FILES = (".csv", ".tsv", ".json", ".jsonl")


def _non_utf8_line(path: Path) -> tuple[int, int] | None:
    """The first line of a text file that is not UTF-8, and its first byte that is not, or None. Read by whole
    lines, a block at a time (called once a file failed to load, to say where)."""
    line, carry = 1, b""
    with open(path, "rb") as file:
        while True:
            block = file.read(1 << 20)
            data = carry + block
            cut = len(data) if not block else data.rfind(b"\n") + 1
            whole, carry = data[:cut], data[cut:]
            try:
                whole.decode("utf-8")
            except UnicodeDecodeError as err:
                return line + whole[: err.start].count(b"\n"), whole[err.start]
            line += whole.count(b"\n")
            if not block:
                return None


def _non_utf8_message(source: str, line: int, byte: int) -> str:
    return (
        f"Data file {source!r} is not UTF-8 text: line {line} holds the byte 0x{byte:02x} (Latin-1 or a Windows "
        "code page?). Save the file as UTF-8 (a spreadsheet's 'CSV UTF-8', or iconv -f latin1 -t utf-8)."
    )


def load_file(path: Path, builder: str, source: str, streaming: bool = False) -> Dataset | IterableDataset:
    """A csv/json/parquet file (or a webdataset .tar shard) as one split, with one message for a file that
    holds no examples or cannot be parsed (a stream's rows are parsed as it is read: there, the builder's own
    error)."""
    no_rows = f"Data file {source!r} holds no examples"
    if path.stat().st_size == 0:
        raise DataError(f"{no_rows} (0 bytes): write one row per example (for csv, after a header row).")
    kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    if streaming:
        return datasets.load_dataset(builder, data_files=str(path), split="train", streaming=True, **kwargs)
    try:
        dataset = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except DatasetGenerationError as err:
        cause = err.__cause__ or err
        if isinstance(cause, UnicodeDecodeError) and (found := _non_utf8_line(path)):
            raise DataError(_non_utf8_message(source, *found)) from None
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


def is_saved_dataset(path: Path) -> bool:
    """A `save_to_disk` folder: a DatasetDict's dataset_dict.json, or a Dataset's state.json."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


# The folders listed in the current `one_listing_per_folder` scope, by the path they were asked for.
_LISTINGS: ContextVar[dict[Path, list[Path]] | None] = ContextVar("hf_transfer_listings", default=None)


@contextmanager
def one_listing_per_folder() -> Iterator[None]:
    """Within it, `visible_files` walks each folder once: a run asks for a data folder's files to infer the
    task, to find its splits, to check its class folders and to name its format on the card, and a walk
    stats every file (on a network file system, seconds for a large set). The run then also reads one
    consistent listing from start to end. Nested scopes share the outermost one's listings."""
    if _LISTINGS.get() is not None:
        yield
        return
    token = _LISTINGS.set({})
    try:
        yield
    finally:
        _LISTINGS.reset(token)


def visible_files(path: Path) -> list[Path]:
    """The files under `path` as datasets' folder builders see them (no hidden `.x` or special `__x__` parts),
    except that links to folders are followed, as torchvision's ImageFolder follows them: datasets skips a
    linked folder without a word, so a linked class folder would vanish (a model of 2 classes from 3
    folders). A link back to a folder above is not followed again. Walked once per `one_listing_per_folder`
    scope."""
    listings = _LISTINGS.get()
    if listings is not None and path in listings:
        return list(listings[path])
    files = _walk_visible(path)
    if listings is not None:
        listings[path] = files
    return list(files)


def _walk_visible(path: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(path, followlinks=True):
        here = Path(root)
        parts = here.relative_to(path).parts
        chain = {os.path.realpath(path.joinpath(*parts[:i])) for i in range(len(parts) + 1)}
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")) and os.path.realpath(here / d) not in chain)
        files += [here / name for name in sorted(names) if not name.startswith(".") and (here / name).is_file()]
    return files


def media_extensions(folder_builder: str) -> frozenset[str]:
    """The file extensions that datasets' imagefolder/audiofolder builders read."""
    from datasets.packaged_modules.audiofolder.audiofolder import AudioFolder
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    builders = {"imagefolder": ImageFolder, "audiofolder": AudioFolder}
    return frozenset(e.lower() for e in builders[folder_builder].EXTENSIONS)
