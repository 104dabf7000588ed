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

from .cache import cache_dir, fingerprint
from .rng import example_seed

if TYPE_CHECKING:
    from datasets import Dataset

    from .adapters.base import ProbeView, TaskAdapter

logger = logging.getLogger(__name__)

_DECODE_BATCH = 64  # rows per decode call: enough to amortise Arrow reads, small enough for big images


def decode_once(
    dataset: Dataset, adapter: TaskAdapter, augment: bool, cache: bool = True, cache_root: str | None = None
) -> tuple[Dataset, bool]:
    """`dataset` with its input column replaced by the adapter's decoded form, computed once and
    stored under the cache (reused by later runs on the same data and preprocessing).

    Returns (dataset, decoded). With `cache` off nothing is computed here: the rows are decoded on
    the fly each time they are read (decoded=False), with identical results."""
    if not cache or len(dataset) == 0:
        return dataset, False
    key = fingerprint(dataset._fingerprint, adapter.decode_signature(augment), "decode-v1")
    path = cache_dir("inputs", cache_root) / f"{key}.arrow"
    path.parent.mkdir(parents=True, exist_ok=True)
    what = "training inputs" if augment else "evaluation inputs"
    decoded = dataset.map(
        lambda batch: adapter.decode(batch, augment),
        batched=True,
        batch_size=_DECODE_BATCH,
        remove_columns=adapter.input_columns,
        cache_file_name=str(path),
        new_fingerprint=key,
        load_from_cache_file=True,
        desc=f"Decoding {what} once",
    )
    return decoded, True


def check_decodable(dataset: Dataset, adapter: TaskAdapter) -> None:
    """Decode every row once and drop the result: an unreadable file raises now, by name."""
    for start in range(0, len(dataset), _DECODE_BATCH):
        adapter.decode(dataset[start : start + _DECODE_BATCH], augment=False)


class ExampleView(TorchDataset):
    """Decoded rows as model inputs, one example at a time, for a torch DataLoader.

    `augment` runs the adapter's random training augmentation under a per-example seed; the epoch
    lives in shared memory so that persistent worker processes see `set_epoch` (Accelerate calls it
    on the dataset at the start of every epoch). With a probe `view`, each example is seen through it
    (`adapter.view_inputs`, rows decoded as `view.augment_source`) under the same per-example seed."""

    def __init__(
        self,
        data: Dataset,
        adapter: TaskAdapter,
        augment: bool,
        seed: int = 0,
        decoded: bool = True,
        view: ProbeView | None = None,
    ):
        self.data, self.adapter, self.augment, self.seed, self.decoded = data, adapter, augment, seed, decoded
        self.view = view
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
        random = self.augment or self.view is not None
        seeds = [example_seed(self.seed, epoch, int(index)) if random else None for index in indices]
        return model_examples(self.adapter, rows, self.decoded, self.augment, seeds, self.view)


def model_examples(
    adapter: TaskAdapter,
    rows: dict[str, list[Any]],
    decoded: bool,
    augment: bool,
    seeds: Sequence[int | None],
    view: ProbeView | None = None,
) -> list[dict[str, Any]]:
    """A batch of rows (decoded, or decoded here) as model inputs, one example each, the i-th augmented
    under `seeds[i]` (None without augmentation), or seen through a probe `view` under it."""
    if not decoded:
        rows = {k: v for k, v in rows.items() if k not in adapter.input_columns} | adapter.decode(rows, augment)
    examples = [{key: values[j] for key, values in rows.items()} for j in range(len(seeds))]
    if view is not None:
        return [adapter.view_inputs(example, view, seed) for example, seed in zip(examples, seeds, strict=True)]
    return [adapter.transform(example, augment, seed) for example, seed in zip(examples, seeds, strict=True)]


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
