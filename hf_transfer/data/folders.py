"""A local folder as a data source: a `save_to_disk` folder, an image/audio folder in datasets'
imagefolder/audiofolder layout (class sub-folders, or metadata.csv/jsonl/parquet naming each `file_name`,
optionally in train/ validation/ test/ split folders), or a folder of data files in the Hub's layout.

Every file a folder's own files name (metadata, state.json, README `configs:`) must lie inside it: a data
folder is data, never a way to read files elsewhere. Image and audio folders are listed here (datasets'
builders skip linked folders without a word and drop a single class's label), and checked so that a mistake
in the layout is an error, not a dataset read otherwise.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
from datasets import ClassLabel, Dataset, DatasetDict

from ..core.atomic import atomic_path
from ..core.cache import cache_dir
from ..core.errors import DataError
from ..core.yaml_reader import read_front_matter, read_yaml_file
from .files import (
    FILE_BUILDERS,
    METADATA_FILES,
    Source,
    is_saved_dataset,
    load_dataset_splits,
    load_file,
    media_extensions,
    streamed,
    visible_files,
)
from .internals import dataset_fingerprint, split_patterns

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class LocalFolder:
    """A source that names a local folder: the spec as given, its location (the spec without its ':SPLIT'),
    the split it names, and the folder on disk."""

    spec: str
    location: str
    split: str | None
    path: Path


def open_folder(folder: LocalFolder, folder_builder: str | None, subset: str | None, streaming: bool = False) -> Source:
    """A local folder as named splits: a save_to_disk folder, a media folder (imagefolder / audiofolder
    layout, checked), or a folder of data files."""
    spec, location, split, path = folder.spec, folder.location, folder.split, folder.path
    if is_saved_dataset(path):
        _check_saved_files_inside(path)
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            saved = Source(spec, location, dict(loaded), {s: str(path / s) for s in loaded}, split, kind="folder")
        else:
            saved = Source(spec, location, {"train": loaded}, {"train": location}, split, kind="folder")
        return streamed(saved, streaming)
    files = visible_files(path)
    if folder_builder is not None and any(f.suffix.lower() in media_extensions(folder_builder) for f in files):
        return streamed(_open_media_folder(folder, folder_builder), streaming)
    if any(f.suffix.lower() in FILE_BUILDERS and f.name not in METADATA_FILES for f in files):
        _check_declared_files_inside(path)
        splits = load_dataset_splits(str(path), subset, None, hub=False, streaming=streaming)
        origins = {s: f"{location}:{s}" for s in splits}
        return Source(spec, location, splits, origins, split, base_dir=path.resolve(), kind="folder")
    if folder_builder is None:
        raise DataError(
            f"Folder {location!r} holds no csv/json/parquet files or webdataset .tar shards and is no save_to_disk "
            "folder: this task reads tables (a data file, a folder of them, a save_to_disk folder or a Hub dataset id)."
        )
    extensions = ", ".join(sorted(media_extensions(folder_builder)))
    raise DataError(f"Folder {location!r} holds no files of a known type ({extensions}).")


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


def _open_media_folder(folder: LocalFolder, folder_builder: str) -> Source:
    """An imagefolder/audiofolder layout, checked so that a mistake in it is an error rather than a
    dataset the builder silently reads otherwise (split folders taken for classes, one class, ...)."""
    location, path = folder.location, folder.path.resolve()
    suffixes = media_extensions(folder_builder)
    split_files = _split_files(path)
    media = {name: sorted(f for f in files if f.suffix.lower() in suffixes) for name, files in split_files.items()}
    metadata = {name: sorted(f for f in files if f.name in METADATA_FILES) for name, files in split_files.items()}
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
    return Source(folder.spec, location, splits, origins, folder.split, kind="folder")


def _split_files(path: Path) -> dict[str, list[Path]]:
    """The files of each split of a folder, by datasets' own conventions (train/ validation/ test/
    folders or file-name keywords; else everything is one `train` split), over `visible_files`."""
    from fsspec.utils import glob_translate  # how datasets (through fsspec) matches its patterns

    files = {f.relative_to(path).as_posix(): f for f in visible_files(path)}

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
        patterns = split_patterns(resolve)  # datasets' conventions over our one listing of the folder
    except FileNotFoundError:
        return {}
    return {split: matching(found) for split, found in patterns.items()}


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
    listed = visible_files(path)  # every file, not only media: the folder's one listing, not one walk per class
    for name, files in media.items():
        root = roots[name]
        if files and all(f.parent == root for f in files):
            raise DataError(
                f"Folder {str(root)!r} has no class sub-folders and no metadata.csv/metadata.jsonl. Expected "
                f"{root}/<label>/<file> for each example, or a {root}/metadata.csv with columns file_name,label."
            )
        classes |= {f.parent.name for f in files}
        filled = {f.relative_to(root).parts[0] for f in listed if f.parent != root and f.is_relative_to(root)}
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))):
            if folder.name not in filled:
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

    path = cache_dir("listings") / f"{dataset_fingerprint(listing)}.arrow"
    if not path.is_file():
        with atomic_path(path) as tmp, ArrowWriter(path=str(tmp), features=listing.features) as writer:
            writer.write_table(listing.data.table)  # another process reads a whole file or none
            writer.finalize()
    return Dataset.from_file(str(path))


def _read_metadata(files: list[Path], column: str) -> Dataset:
    """metadata.csv/jsonl/parquet files as one dataset, `file_name` (relative to each metadata file's
    folder, and inside it, as the builders require) resolved and named `column`."""
    parts = []
    for file in files:
        table = load_file(file, FILE_BUILDERS[file.suffix.lower()], str(file))
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
