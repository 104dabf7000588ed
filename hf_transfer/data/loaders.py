"""What the engine trains from, whatever the kind of data: one protocol, `TrainLoader`, two implementations.

    FitData.loader(train, collate, LoaderSpec) ──► TrainLoader
        .prepare(accelerator, model, optimizer, eval_loader)   one accelerator.prepare call for all of them
        .batches_per_epoch                                     an int, or None: a stream, counted in max_steps
        .epoch(n)                                              the batches of epoch n, from the loader's position
        .state_dict() / .load_state_dict(state, where)         that position, as JSON, in every checkpoint

`MapLoader` (here) reads a map-style dataset epoch after epoch; `StreamLoader` (streaming.py) reads a
`datasets.IterableDataset` pass after pass without end. Which one trains is decided once, where the run's
data is prepared (train.py's `training_data` sets `FitData.loader`); the engine never asks which it has.

Why the map-style loader is Accelerate's prepared DataLoader with `skip_first_batches`, not torchdata's
StatefulDataLoader through `DataLoaderConfiguration(use_stateful_dataloader=True)` (read in accelerate
1.16's data_loader.py and checkpointing.py): `save_state` then writes the loader's state with `torch.save`
(a pickle, where every other position this tool writes is JSON) to one file name, `dl_state_dict.bin`,
from every process at once (one process's state for all); the state it saves is corrected for prefetching
by a guess (`adjust_state_dict_for_prefetch`: minus `num_processes - 1` batches, the counters it needs
missing with DataLoader workers). The seeded sampler (`use_seedable_sampler`) already makes an epoch's
order a function of (data seed, epoch), so a position is two integers: the epoch and the batches of it
already trained, exact for any number of workers and processes, and plain JSON. The stream keeps
torchdata's StatefulDataLoader, which is where `datasets` saves a stream's position.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch.utils.data import DataLoader

from ..core.errors import ConfigError, RunDirError
from .pipeline import LoaderSettings

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
Collate = Callable[[list[dict[str, Any]]], Batch]


@dataclass(frozen=True)
class LoaderSpec:
    """What the engine tells a loader factory: this fit's batch size (per process) and seed, the machine's
    worker settings, the device, and which of how many processes this one is."""

    batch_size: int
    seed: int
    settings: LoaderSettings
    device: torch.device
    rank: int = 0
    processes: int = 1


class TrainLoader(Protocol):
    """The training batches of one fit, and their position (see the module's docstring)."""

    @property
    def batches_per_epoch(self) -> int | None:
        """Micro-batches per epoch on this process; None: a stream, which the engine counts in max_steps."""
        ...

    @property
    def shared_position(self) -> bool:
        """True: every process stands at the same place (one seeded order, sharded by Accelerate), so the main
        process alone writes the position and every process reads it, as with every other file of a
        checkpoint; False: each process reads its own part of the data and writes its own position."""
        ...

    def prepare(self, accelerator: Accelerator, model: Any, optimizer: Any, eval_loader: Any) -> tuple[Any, Any, Any]:
        """The model, optimizer and evaluation loader prepared by `accelerator` in one call, with this loader's
        own DataLoader when Accelerate should wrap it (DeepSpeed reads the micro-batch size from the loaders
        of that call)."""
        ...

    def epoch(self, epoch: int) -> Iterable[Batch]:
        """The batches of `epoch`, from where the loader stands (after `load_state_dict`: the checkpoint's place)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """This process's position, JSON values only."""
        ...

    def load_state_dict(self, state: dict[str, Any], where: str) -> None:
        """Continue from `state` (read from `where`, named in errors)."""
        ...


LoaderFactory = Callable[[Any, Collate, LoaderSpec], TrainLoader]


def torch_loader(
    dataset: Any, collate: Collate, batch_size: int, settings: LoaderSettings, seed: int, train: bool
) -> DataLoader:
    """A DataLoader with the machine's worker settings (not yet prepared by Accelerate)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        collate_fn=collate,
        **settings.dataloader_kwargs(),
        # As timm's train.py: a ragged last training batch (possibly of 1) would break BatchNorm.
        drop_last=train,
        # A private generator: starting an epoch's iterator draws nothing from the global RNG (dropout's).
        generator=torch.Generator().manual_seed(seed),
    )


def _say_left_out(examples: int, batches: int, batch_size: int, processes: int) -> None:
    """Log how many training examples the dropped ragged batch leaves out of each epoch: on a few-shot set it
    is a share of the data and of the optimizer steps (120 examples in batches of 16: 8 out, 7 steps, not 8)."""
    left = examples - batches * batch_size * processes
    if left <= 0:
        return
    fits = [size for size in range(batch_size, batch_size // 2, -1) if examples % (size * processes) == 0]
    hint = f"; train.batch_size={fits[0]} uses all of them" if fits else ""
    logger.info(
        f"{left} of {examples} training examples sit out each epoch (not always the same: the order is shuffled), "
        f"as the ragged last batch is dropped (a batch of one breaks BatchNorm){hint}"
    )


def check_kind(state: dict[str, Any], kind: str, where: str) -> None:
    """Refuse a position written for another kind of loader (a streamed run's checkpoint in a map-style run)."""
    if state.get("kind") != kind:
        raise RunDirError(
            f"{where} holds the position of a {state.get('kind')!r} training loader, but this run reads its "
            f"training data as {kind!r} (data.streaming): resume it with the settings that wrote it."
        )


class MapLoader:
    """A map-style training set, shuffled per epoch under the run's data seed, prepared (sharded across
    processes) by Accelerate; its position is the epoch and the micro-batches of it already trained."""

    KIND = "map"
    shared_position = True  # one seeded order for every process; the number of processes is in the position

    def __init__(self, dataset: Any, collate: Collate, spec: LoaderSpec) -> None:
        self.dataset, self.spec = dataset, spec
        self.loader = torch_loader(dataset, collate, spec.batch_size, spec.settings, spec.seed, train=True)
        self._accelerator: Accelerator | None = None
        self._epoch, self._batches = 0, 0  # the epoch in progress, and its micro-batches handed out

    @property
    def batches_per_epoch(self) -> int:
        return len(self.loader)

    def prepare(self, accelerator: Accelerator, model: Any, optimizer: Any, eval_loader: Any) -> tuple[Any, Any, Any]:
        model, optimizer, self.loader, eval_loader = accelerator.prepare(model, optimizer, self.loader, eval_loader)
        self._accelerator = accelerator
        if len(self.loader) == 0:
            raise ConfigError(
                f"{len(self.dataset)} training examples do not fill one batch of {self.spec.batch_size} on each of "
                f"{accelerator.num_processes} process(es): lower train.batch_size or add data."
            )
        if accelerator.is_main_process:
            _say_left_out(len(self.dataset), len(self.loader), self.spec.batch_size, accelerator.num_processes)
        return model, optimizer, eval_loader

    def epoch(self, epoch: int) -> Iterator[Batch]:
        skip = self._batches if epoch == self._epoch else 0
        self._epoch, self._batches = epoch, skip
        self.loader.set_epoch(epoch)  # the seeded sampler's order of this epoch, the same after a resume
        batches = self._accelerator.skip_first_batches(self.loader, skip) if skip else self.loader
        for batch in batches:
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        spec = self.spec
        position = {"epoch": self._epoch, "batches": self._batches}
        return {"kind": self.KIND, **position, "batch_size": spec.batch_size, "processes": spec.processes}

    def load_state_dict(self, state: dict[str, Any], where: str) -> None:
        check_kind(state, self.KIND, where)
        # Checkpoints fall on optimizer steps: the examples trained fill whole batches of another batch size or
        # number of processes too (train.auto_find_batch_size lowers the one), in the sampler's one order.
        examples = state["batches"] * state["batch_size"] * state["processes"]
        self._epoch, self._batches = state["epoch"], examples // (self.spec.batch_size * self.spec.processes)
