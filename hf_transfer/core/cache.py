"""Where hf_transfer keeps what it computes once: generated samples, decoded inputs, backbone features.

Everything lives under one root, `$HF_TRANSFER_CACHE` if set, else `hf_transfer/` inside the Hugging
Face cache (`$HF_HOME`, by default ~/.cache/huggingface). Entries are named by a fingerprint of all
they depend on, so a change to the data, the weights or the preprocessing is a new entry, never a
stale hit; deleting the folder is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch


def cache_root() -> Path:
    if os.environ.get("HF_TRANSFER_CACHE"):
        return Path(os.environ["HF_TRANSFER_CACHE"]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hf_transfer"


def cache_dir(kind: str, override: str | None = None) -> Path:
    """`<root>/<kind>` (inputs, features, samples, models), or `<override>/<kind>` when the config sets one."""
    return (Path(override).expanduser() if override else cache_root()) / kind


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (anything else by its str())."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def tensors_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of tensors' names, shapes, dtypes and bytes: identifies weights whatever file they came from."""
    digest = hashlib.blake2b(digest_size=12)
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensors[name].shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().data)
    return digest.hexdigest()
