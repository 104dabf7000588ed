"""The data path: decode once, augment per example, load in workers.

    prepared rows ──adapter.decode (once; cached on disk)──► decoded rows ──adapter.transform (per step)──► collate

Decoding (opening and resizing images, reading and resampling audio, tokenizing text) gives the same
result every epoch, so it runs once per data set and preprocessing, over all rows, and is kept as an
Arrow file keyed by both. What runs per step is cheap tensor work: the random crop and flip of a
uint8 image, an audio window, nothing at all for text. Augmentation is seeded per (seed, epoch,
index) (see rng.py), so workers can run it anywhere without changing a single number.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset as TorchDataset

from ..core.cache import cache_dir, fingerprint
from ..core.errors import DataError
from ..core.rng import example_seed
from .internals import dataset_fingerprint, source_row_number

if TYPE_CHECKING:
    from datasets import Dataset

    from ..adapters.base import InputCodec, ProbeView

logger = logging.getLogger(__name__)

_DECODE_BATCH = 64  # rows per decode call: enough to amortise Arrow reads, small enough for big images


def decode_once(
    dataset: Dataset,
    adapter: InputCodec,
    augment: bool,
    cache: bool = True,
    cache_root: str | None = None,
    origin: str | None = None,
) -> tuple[Dataset, bool]:
    """`dataset` with its input column replaced by the adapter's decoded form, computed once and
    stored under the cache (reused by later runs on the same data and preprocessing). `origin` names
    where its rows come from (data.train, ...), for the error on a row that cannot be decoded.

    Returns (dataset, decoded). With `cache` off nothing is computed here: the rows are decoded on
    the fly each time they are read (decoded=False), with identical results."""
    if not cache or len(dataset) == 0:
        return dataset, False
    key = fingerprint(dataset_fingerprint(dataset), adapter.decode_signature(augment), "decode-v1")
    path = cache_dir("inputs", cache_root) / f"{key}.arrow"
    path.parent.mkdir(parents=True, exist_ok=True)
    what = "training inputs" if augment else "evaluation inputs"
    decoded = dataset.map(
        Examples(adapter, augment, RowNames(dataset, origin)).decode,
        batched=True,
        with_indices=True,
        batch_size=_DECODE_BATCH,
        remove_columns=adapter.input_columns,
        cache_file_name=str(path),
        new_fingerprint=key,
        load_from_cache_file=True,
        desc=f"Decoding {what} once",
    )
    return decoded, True


def check_decodable(dataset: Dataset, adapter: InputCodec, origin: str | None = None) -> None:
    """Decode every row once and drop the result: an unreadable file raises now, by name and row."""
    examples = Examples(adapter, False, RowNames(dataset, origin))
    for start in range(0, len(dataset), _DECODE_BATCH):
        rows = dataset[start : start + _DECODE_BATCH]
        examples.decode(rows, range(start, start + len(next(iter(rows.values())))))


@dataclass(frozen=True)
class RowNames:
    """How to name a row of `dataset` in an error: by its number in the source the rows come from
    (`origin`, as the log names it), counted from 0. A split or subset of a source (train_test_split,
    select) reads its rows through datasets' indices mapping, which gives back their number there."""

    dataset: Dataset | None
    origin: str | None

    def __call__(self, position: int | None) -> str:
        where = f" of {self.origin!r}" if self.origin else ""
        if position is None:  # a stream's rows have no stable number: each process reads its own part
            return f"An example{where}"
        number = source_row_number(self.dataset, position) if self.dataset is not None else position
        return f"Row {number}{where} (counted from 0)"


