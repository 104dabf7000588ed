"""`train.auto_find_batch_size`: a fit that runs out of device memory starts again with half the per-device
batch and twice the gradient accumulation, so the effective batch stays the same.

Built on Accelerate's `find_executable_batch_size`, whose `should_reduce_batch_size` recognises the
out-of-memory errors of CUDA, XPU, MPS and the CPU allocator. Every attempt starts where the first one
did (the same weights, the same random state: dropout draws from torch's generator; data order and
augmentation are seeded), so the run that succeeds is the run started at that batch and accumulation.
The evaluation batch, when set, halves with it. Each process retries on its own, so under several
processes an out-of-memory error must strike all of them (the same shapes: usually the case); one that
strikes a single process leaves the others waiting in a collective.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TypeVar

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedType, find_executable_batch_size
from accelerate.utils.memory import should_reduce_batch_size
from torch import nn

from ..config.schema import TrainConfig
from ..core.errors import ConfigError

logger = get_logger(__name__)
Result = TypeVar("Result")  # what `fit` returns (the loop's result); this module never imports the loop


def fit_finding_batch_size(
    accelerator: Accelerator,
    fit: Callable[[TrainConfig], Result],
    model: nn.Module,
    settings: TrainConfig,
    accumulation: int,
) -> Result:
    """`fit(settings)`, again with half the batch and twice `accumulation` after each out-of-memory error.

    `accumulation` is the gradient accumulation at `settings.batch_size` (the accelerator's own, which
    `accelerate config` may have set); the accelerator is left with it afterwards."""
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ConfigError(
            f"train.auto_find_batch_size works on one process or with DDP, not under "
            f"{accelerator.distributed_type.value} (its model and optimizer are set up once): set train.batch_size "
            "by hand there."
        )
    start = {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
    rng = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    tried: list[int] = []
    smaller = smaller_batches(settings.batch_size)

    @find_executable_batch_size(starting_batch_size=settings.batch_size, reduce_batch_size_fn=lambda: next(smaller, 0))
    def attempt(batch_size: int) -> Result:
        factor = settings.batch_size // batch_size
        if tried:
            logger.warning(
                f"Out of memory at a per-device batch of {tried[-1]}: starting again at {batch_size} x accumulation "
                f"{accumulation * factor} (train.auto_find_batch_size; the same effective batch)"
            )
            model.load_state_dict(start)
            torch.set_rng_state(rng[0])
            if rng[1] is not None:
                torch.cuda.set_rng_state_all(rng[1])
        tried.append(batch_size)
        accelerator.gradient_accumulation_steps = accumulation * factor
        eval_batch_size = None if settings.eval_batch_size is None else max(1, settings.eval_batch_size // factor)
        try:
            return fit(replace(settings, batch_size=batch_size, eval_batch_size=eval_batch_size))
        except Exception as err:
            if batch_size == 1 and should_reduce_batch_size(err):
                raise ConfigError(
                    "Out of memory on the device even at a per-device batch of 1 (train.auto_find_batch_size): set "
                    "train.mixed_precision=bf16 or train.gradient_checkpointing=true, or shard the model with FSDP "
                    "(README, Scaling out)."
                ) from err
            raise

    try:
        return attempt()
    finally:
        accelerator.gradient_accumulation_steps = accumulation


def smaller_batches(batch_size: int) -> Iterator[int]:
    """The batch sizes to fall back to, each at most half the one before and a divisor of `batch_size`, so
    that batch x accumulation stays exactly the same: 32 -> 16, 8, 4, 2, 1; 6 -> 3, 1; 5 -> 1."""
    factor = 1
    while factor < batch_size:
        factor = next(f for f in range(2 * factor, batch_size + 1) if batch_size % f == 0)
        yield batch_size // factor
