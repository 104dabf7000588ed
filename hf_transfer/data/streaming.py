"""Streaming training data (`data.streaming: true`): read shard by shard as it trains, never loaded whole.

    data.train ──open_source(streaming=True)──► IterableDataset ──labelled (lazily)──► shuffle(seed, buffer)
        ──split_dataset_by_node──► this process's shards ──map(StreamExamples)──► StreamLoader ──► engine

Everything is `datasets`' own: `load_dataset(..., streaming=True)` for data files and Hub ids (a table
already in Arrow, `to_iterable_dataset`), `IterableDataset.shuffle` with a buffer and `set_epoch` for a
new order every pass, `split_dataset_by_node` so that each process reads its own shards (or every
n-th example when the shards do not divide), `.map` to decode and augment on the fly, and
`state_dict()` / `load_state_dict()` (through torchdata's StatefulDataLoader, which collects it from
the DataLoader workers) to resume at the example where a checkpoint was written.

A stream has no length: the run is counted in optimizer steps (train.max_steps), passes over the
stream follow one another on each process without anything waiting for the others, and evaluation
and checkpoints come every train.eval_every_steps / checkpoint_every_steps and at the end. Classes
must be known before reading (a ClassLabel column, or data.labels). The validation set is finite: it
is read whole (data.validation, or the source's own validation split, at most data.max_eval_samples
examples) and evaluated as in any run.

Not exact on resume: the content of the shuffle buffer, which datasets does not save; a resumed pass
refills it from the stream (see data.shuffle_buffer). With `data.shuffle_buffer: 0` a resumed run
equals an uninterrupted one.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import islice
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import send_to_device
from datasets import Dataset, IterableDataset
from datasets.distributed import split_dataset_by_node

from ..core.errors import ConfigError, DataError, RunDirError
from ..core.rng import example_seed
from .columns import ColumnRequest, resolve_columns
from .loaders import Collate, LoaderSpec, check_kind
from .pipeline import Examples, RowNames
from .sources import open_source
from .splits import Splits, column_request, labelled, load_labelled

if TYPE_CHECKING:
    from accelerate import Accelerator

    from ..adapters.base import InputCodec
    from ..config.schema import DataConfig, RunConfig
    from .files import Source

logger = logging.getLogger(__name__)
# torchdata 0.11 calls a torch function that torch 2.14 deprecates, once per pass: nothing a user can act on.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)

_MAP_BATCH = 64  # rows decoded per call of the stream's map: as the decode cache's batches


# --------------------------------------------------------------------------- the run's splits


def load_stream_splits(config: RunConfig, adapter: InputCodec, data: object = None) -> Splits:
    """The training stream (labelled lazily, not yet shuffled or split) and the validation set, read
    whole: `data.validation`, else the stream's own validation split."""
    d = config.data
    if data is not None:
        raise ConfigError(
            "data.streaming reads files, folders or a Hub dataset; a dataset passed in memory is loaded "
            "already: set data.streaming=false."
        )
    if d.max_train_samples:
        raise ConfigError("data.max_train_samples does not apply to a stream: train.max_steps bounds the run.")
    if not d.train:
        raise ConfigError("data.train is not set: point it at data files, a folder or a Hub dataset id.")
    source = open_source(d.train, adapter.folder_builder, d.subset, streaming=True)
    name = source.choose("train")
    stream, where = source.splits[name], source.origins[name]
    if stream.features is None:
        raise DataError(
            f"The columns of {where!r} are not known before reading it: convert it to parquet (its schema is "
            "stored), or set data.streaming=false."
        )
    kind = adapter.column_kind
    columns = resolve_columns(stream, kind, column_request(d, kind), where)
    logger.info(
        "Columns of %s (streamed): input %r (%s), label %r (%s)",
        where,
        columns.input,
        columns.input_how,
        columns.label,
        columns.label_how,
    )
    train, labels = labelled(stream, source, adapter, columns, d.labels, where)
    if len(labels) < 2:
        raise DataError(f"{where!r} has {len(labels)} class(es); classification needs at least 2.")
    request = column_request(d, kind, prefer=(columns.label, columns.input))
    validation, origin = _stream_validation(source, name, adapter, request, labels, d)
    if d.max_eval_samples:
        validation = validation.select(range(min(d.max_eval_samples, len(validation))))
    logger.info(
        "Training stream: %s (%d shards, shuffle buffer %d); validation: %s, %d examples",
        where,
        stream.num_shards,
        d.shuffle_buffer,
        origin,
        len(validation),
    )
    d = replace(d, label_column=columns.label, **{adapter.input_column_key: columns.input})
    return Splits(train, validation, labels, replace(config, data=d), (where, d.validation or origin))


