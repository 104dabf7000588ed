"""What makes a checkpoint safe to resume from: it holds data only, and it belongs to this run.

A checkpoint folder is data a user may have copied from anywhere. Accelerate's `load_state` unpickles
registered custom objects with full pickle (code can run) and silently skips random states it cannot
read; so before it runs, every file must be one this tool writes, and every pickle-format file must
load as plain tensors and numbers (`weights_only=True`). A sharded FSDP checkpoint (torch's
distributed checkpoint format) reads its `.metadata` with pickle and its non-tensor entries with full
`torch.load`: the metadata is read here first with only that format's own classes allowed, and each
non-tensor entry must load with `weights_only=True`. The run's identity (task, model, strategy, data,
labels) is recorded beside each checkpoint and must match the run that resumes from it.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..catalog.weights import safetensors_problem
from ..core.errors import RunDirError
from ..core.rundir import RunDir

STATE_FILE = RunDir.CHECKPOINT_STATE
BEST_FILE = RunDir.CHECKPOINT_BEST  # the run's best weights as of this checkpoint

LOADER_FILES = re.escape(RunDir.CHECKPOINT_LOADER.format(rank="RANK")).replace("RANK", r"\d+")
# Files Accelerate's save_state writes for this engine (no custom objects are registered), and ours (each
# process's training-loader position, data/loaders.py, is JSON too).
_SAFE_FORMATS = re.compile(
    r"(model(_\d+)?\.safetensors|" + LOADER_FILES + "|" + re.escape(BEST_FILE) + "|" + re.escape(STATE_FILE) + ")"
)
_TORCH_PICKLES = re.compile(
    r"(optimizer(_\d+)?\.bin|sampler(_\d+)?\.bin|dl_state_dict(_\d+)?\.bin|scaler\.pt|"
    r"random_states_\d+\.pkl|pytorch_model_fsdp(_\d+)?\.bin)"  # the last: FSDP with FULL_STATE_DICT
)
# FSDP with SHARDED_STATE_DICT: one distributed-checkpoint folder for the model, one for the optimizer.
_SHARDED = re.compile(r"(?P<folder>(pytorch_model_fsdp|optimizer)_\d+)/(\.metadata|__\d+_\d+\.distcp)")
_SHARD_FILE = re.compile(r"__\d+_\d+\.distcp")
# Everything a distributed checkpoint's .metadata pickle refers to (torch 2.4 - 2.14).
_METADATA_GLOBALS = {
    *(
        ("torch.distributed.checkpoint.metadata", name)
        for name in (
            "Metadata",
            "MetadataIndex",
            "StorageMeta",
            "TensorStorageMetadata",
            "BytesStorageMetadata",
            "ChunkStorageMetadata",
            "TensorProperties",
            "_MEM_FORMAT_ENCODING",
        )
    ),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    *((module, name) for module in ("pathlib", "pathlib._local") for name in ("PosixPath", "WindowsPath")),
}


def verify_checkpoint(path: Path) -> None:
    """Refuse, by file name, anything in `path` that is not a file this tool writes or that would need
    more than tensors and numbers to load."""
    from accelerate.utils import load  # accelerate's own loader: weights_only=True with its RNG-state types

    sharded = set()
    for file in sorted(path.rglob("*")):
        if file.is_dir():
            continue
        name = file.relative_to(path).as_posix()
        if _SAFE_FORMATS.fullmatch(name):
            problem = safetensors_problem(file) if file.suffix == ".safetensors" else None
            if name == STATE_FILE:
                read_state(path)  # names the file when it is not the JSON this tool writes
            if problem:
                raise RunDirError(f"Checkpoint file {problem}resume from another checkpoint, or start a new run.")
            continue
        match = _SHARDED.fullmatch(name)
        if match:
            sharded.add(path / match["folder"])
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
    for folder in sorted(sharded):
        _verify_sharded(folder)


def _verify_sharded(folder: Path) -> None:
    """A distributed-checkpoint folder: its metadata refers only to the format's own classes, every entry it
    lists lies in one of the folder's shard files, and every non-tensor entry is plain data. (Tensor entries
    torch itself loads with `weights_only=True`.)"""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    try:
        with open(folder / ".metadata", "rb") as file:
            metadata = _MetadataUnpickler(file).load()
        for index, info in metadata.storage_data.items():
            if not _SHARD_FILE.fullmatch(info.relative_path) or info.transform_descriptors:
                raise ValueError(f"entry {index.fqn} is stored as {info.relative_path!r} {info.transform_descriptors}")
            if isinstance(metadata.state_dict_metadata.get(index.fqn), BytesStorageMetadata):
                with open(folder / info.relative_path, "rb") as file:
                    file.seek(info.offset)
                    torch.load(io.BytesIO(file.read(info.length)), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure to read it as plain data means the same thing here
        raise RunDirError(
            f"Sharded checkpoint {folder} does not read as plain tensors and numbers ({type(err).__name__}: "
            f"{str(err)[:200]}); it may have been tampered with: refusing to resume from it."
        ) from None


class _MetadataUnpickler(pickle.Unpickler):
    """pickle restricted to what a distributed checkpoint's metadata refers to: its own dataclasses, torch
    sizes, dtypes and layouts, and paths."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _METADATA_GLOBALS or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a distributed checkpoint's metadata")


def read_state(path: Path) -> dict[str, Any]:
    """The training state a checkpoint folder records (trainer_state.json), naming the file when it cannot be
    read as the JSON object this tool writes (json's own error names no file)."""
    file = path / STATE_FILE
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunDirError(
            f"Checkpoint file {file} cannot be read as JSON ({type(err).__name__}: {err}): it was cut short or "
            "edited. Resume from another checkpoint (train.resume_from_checkpoint=<its folder>), or start a new run."
        ) from None
    if not isinstance(state, dict):
        raise RunDirError(f"Checkpoint file {file} holds no training state (a JSON object): resume from another one.")
    return state


def checkpoint_identity(path: Path) -> dict[str, Any]:
    """The run identity a checkpoint records ({} when it records none or cannot be read)."""
    try:
        return read_state(path).get("identity") or {}
    except RunDirError:
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
