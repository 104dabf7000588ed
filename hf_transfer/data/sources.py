"""Datasets: every form of data a run reads, as named splits; their columns and labels; a run's two splits.

A data source (`data.train`, `data.validation`, `hf-transfer evaluate --data`) is
- a csv/tsv/json/jsonl/parquet file: one split; relative file paths in it are relative to the file;
- a folder: a `save_to_disk` folder (Dataset or DatasetDict); an image or audio folder in datasets'
  imagefolder/audiofolder layout (class sub-folders, or metadata.csv/jsonl/parquet naming each
  `file_name`, optionally in train/ validation/ test/ split folders); or a folder of data files in
  the Hub's layout (train.csv + validation.csv, data/train-*.parquet, README `configs:`);
- a Hub dataset id, with `data.subset` naming its configuration (`load_dataset`'s `name`);
- `sample:<name>/<split>` (specs.py), or a Dataset/DatasetDict passed as `train(config, data=...)`.

`SOURCE:SPLIT` names one split of a source that has several (`ROOT:test`, `glue:validation`).
Split names follow datasets' conventions (a `val/` or `dev/` folder is the `validation` split).

Opened with `streaming=True` (data.streaming; see streaming.py), each split is a `datasets.IterableDataset`:
data files and Hub datasets through `load_dataset(..., streaming=True)`, nothing converted or cached;
tables that are already Arrow or small (save_to_disk folders, in-memory datasets, the file listing of
an image/audio folder) through `to_iterable_dataset`, so their rows too are decoded on the fly.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, IterableDataset
from datasets.exceptions import DatasetGenerationError

from ..catalog.specs import resolve_data
from ..core.cache import cache_dir, fingerprint
from ..core.errors import ConfigError, DataError
from ..core.yaml_reader import read_front_matter, read_yaml_file

if TYPE_CHECKING:
    from ..adapters.base import TaskAdapter
    from ..config.schema import DataConfig, RunConfig

logger = logging.getLogger(__name__)

# Data files and the datasets builder that reads each; .tar: webdataset shards (xxx.jpg + xxx.cls per example).
_FILE_BUILDERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".tar": "webdataset",
}
# What the imagefolder/audiofolder builders read as a folder's labels and file names.
_METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")
# Label columns of common datasets, most usual first (`cls`: webdataset's class key); else the one ClassLabel column.
LABEL_COLUMNS = ("label", "labels", "class", "target", "cls")
# datasets' names for a validation split (its folder conventions map all of them to `validation`).
VALIDATION_SPLITS = ("validation", "valid", "val", "dev")
# A Dataset/DatasetDict passed in memory is named so in config.yaml and the model card.
IN_MEMORY_PREFIX = "in-memory:"
# Shards of a table read as a stream: enough for every process and DataLoader worker to read its own.
STREAM_SHARDS = 64
_TASKS = {"image": "image-classification", "audio": "audio-classification", "text": "text-classification"}


# --------------------------------------------------------------------------- opening a source


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
        return _streamed(_open_in_memory(source, memory), streaming)
    location, split = _split_spec(resolve_data(source))
    path = Path(location).expanduser()
    if path.is_dir():
        return _open_folder(source, location, split, path, folder_builder, subset, streaming)
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DataError(
                f"Cannot read {source!r}: unsupported file type {path.suffix!r}. Use one of "
                f"{', '.join(sorted(_FILE_BUILDERS))}, a folder, or a Hub dataset id."
            )
        dataset = _load_file(path, builder, location, streaming)
        return Source(source, location, {"train": dataset}, {"train": location}, split, path.resolve().parent, "file")
    if location.startswith((".", "/", "~")) or path.suffix.lower() in _FILE_BUILDERS:
        raise DataError(f"Data path {location!r} does not exist. Check data.train / data.validation.")
    splits = _load_dataset(location, subset, split, hub=True, streaming=streaming)
    shown = location + (f" (subset {subset})" if subset else "")
    return Source(source, location, splits, {s: f"{shown}:{s}" for s in splits}, split)


def load_source(source: str, folder_builder: str | None, path_column: str | None = None) -> Dataset:
    """One split of a source, as loaded: the split it names, or its only (or `train`) split. With
    `path_column`, relative file paths in that column of a data file are made absolute."""
    opened = open_source(source, folder_builder)
    dataset = opened.splits[opened.choose("train")]
    if path_column is not None and opened.base_dir is not None:
        dataset = _absolute_paths(dataset, path_column, opened.base_dir)
    return dataset


def in_memory_name(data: Dataset | DatasetDict) -> str:
    """How config.yaml and the model card name a dataset passed as an object: its kind and fingerprint."""
    if isinstance(data, DatasetDict):
        return f"{IN_MEMORY_PREFIX}DatasetDict@{fingerprint(*(f'{k}={v._fingerprint}' for k, v in data.items()))}"
    if isinstance(data, Dataset):
        return f"{IN_MEMORY_PREFIX}Dataset@{data._fingerprint}"
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


def _streamed(source: Source, streaming: bool) -> Source:
    """A source opened as tables, its splits read as streams when `streaming` (see the module's docstring)."""
    if streaming:
        source.splits = {
            name: split.to_iterable_dataset(num_shards=max(1, min(len(split), STREAM_SHARDS)))
            for name, split in source.splits.items()
        }
    return source


def check_output_outside_data(config: RunConfig) -> None:
    """Refuse an output_dir inside a local data folder: every later run on that folder would read the run's
    files as data (an image folder's sub-folder is a class, a table folder's json files are rows)."""
    output = Path(config.output_dir).expanduser().resolve()
    for key, source in (("data.train", config.data.train), ("data.validation", config.data.validation)):
        location = Path(source_location(source)).expanduser() if source else None
        if location is not None and location.is_dir() and output.is_relative_to(location.resolve()):
            beside = os.path.relpath(location.resolve().parent / "runs" / location.resolve().name)
            raise ConfigError(
                f"output_dir {config.output_dir} is inside the data folder {str(location)!r} ({key}): the run's "
                "files would be read as data by every later run on that folder (a sub-folder as a class). Give "
                f"an output_dir outside it, e.g. output_dir={beside}."
            )


def source_location(source: str) -> str:
    """The folder, file or Hub id a data source names, without its ':SPLIT'."""
    return _split_spec(source)[0]


def _split_spec(source: str) -> tuple[str, str | None]:
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


def _load_dataset(
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
        for file in _visible_files(Path(path)):
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


def _load_file(path: Path, builder: str, source: str, streaming: bool = False) -> Dataset | IterableDataset:
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


def source_format(source: str, folder_builder: str | None) -> str:
    """The format a local data source is read as, named as datasets names its builders (the model card's
    dataset type): csv, json, parquet, webdataset, imagefolder / audiofolder (`folder_builder`, for a
    folder of media files), arrow (a save_to_disk folder), in-memory; custom for anything else."""
    if source.startswith(IN_MEMORY_PREFIX):
        return "in-memory"
    path = Path(_split_spec(resolve_data(source))[0]).expanduser()
    if path.is_file():
        return _FILE_BUILDERS.get(path.suffix.lower(), "custom")
    if not path.is_dir():
        return "custom"
    if _is_saved_dataset(path):
        return "arrow"
    files = _visible_files(path)
    if folder_builder is not None and any(f.suffix.lower() in media_extensions(folder_builder) for f in files):
        return folder_builder
    # A folder of data files: datasets reads it with the builder of its most common kind of file.
    kinds = Counter(_FILE_BUILDERS[f.suffix.lower()] for f in files if f.suffix.lower() in _FILE_BUILDERS)
    return kinds.most_common(1)[0][0] if kinds else "custom"


# --------------------------------------------------------------------------- folders


def _open_folder(
    spec: str,
    location: str,
    split: str | None,
    path: Path,
    folder_builder: str | None,
    subset: str | None,
    streaming: bool = False,
) -> Source:
    if _is_saved_dataset(path):
        _check_saved_files_inside(path)
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            saved = Source(spec, location, dict(loaded), {s: str(path / s) for s in loaded}, split, kind="folder")
        else:
            saved = Source(spec, location, {"train": loaded}, {"train": location}, split, kind="folder")
        return _streamed(saved, streaming)
    files = _visible_files(path)
    if folder_builder is not None and any(f.suffix.lower() in media_extensions(folder_builder) for f in files):
        return _streamed(_open_media_folder(spec, location, split, path.resolve(), folder_builder), streaming)
    if any(f.suffix.lower() in _FILE_BUILDERS and f.name not in _METADATA_FILES for f in files):
        _check_declared_files_inside(path)
        splits = _load_dataset(str(path), subset, None, hub=False, streaming=streaming)
        origins = {s: f"{location}:{s}" for s in splits}
        return Source(spec, location, splits, origins, split, base_dir=path.resolve(), kind="folder")
    if folder_builder is None:
        raise DataError(
            f"Folder {location!r} holds no csv/json/parquet files or webdataset .tar shards and is no save_to_disk "
            "folder: this task reads tables (a data file, a folder of them, a save_to_disk folder or a Hub dataset id)."
        )
    extensions = ", ".join(sorted(media_extensions(folder_builder)))
    raise DataError(f"Folder {location!r} holds no files of a known type ({extensions}).")


def _is_saved_dataset(path: Path) -> bool:
    """A `save_to_disk` folder: a DatasetDict's dataset_dict.json, or a Dataset's state.json."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _outside(name: str) -> bool:
    """Whether a file name written in a folder's own files (metadata, state.json, README configs) points
    outside that folder: absolute, up through '..', home-relative or a URL."""
    return Path(name).is_absolute() or ".." in Path(name).parts or name.startswith("~") or "://" in name


_OUTSIDE_FIX = (
    "A data folder holds its own files, and datasets would read these silently: if you mean them, point "
    "data.train (or --data) at them directly; else copy them into the folder and name them relative to it."
)


def _check_saved_files_inside(path: Path) -> None:
    """A save_to_disk folder names its own files: a DatasetDict its split folders (dataset_dict.json), each
    Dataset its Arrow files (state.json). A name outside the folder is refused, not followed."""
    listing = path / "dataset_dict.json"
    folders = [path]
    if listing.is_file():
        splits = _read_json(listing).get("splits", [])
        for split in splits:
            if _outside(str(split)):
                raise DataError(
                    f"{str(listing)!r} names the split folder {split!r}, outside {str(path)!r}. {_OUTSIDE_FIX}"
                )
        folders = [path / str(split) for split in splits]
    for folder in folders:
        state = folder / "state.json"
        if state.is_file():
            for entry in _read_json(state).get("_data_files", []):
                name = str(entry.get("filename", "")) if isinstance(entry, dict) else str(entry)
                if _outside(name):
                    raise DataError(
                        f"{str(state)!r} names the data file {name!r}, outside {str(folder)!r}. {_OUTSIDE_FIX}"
                    )


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(
            f"Cannot read {str(path)!r} as JSON ({err}): the save_to_disk folder is damaged; save it again."
        ) from None
    return value if isinstance(value, dict) else {}


def _check_declared_files_inside(path: Path) -> None:
    """A folder in the Hub's layout may declare its data files (README.md `configs:`, .huggingface.yaml):
    every path and data_dir there must lie inside the folder. Read by datasets' own parser, as load_dataset
    reads them."""
    from datasets.load import dataset_module_factory

    declared = [path / name for name in ("README.md", ".huggingface.yaml") if (path / name).is_file()]
    if not declared:
        return
    # datasets parses these itself: through the guarded loader first, so an alias bomb is refused, not expanded.
    for file in declared:
        if file.suffix == ".md":
            read_front_matter(file, DataError)
        else:
            read_yaml_file(file, "Dataset configuration file", DataError)
    try:
        configs = dataset_module_factory(str(path)).builder_configs_parameters.metadata_configs or {}
    except Exception:  # noqa: BLE001 - a folder datasets cannot read is reported by load_dataset, by its own words
        return
    for name, params in configs.items():
        for entry in _declared_paths(params):
            if _outside(entry):
                raise DataError(
                    f"{' / '.join(repr(str(f)) for f in declared)} (configs: {name}) declares the data files "
                    f"{entry!r}, outside "
                    f"{str(path)!r}. {_OUTSIDE_FIX}"
                )


def _declared_paths(params: dict) -> list[str]:
    """The data_dir and every data_files path of one configuration (a string, a list, {split: ...} or
    [{split, path}] entries, as datasets accepts them)."""

    def flat(value: object) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            return flat(value["path"]) if "path" in value else [p for v in value.values() for p in flat(v)]
        if isinstance(value, (list, tuple)):
            return [p for v in value for p in flat(v)]
        return []

    return flat(params.get("data_files")) + flat(params.get("data_dir"))


def _visible_files(path: Path) -> list[Path]:
    """The files under `path` as datasets' folder builders see them (no hidden `.x` or special `__x__` parts),
    except that links to folders are followed, as torchvision's ImageFolder follows them: datasets skips a
    linked folder without a word, so a linked class folder would vanish (a model of 2 classes from 3
    folders). A link back to a folder above is not followed again."""
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


def _open_media_folder(spec: str, location: str, split: str | None, path: Path, folder_builder: str) -> Source:
    """An imagefolder/audiofolder layout, checked so that a mistake in it is an error rather than a
    dataset the builder silently reads otherwise (split folders taken for classes, one class, ...)."""
    suffixes = media_extensions(folder_builder)
    split_files = _split_files(path)
    media = {name: sorted(f for f in files if f.suffix.lower() in suffixes) for name, files in split_files.items()}
    metadata = {name: sorted(f for f in files if f.name in _METADATA_FILES) for name, files in split_files.items()}
    roots = {name: _split_root(path, files, name) for name, files in split_files.items()}
    if not any(metadata.values()):
        _check_class_folders(path, media, roots)
    elif not all(metadata.values()):
        missing = ", ".join(str(roots[name]) for name, files in metadata.items() if not files)
        raise DataError(f"{missing}: no metadata.csv/metadata.jsonl, which the other splits of {location!r} have.")
    _check_names(path, [f for files in split_files.values() for f in files])
    origins = {name: str(root) for name, root in roots.items()}
    column = _MEDIA_COLUMNS[folder_builder]
    labels = sorted({f.parent.name for files in media.values() for f in files})
    splits = {name: _listed_split(media[name], metadata[name], labels, column) for name in split_files}
    return Source(spec, location, splits, origins, split, kind="folder")


def _split_files(path: Path) -> dict[str, list[Path]]:
    """The files of each split of a folder, by datasets' own conventions (train/ validation/ test/
    folders or file-name keywords; else everything is one `train` split), over `_visible_files`."""
    from datasets.data_files import _get_data_files_patterns  # get_data_patterns, with our listing of the folder
    from fsspec.utils import glob_translate  # how datasets (through fsspec) matches its patterns

    files = {f.relative_to(path).as_posix(): f for f in _visible_files(path)}

    def resolve(pattern: str) -> list[str]:
        regex = re.compile(glob_translate(pattern))
        found = [name for name in files if regex.match(name)]
        if not found:
            raise FileNotFoundError(pattern)  # what datasets' resolver raises: the pattern matches nothing
        return found

    def matching(patterns: list[str]) -> list[Path]:
        names = set()
        for pattern in patterns:
            try:
                names.update(resolve(pattern))
            except FileNotFoundError:
                continue
        return [files[name] for name in sorted(names)]

    try:
        patterns = _get_data_files_patterns(resolve)
    except FileNotFoundError:
        return {}
    return {str(split): matching(split_patterns) for split, split_patterns in patterns.items()}


def _split_root(path: Path, files: list[Path], split: str) -> Path:
    """The folder a split's files are in: its split folder (ROOT/train, ROOT/val, ...), else ROOT."""
    from datasets.data_files import SPLIT_KEYWORDS

    keywords = {str(name): words for name, words in SPLIT_KEYWORDS.items()}.get(split, [split])
    firsts = {f.relative_to(path).parts[0] for f in files}
    if len(firsts) == 1:
        first = path / next(iter(firsts))
        if first.is_dir() and any(first.name.lower().startswith(word) for word in keywords):
            return first
    return path


def _check_class_folders(path: Path, media: dict[str, list[Path]], roots: dict[str, Path]) -> None:
    """Class sub-folders (no metadata file): in each split's folder, one folder per class, files inside."""
    classes: set[str] = set()
    for name, files in media.items():
        root = roots[name]
        if files and all(f.parent == root for f in files):
            raise DataError(
                f"Folder {str(root)!r} has no class sub-folders and no metadata.csv/metadata.jsonl. Expected "
                f"{root}/<label>/<file> for each example, or a {root}/metadata.csv with columns file_name,label."
            )
        classes |= {f.parent.name for f in files}
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))):
            if not _visible_files(folder):
                raise DataError(f"Class folder {str(folder)!r} is empty: add examples to it or remove it.")
    depths = {len(f.relative_to(path).parts) for files in media.values() for f in files}
    if len(depths) > 1:
        # (the builders would silently drop the labels)
        raise DataError(
            f"Folder {str(path)!r} holds files at different depths: put each file directly in its class folder "
            f"(<label>/<file>, or <split>/<label>/<file>)."
        )
    if len(classes) == 1:
        # (imagefolder would silently drop the label column of a single class.)
        raise DataError(
            f"Folder {str(path)!r} has one class folder ({next(iter(classes))!r}); classification needs at least "
            f"two class folders: {path}/<label>/<file>."
        )


