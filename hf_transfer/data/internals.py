"""The two places where the data layer reads a private part of `datasets` (checked against datasets 5.2),
kept here so that an upgrade that moves them breaks one module, with its tests, and nothing else.

- `split_patterns`: datasets' split conventions (train/ validation/ test/ folders, file-name keywords) are
  public only as `get_data_patterns(base_path)`, which lists the folder through fsspec: 2,864 `ls` and
  132,448 `info` calls for 960 images (issue 20). `_get_data_files_patterns` is the same function over a
  resolver of our own, fed from one listing of the folder.
- `source_row_number`: a split or subset (train_test_split, select) reads its rows through an indices
  mapping that has no public accessor; it gives back a row's number in the data set it came from, which is
  how the error for an undecodable example names that row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import Dataset


def split_patterns(resolve: Callable[[str], list[str]]) -> dict[str, list[str]]:
    """Split name -> the glob patterns of datasets' conventions that match something, by `resolve` (which
    raises FileNotFoundError for a pattern matching nothing, as datasets' own resolver does); raises
    FileNotFoundError when no convention matches at all."""
    from datasets.data_files import _get_data_files_patterns

    return {str(split): list(patterns) for split, patterns in _get_data_files_patterns(resolve).items()}


def source_row_number(dataset: Dataset, position: int) -> int:
    """The number, in the data set it was split or selected from, of the row at `position` of `dataset`."""
    mapping = dataset._indices
    return mapping.column(0)[position].as_py() if mapping is not None else position


def dataset_fingerprint(dataset: Dataset) -> str:
    """datasets' fingerprint of `dataset` (its content and every transform applied, the key of datasets' own
    cache): the key of ours (decoded examples, cached features, folder listings, in-memory sources). Kept
    on the object without a public accessor."""
    return dataset._fingerprint
