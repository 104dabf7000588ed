"""Augmentation randomness as a pure function of (seed, epoch, example index).

Each training example is augmented under its own seed, derived from the run's seed, the epoch and
the example's index in the dataset. The result does not depend on which DataLoader worker (or how
many) produced it, nor on what ran before it, so `num_workers=0` and `num_workers=4` give the same
batches, and a resumed run replays exactly the augmentations the uninterrupted run saw without
any random state to checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def example_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one example in one epoch; a hash, so neighbouring triples are unrelated."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block on torch's CPU generator seeded with `seed` (augmentations draw from torch only),
    leaving the process's own stream (dropout's) exactly as it was.

    Only the CPU generator is seeded: `torch.manual_seed` would also seed every accelerator, which where
    none is initialised queues the call with a formatted stack for CUDA, XPU and MTIA (three stack
    extractions per augmented example), and where CUDA is up reseeds the device's generator per example."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def view_of(seed: int, epoch: int, index: int, views: int) -> int:
    """Which of an example's `views` cached views an epoch trains on: a function of (seed, epoch, index)."""
    return example_seed(seed, epoch, index) % views if views > 1 else 0