def _stream_validation(
    source: Source, train: str, adapter: InputCodec, request: ColumnRequest, labels: list[str], d: DataConfig
) -> tuple[Dataset, str]:
    """The validation set of a streamed run, read whole, and where it comes from: data.validation, else the
    source's own validation split besides `train` (a stream cannot hold part of itself out)."""
    if d.validation:
        validation, _ = load_labelled(d.validation, adapter, request, labels, d.subset)
        return validation, f"{d.validation} (data.validation)"
    if (split := source.validation_split(besides=train)) is not None:
        origin = source.origins[split]
        rows = materialize(source.splits[split], d.max_eval_samples)
        found = resolve_columns(rows, adapter.column_kind, request, origin)
        return labelled(rows, source, adapter, found, labels, origin)[0], origin
    raise ConfigError(
        f"{d.train!r} has no validation split, and a stream cannot hold part of itself out: set "
        "data.validation to a file, folder or Hub split."
    )


def materialize(stream: IterableDataset, limit: int | None) -> Dataset:
    """The first `limit` examples of a stream (all of them: None) as a Dataset, media left undecoded."""
    rows = list(islice(stream.decode(False), limit))
    if not rows:
        raise DataError("The validation split of the stream holds no examples: set data.validation.")
    return Dataset.from_list(rows, features=stream.features)


# --------------------------------------------------------------------------- what each process trains on


@dataclass(frozen=True)
class StreamReading:
    """How one process reads the training stream: shuffled under `seed` through a buffer of
    `shuffle_buffer` examples (0: in order), its own part of it (process `rank` of `processes`)."""

    seed: int
    shuffle_buffer: int
    rank: int
    processes: int


def training_stream(
    stream: IterableDataset, adapter: InputCodec, augment: bool, reading: StreamReading, origin: str | None = None
) -> IterableDataset:
    """This process's part of the labelled stream, shuffled, as model inputs (decoded and augmented on the fly).
    `origin` names the stream in the error on an example that cannot be decoded."""
    seed, rank, processes = reading.seed, reading.rank, reading.processes
    if reading.shuffle_buffer:  # also shuffles the shard order per pass
        stream = stream.shuffle(seed=seed, buffer_size=reading.shuffle_buffer)
    stream = split_dataset_by_node(stream, rank=rank, world_size=processes)
    examples = StreamExamples(adapter, augment, seed, rank, processes, origin)
    mapped = stream.map(
        examples, batched=True, batch_size=_MAP_BATCH, with_indices=True, remove_columns=stream.column_names
    )
    examples.stream = mapped
    return mapped