@dataclass(frozen=True)
class Examples:
    """Rows to model inputs through the adapter's codec, a batch at a time: decoded (as the source of
    training augmentation with `augment`), then one example each transformed (augmented under its seed) or
    seen through a probe view. What every per-example view runs for each batch it is asked for (ExampleView;
    a training stream's StreamExamples), and what decoding once runs over a data set. `names` names a row
    that cannot be decoded."""

    adapter: InputCodec
    augment: bool
    names: RowNames

    def decode(self, rows: dict[str, list[Any]], positions: Sequence[int] | None) -> dict[str, list[Any]]:
        """`adapter.decode(rows)`; when a row cannot be decoded, the error names it (`names`, from its position
        in the data set: `positions[i]` for the i-th row, None for a stream) before what the adapter said,
        unless that names its file already (an input read from a path on disk)."""
        adapter, augment = self.adapter, self.augment
        try:
            return adapter.decode(rows, augment)
        except DataError as err:
            count = len(next(iter(rows.values())))
            for i in range(count):  # only once a batch failed: which of its rows is it?
                try:
                    adapter.decode({key: values[i : i + 1] for key, values in rows.items()}, augment)
                except DataError as row_err:
                    if adapter.input_is_file and _on_disk(rows[adapter.input_column][i]):
                        raise
                    message = str(row_err)
                    row = self.names(positions[i] if positions is not None else None)
                    raise DataError(f"{row}: {message[:1].lower()}{message[1:]}") from None
            raise err

    def decoded(self, rows: dict[str, list[Any]], positions: Sequence[int] | None) -> dict[str, list[Any]]:
        """A batch of rows with its input columns decoded (see `decode`; `positions` None: rows without a
        number, a stream's)."""
        fresh = self.decode(rows, positions)
        return {k: v for k, v in rows.items() if k not in self.adapter.input_columns} | fresh

    def inputs(
        self, rows: dict[str, list[Any]], seeds: Sequence[int | None], view: ProbeView | None = None
    ) -> list[dict[str, Any]]:
        """A batch of decoded rows as model inputs, one example each, the i-th augmented under `seeds[i]`
        (None without augmentation), or seen through a probe `view` under it."""
        examples = [{key: values[j] for key, values in rows.items()} for j in range(len(seeds))]
        adapter = self.adapter
        if view is not None:
            return [adapter.view_inputs(example, view, seed) for example, seed in zip(examples, seeds, strict=True)]
        return [adapter.transform(example, self.augment, seed) for example, seed in zip(examples, seeds, strict=True)]


def _on_disk(cell: Any) -> bool:
    """Whether an input cell is read from a file path (which the adapter's error names), not bytes in the data."""
    return isinstance(cell, str) or (isinstance(cell, dict) and bool(cell.get("path")) and not cell.get("bytes"))


class ExampleView(TorchDataset):
    """Decoded rows as model inputs, one example at a time, for a torch DataLoader.

    `augment` runs the adapter's random training augmentation under a per-example seed; the epoch
    lives in shared memory so that persistent worker processes see `set_epoch` (Accelerate calls it
    on the dataset at the start of every epoch). With a probe `view`, each example is seen through it
    (`adapter.view_inputs`, rows decoded as `view.augment_source`) under the same per-example seed: see
    ProbeViewExamples."""

    def __init__(
        self,
        data: Dataset,
        adapter: InputCodec,
        augment: bool,
        seed: int = 0,
        decoded: bool = True,
        origin: str | None = None,
    ):
        self.data, self.seed, self.decoded = data, seed, decoded
        self.examples = Examples(adapter, augment, RowNames(data, origin))
        self.view: ProbeView | None = None
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.data)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        rows = self.data[list(indices)]  # one Arrow read for the whole batch
        epoch = int(self._epoch)
        random = self.examples.augment or self.view is not None
        seeds = [example_seed(self.seed, epoch, int(index)) if random else None for index in indices]
        if not self.decoded:
            rows = self.examples.decoded(rows, indices)
        return self.examples.inputs(rows, seeds, self.view)


class ProbeViewExamples(ExampleView):
    """Rows seen through a probe view (`adapter.view_inputs`; None: the evaluation view), example i under
    `example_seed(seed, epoch, i)`, where the view's position in its list plays the epoch's part (see
    methods/features.py): the rows are decoded as `view.augment_source`."""

    def __init__(
        self,
        data: Dataset,
        adapter: InputCodec,
        view: ProbeView | None,
        seed: int,
        decoded: bool = True,
        origin: str | None = None,
    ):
        augment_source = view is not None and view.augment_source
        super().__init__(data, adapter, augment_source, seed, decoded, origin)
        self.view = view


@dataclass(frozen=True)
class LoaderSettings:
    """DataLoader worker settings, resolved for the machine the run is on."""

    num_workers: int
    pin_memory: bool

    @property
    def persistent_workers(self) -> bool:
        return self.num_workers > 0

    @property
    def prefetch_factor(self) -> int | None:
        return 4 if self.num_workers > 0 else None

    def dataloader_kwargs(self) -> dict[str, Any]:
        """These settings as a DataLoader's keyword arguments."""
        return {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
            "prefetch_factor": self.prefetch_factor,
        }


def loader_settings(requested: int | None, device: torch.device, local_processes: int) -> LoaderSettings:
    """Workers from the cores that are actually spare: on a CPU-only machine the model already uses
    every core, so decoding in workers only takes cores from it (measured: slower); with an
    accelerator, each training process keeps one core and the rest of its share decode and augment."""
    accelerated = device.type != "cpu"
    if requested is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        requested = min(8, max(0, cores // max(1, local_processes) - 1)) if accelerated else 0
    return LoaderSettings(num_workers=requested, pin_memory=accelerated and device.type == "cuda")
