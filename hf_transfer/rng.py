"""A separate random stream for data augmentation.

The DataLoader fetches one batch ahead, so augmentation of batch k+1 runs before the training step
of batch k. On one global RNG, augmentation and dropout draws interleave, and no checkpoint can
capture a state from which a resumed run replays both exactly. Giving augmentation its own stream
(python `random`, numpy and torch, swapped in around each training transform) and checkpointing it
as it was before the last fetch makes a mid-epoch resume reproduce the uninterrupted run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

RngState = dict[str, Any]


def _capture() -> RngState:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state().tolist(),
    }


def _restore(state: RngState) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


class AugmentationRng:
    """Runs transforms on a private RNG stream (single-process data loading: num_workers=0)."""

    def __init__(self, seed: int) -> None:
        outer = _capture()
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        self.state = _capture()
        _restore(outer)
        self.before_last_fetch = self.state

    def wrap(self, transform: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def run(batch: Any) -> Any:
            outer = _capture()
            self.before_last_fetch = self.state
            _restore(self.state)
            try:
                return transform(batch)
            finally:
                self.state = _capture()
                _restore(outer)

        return run

    def checkpoint(self, batch_prefetched: bool) -> RngState:
        """The state to resume from: before the prefetched batch when one is pending."""
        return self.before_last_fetch if batch_prefetched else self.state

    def resume(self, state: RngState) -> None:
        self.state = self.before_last_fetch = state