class StreamExamples:
    """The stream's map function: a batch of labelled rows to model inputs. Each example is augmented
    under its own seed from (seed, pass, place in the stream): its position in what this DataLoader
    worker of this process reads, which datasets restores on resume, with the worker and the process
    mixed in so that no two examples of one pass share a seed."""

    def __init__(
        self, adapter: InputCodec, augment: bool, seed: int, rank: int, processes: int, origin: str | None = None
    ) -> None:
        self.seed, self.rank, self.processes = seed, rank, processes
        self.examples = Examples(adapter, augment, RowNames(None, origin))
        # The dataset this function runs in: its epoch (set_epoch, shared with persistent workers) is the pass.
        self.stream: IterableDataset | None = None

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        seeds: list[int | None] = [None] * len(indices)
        if self.examples.augment:
            epoch = self.stream.epoch if self.stream is not None else 0
            worker = torch.utils.data.get_worker_info()
            workers, worker_id = (worker.num_workers, worker.id) if worker is not None else (1, 0)
            places = [((i * workers + worker_id) * self.processes + self.rank) for i in indices]
            seeds = [example_seed(self.seed, epoch, place) for place in places]
        out = self.examples.inputs(self.examples.decoded(batch, None), seeds)
        return {key: [example[key] for example in out] for key in (out[0] if out else {})}


class StreamLoader:
    """Batches of this process's stream, pass after pass without end (the engine stops at max_steps),
    on the device: a `TrainLoader` (loaders.py) with no length; its position (pass, and where in it) is
    saved in and restored from every checkpoint.

    A pass ends when this process's part of the stream does; the next one calls `set_epoch`, which
    reshuffles the shard order and the buffer. The batches bypass Accelerate's DataLoader wrapper on
    purpose: it would end gradient accumulation early at each pass's end (one process at a time, out
    of step with the others), and Accelerate 1.16 saves one process's loader state for all of them."""

    KIND = "stream"
    batches_per_epoch = None  # a stream: the engine counts the run in train.max_steps
    shared_position = False  # each process reads its own shards of the stream

    def __init__(self, dataset: IterableDataset, collate: Collate, spec: LoaderSpec) -> None:
        from torchdata.stateful_dataloader import StatefulDataLoader

        self.dataset, self.device, self.pin_memory = dataset, spec.device, spec.settings.pin_memory
        self.batch_size, self.processes = spec.batch_size, spec.processes
        self.loader = StatefulDataLoader(
            dataset,
            batch_size=spec.batch_size,
            collate_fn=collate,
            **spec.settings.dataloader_kwargs(),
            drop_last=True,  # as for map-style data: a ragged batch (possibly of 1) would break BatchNorm
            # A private generator: starting a pass draws nothing from the global RNG (dropout's).
            generator=torch.Generator().manual_seed(spec.seed),
        )
        self.passes = 0
        self._resumed = False

    def prepare(self, accelerator: Accelerator, model: Any, optimizer: Any, eval_loader: Any) -> tuple[Any, Any, Any]:
        # Each process already reads its own part of the stream: only the rest is Accelerate's to prepare.
        return accelerator.prepare(model, optimizer, eval_loader)

    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """The batches from where the stream stands, pass after pass: a stream's run is one "epoch" of max_steps."""
        return iter(self)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            self.dataset.set_epoch(self.passes)
            batches = 0
            for batch in self.loader:
                batches += 1
                yield send_to_device(batch, self.device, non_blocking=self.pin_memory)
            if not batches and not self._resumed:
                raise DataError(
                    f"This process's part of the training stream holds fewer than train.batch_size="
                    f"{self.batch_size} examples: lower train.batch_size, or give the stream more data or shards."
                )
            logger.info("Pass %d over the training stream ended (%d batches on this process)", self.passes, batches)
            self.passes, self._resumed = self.passes + 1, False

    def state_dict(self) -> dict[str, Any]:
        """This process's position: its pass, and torchdata's state of the loader (datasets' place in the stream)."""
        return {
            "kind": self.KIND,
            "processes": self.processes,
            "epoch": self.passes,
            "loader": self.loader.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], where: str) -> None:
        """Continue where the checkpoint left this process's stream."""
        check_kind(state, self.KIND, where)
        if state["processes"] != self.processes:
            raise RunDirError(
                f"{where} was written by one of {state['processes']} processes, each reading its own shards of the "
                f"stream; resume it with {state['processes']} processes (now {self.processes})."
            )
        self.passes = state["epoch"]
        self.loader.load_state_dict(state["loader"])
        self._resumed = True