# The folder builders' layouts, listed here rather than by the builders: datasets 5's audiofolder encodes every
# row through torchcodec (FFmpeg), even for Audio(decode=False); both builders skip linked folders without a
# word, and end a metadata mistake in "An error occurred while generating the dataset", its cause dropped.
# Listing gives the builders' columns (the file as `image` / `audio`, a ClassLabel `label` from the class
# folders, or the metadata's columns) and the adapter decodes the files. Split folders and metadata files
# follow the builders' conventions.
_MEDIA_COLUMNS = {"imagefolder": "image", "audiofolder": "audio"}


def _check_names(path: Path, files: list[Path]) -> None:
    """Every file name is UTF-8 (datasets stores names as UTF-8 text: one that is not, e.g. Latin-1 from an old
    archive, would stop the load with no name given)."""
    for file in files:
        try:
            str(file).encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(file).decode("utf-8", "backslashreplace")
            raise DataError(
                f"File '{shown}' has a name that is not UTF-8 text, which datasets cannot store: rename it "
                f"(e.g. convmv -f latin1 -t utf-8 -r --notest {path})."
            ) from None


def _listed_split(files: list[Path], metadata: list[Path], labels: list[str], column: str) -> Dataset:
    """One split of a listed folder: absolute file paths (`column`) with the metadata's columns, or with
    a ClassLabel `label` over `labels` (the class folders of every split) taken from each file's folder."""
    if metadata:
        return _read_metadata(metadata, column)
    index = {name: i for i, name in enumerate(labels)}
    features = datasets.Features({column: datasets.Value("string"), "label": ClassLabel(names=labels)})
    rows = {column: [str(f) for f in files], "label": [index[f.parent.name] for f in files]}
    return _on_disk(Dataset.from_dict(rows, features=features))


