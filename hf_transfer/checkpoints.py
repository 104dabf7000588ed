"""What makes a checkpoint safe to resume from: it holds data only, and it belongs to this run.

A checkpoint folder is data a user may have copied from anywhere. Accelerate's `load_state` unpickles
registered custom objects with full pickle (code can run) and silently skips random states it cannot
read; so before it runs, every file must be one this tool writes, and every pickle-format file must
load as plain tensors and numbers (`weights_only=True`). The run's identity (task, model, strategy,
data, labels) is recorded beside each checkpoint and must match the run that resumes from it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .errors import RunDirError

STATE_FILE = "trainer_state.json"
BEST_FILE = "best.safetensors"  # the run's best weights as of this checkpoint

# Files Accelerate's save_state writes for this engine (no custom objects are registered), and ours (each
# process's position in a training stream, streaming.py, is JSON too).
_SAFE_FORMATS = re.compile(
    r"(model(_\d+)?\.safetensors|stream_state_\d+\.json|" + re.escape(BEST_FILE) + "|" + re.escape(STATE_FILE) + ")"
)
_TORCH_PICKLES = re.compile(
    r"(optimizer(_\d+)?\.bin|sampler(_\d+)?\.bin|dl_state_dict(_\d+)?\.bin|scaler\.pt|"
    r"random_states_\d+\.pkl)"
)


def verify_checkpoint(path: Path) -> None:
    """Refuse, by file name, anything in `path` that is not a file this tool writes or that would need
    more than tensors and numbers to load."""
    from accelerate.utils import load  # accelerate's own loader: weights_only=True with its RNG-state types

    for file in sorted(path.rglob("*")):
        if file.is_dir():
            continue
        name = file.relative_to(path).as_posix()
        if _SAFE_FORMATS.fullmatch(name):
            continue
        if not _TORCH_PICKLES.fullmatch(name):
            raise RunDirError(
                f"Checkpoint {path} holds {name}, which this tool never writes (custom pickles can run code): "
                "refusing to resume from it. Remove the file if you know what it is, or start a new run."
            )
        try:
            load(str(file), map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # noqa: BLE001 - every unpickling failure means the same thing here
            raise RunDirError(
                f"Checkpoint file {file} does not load as plain tensors and numbers ({type(err).__name__}); "
                "it may have been tampered with: refusing to resume from it."
            ) from None


def checkpoint_identity(path: Path) -> dict[str, Any]:
    """The run identity a checkpoint records ({} when it records none or cannot be read)."""
    try:
        return json.loads((path / STATE_FILE).read_text()).get("identity") or {}
    except (OSError, ValueError):
        return {}


def identity_mismatch(saved: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """Both sides of every setting in which a checkpoint's run differs from this one, or None."""
    if saved is None:
        return "the checkpoint records no run identity (it was not written by this version of hf-transfer)"
    keys = sorted(set(saved) | set(current))
    differences = [
        f"{k}: {saved.get(k)!r} (checkpoint) vs {current.get(k)!r} (this run)"
        for k in keys
        if saved.get(k) != current.get(k)
    ]
    return "; ".join(differences) or None