def _on_disk(listing: Dataset) -> Dataset:
    """A listing made in memory, as an Arrow file in the cache named by its content (its fingerprint): as a
    builder's dataset, what is computed from it (encoded labels, resolved paths) is cached beside it and
    read again by the next run on the same folder, instead of computed (and its progress shown) each time."""
    from datasets.arrow_writer import ArrowWriter

    path = cache_dir("listings") / f"{listing._fingerprint}.arrow"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with ArrowWriter(path=str(tmp), features=listing.features) as writer:
            writer.write_table(listing.data.table)
            writer.finalize()
        os.replace(tmp, path)  # atomic: another process reads a whole file or none
    return Dataset.from_file(str(path))


def _read_metadata(files: list[Path], column: str) -> Dataset:
    """metadata.csv/jsonl/parquet files as one dataset, `file_name` (relative to each metadata file's
    folder, and inside it, as the builders require) resolved and named `column`."""
    parts = []
    for file in files:
        table = _load_file(file, _FILE_BUILDERS[file.suffix.lower()], str(file))
        if "file_name" not in table.column_names:
            raise DataError(f"{str(file)!r} has no file_name column (columns: {', '.join(table.column_names)}).")
        inside = _inside(file)
        parts.append(
            table.map(inside, batched=True, input_columns="file_name", with_indices=True, desc="Resolving file paths")
        )
    return datasets.concatenate_datasets(parts).rename_column("file_name", column)


def _inside(metadata: Path) -> Callable[[list[str], list[int]], dict[str, list[str]]]:
    """`file_name`s of a metadata file made absolute, refusing, by row, names outside its folder."""

    def resolve(names: list[str | None], rows: list[int]) -> dict[str, list[str]]:
        for name, row in zip(names, rows, strict=True):
            where = f"Row {row} of {str(metadata)!r} (counted from 0, after any header)"
            if not name:
                raise DataError(f"{where} has no file_name: name the file of that example, or remove the row.")
            if _outside(name):
                raise DataError(
                    f"{where} names the file {name!r}, outside the metadata file's folder: a file_name is a path "
                    f"relative to {str(metadata.parent)!r} and inside it (e.g. cats/001.jpg). Move the file into "
                    "that folder and name it so, or remove the row."
                )
        return {"file_name": [str(metadata.parent / name) for name in names]}

    return resolve


# --------------------------------------------------------------------------- the task a source is for


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
        path = Path(_split_spec(resolve_data(source))[0]).expanduser()
        if path.is_dir() and not _is_saved_dataset(path):
            suffixes = {f.suffix.lower() for f in _visible_files(path)}
            found = [kind for kind in ("image", "audio") if suffixes & media_extensions(f"{kind}folder")]
            if len(found) == 2:
                raise ConfigError(
                    f"Folder {source!r} holds both image and audio files: set task=image-classification or "
                    "task=audio-classification."
                )
            if found:
                return _TASKS[found[0]], f"{found[0]} files"
            if not suffixes & set(_FILE_BUILDERS):
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


# --------------------------------------------------------------------------- columns and labels


@dataclass(frozen=True)
class Columns:
    """The columns of a split that hold the model input and the label, and how each was chosen."""

    input: str
    label: str
    input_how: str
    label_how: str


def resolve_columns(
    dataset: Dataset | IterableDataset,
    adapter: TaskAdapter,
    label_column: str | None,
    input_column: str | None,
    where: str,
    keys: tuple[str, str],
    prefer: tuple[str | None, str | None] = (None, None),
) -> Columns:
    """The label and input columns: the given ones (which must exist), else detected: the first of the
    usual names present (`prefer`'s names first), else the one column of the right feature type
    (ClassLabel; Image, Audio), else the one column that looks the part: for the input, the one of free
    text (text) or of file names of the task's kind (image, audio); for the label, the one of few values,
    each shared by several rows (a CSV's `stars`, `sentiment`). Several such columns are named in the
    error, never guessed between. `keys` name the settings that choose them, for the error."""
    label_key, input_key = keys
    label_names = _names(prefer[0], LABEL_COLUMNS)
    label = _named_column(dataset, label_column, label_names, ClassLabel, label_key, where, exclude=None)
    named = label[0] if label else None
    names = _names(prefer[1], adapter.input_column_names)
    found = _named_column(dataset, input_column, names, adapter.input_feature, input_key, where, exclude=named)
    if found is None:
        kind = f"{adapter.folder_builder.removesuffix('folder')} file names" if adapter.folder_builder else "free text"
        candidates = dict.fromkeys(_input_candidates(dataset, adapter, exclude=named))
        found = _one_of(candidates, "input", kind, names, input_key, where, dataset)
    if label is None:
        candidates = _label_candidates(dataset, exclude=found[0])
        label = _one_of(candidates, "label", "few repeated values", label_names, label_key, where, dataset)
    return Columns(input=found[0], label=label[0], input_how=found[1], label_how=label[1])


def _names(preferred: str | None, usual: tuple[str, ...]) -> tuple[str, ...]:
    return (preferred, *(n for n in usual if n != preferred)) if preferred else usual


def _named_column(
    dataset: Dataset | IterableDataset,
    given: str | None,
    names: tuple[str, ...],
    feature_type: type | None,
    key: str,
    where: str,
    exclude: str | None,
) -> tuple[str, str] | None:
    """The given column, the first of the usual `names`, or the one column of `feature_type`; else None."""
    columns = dataset.column_names
    if given is not None:
        if given not in columns:
            raise DataError(
                f"Column {given!r} not found in {where!r} (columns: {', '.join(columns)}). Set {key}=<column>."
            )
        return given, f"set by {key}"
    for name in names:
        if name in columns and name != exclude:
            return name, f"detected; {key} sets another"
    typed = [c for c in columns if feature_type and isinstance(dataset.features[c], feature_type) and c != exclude]
    if len(typed) == 1:
        return typed[0], f"detected: the {feature_type.__name__} column; {key} sets another"
    return None


def _one_of(
    candidates: dict[str, int | None],
    role: str,
    kind: str,
    names: tuple[str, ...],
    key: str,
    where: str,
    dataset: Dataset | IterableDataset,
) -> tuple[str, str]:
    """The one column that holds `kind` (`candidates`: column -> its number of distinct values, if counted) as
    the `role` column, and how it was found. None: the usual `names` were not found either; several: each is
    named. Either way the setting `key` chooses."""
    count = lambda column: f" ({candidates[column]} values)" if candidates[column] is not None else ""  # noqa: E731
    if len(candidates) == 1:
        column = next(iter(candidates))
        return column, f"detected: the one column of {kind}{count(column)}; {key} sets another"
    columns = ", ".join(dataset.column_names)
    if candidates:
        listed = ", ".join(f"{column!r}{count(column)}" for column in candidates)
        raise DataError(
            f"Cannot tell which column of {where!r} is the {role}: {listed} all hold {kind} (columns: {columns}). "
            f"Set {key}=<column>."
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


def _input_candidates(dataset: Dataset | IterableDataset, adapter: TaskAdapter, exclude: str | None) -> list[str]:
    """String columns whose first rows are all file names of the adapter's kind (image/audio), or mostly
    distinct, multi-word text (text)."""
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
        if adapter.folder_builder:
            suffixes = media_extensions(adapter.folder_builder)
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


def labelled(
    dataset: Dataset | IterableDataset,
    source: Source,
    adapter: TaskAdapter,
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
    adapter: TaskAdapter,
    label_column: str | None = None,
    labels: list[str] | None = None,
    input_column: str | None = None,
    keys: tuple[str, str] | None = None,
    subset: str | None = None,
    prefer: tuple[str | None, str | None] = (None, None),
) -> tuple[Dataset, list[str]]:
    """One labelled split (the one `source` names, or its only one), ready for the adapter, and its class
    names: loaded, its columns found (given, else detected, `prefer`'s names first), prepared, and an
    integer `labels` column encoded against `labels` (every label must be known) or its own label set.

    `keys` names the settings that choose the label and input columns, for the error when one is
    missing (the config keys by default; the CLI's options for `evaluate`)."""
    keys = keys or ("data.label_column", f"data.{adapter.input_column_key}")
    opened = open_source(source, adapter.folder_builder, subset)
    split = opened.choose("evaluate")
    dataset, where = opened.splits[split], opened.origins[split]
    columns = resolve_columns(dataset, adapter, label_column, input_column, where, keys, prefer)
    return labelled(dataset, opened, adapter, columns, labels, where)


# --------------------------------------------------------------------------- a run's splits


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


def load_splits(config: RunConfig, adapter: TaskAdapter, data: Dataset | DatasetDict | None = None) -> Splits:
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
    key = f"data.{adapter.input_column_key}"
    keys = ("data.label_column", key)
    source = open_source(d.train, adapter.folder_builder, d.subset, data)
    name = source.choose("train")
    where = source.origins[name]
    given = getattr(d, adapter.input_column_key)
    columns = resolve_columns(source.splits[name], adapter, d.label_column, given, where, keys)
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
    prefer = (columns.label, columns.input)
    if d.validation:
        other = open_source(d.validation, adapter.folder_builder, d.subset, data)
        split = other.choose("validation")
        validation = _validation(other, split, adapter, d, keys, prefer, labels)
        rows_from = other.origins[split]
        origin = f"{rows_from} (data.validation)"
    elif (split := source.validation_split(besides=name)) is not None:
        validation = _validation(source, split, adapter, d, keys, prefer, labels)
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


def _validation(
    source: Source,
    split: str,
    adapter: TaskAdapter,
    d: DataConfig,
    keys: tuple[str, str],
    prefer: tuple[str, str],
    labels: list[str],
) -> Dataset:
    dataset, where = source.splits[split], source.origins[split]
    given = getattr(d, adapter.input_column_key)
    columns = resolve_columns(dataset, adapter, d.label_column, given, where, keys, prefer)
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
