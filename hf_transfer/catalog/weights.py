"""Reading local weight files safely and fitting them to a timm architecture."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from ..core.errors import HFTransferError, ModelError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """safetensors, or a torch pickle read with weights_only=True (never arbitrary code)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"Weights file {str(path)!r} does not exist.")
    if path.suffix == ".safetensors":
        return read_safetensors(path, ModelError, "Weights file", "export or download it again, or give another file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors come in many types
        raise ModelError(f"Cannot read weights file {str(path)!r} as a tensor state dict: {err}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"Weights file {str(path)!r} does not hold a state dict of tensors.")
    return state


def read_safetensors(path: str | Path, error: type[HFTransferError], what: str, fix: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; one that is not readable as such (cut short, another format, a bad
    header) raises `error` naming the file (`what` it is) and `fix`: safetensors' own error names no file."""
    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise error(f"{what} {_unreadable(path, err)}{fix}") from None


def safetensors_problem(path: str | Path) -> str | None:
    """Why a safetensors file cannot be read (its header, and that the header covers the file), or None;
    reads the header only."""
    try:
        with safe_open(str(path), framework="pt") as file:
            file.keys()
    except (SafetensorError, OSError) as err:
        return _unreadable(path, err)
    return None


def _unreadable(path: str | Path, err: Exception) -> str:
    return f"{str(path)!r} is not a readable safetensors file ({err}; cut short, or not safetensors): "


def _is_efficientnet_pytorch_layout(state: dict[str, torch.Tensor]) -> bool:
    return "_conv_stem.weight" in state and any(k.startswith("_blocks.") for k in state)


def _map_by_order(state: dict[str, torch.Tensor], model: nn.Module, head: list[str]) -> dict[str, torch.Tensor]:
    """efficientnet-pytorch stores the same tensors as timm's `tf_efficientnet_*` in the same order.
    Map them one-to-one, checking every shape; the source classifier is dropped when the head is new."""
    target = model.state_dict()
    if len(state) != len(target):
        raise ModelError(
            f"Weights hold {len(state)} tensors but {type(model).__name__} has {len(target)}: "
            "not the same architecture."
        )
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(state.items(), target.items(), strict=True):
        in_head = any(dst_key.startswith(h + ".") for h in head)
        if tensor.shape != ref.shape:
            if in_head:
                continue
            raise ModelError(
                f"Weights tensor {src_key!r} {tuple(tensor.shape)} does not fit {dst_key!r} {tuple(ref.shape)}: "
                "not the same architecture."
            )
        mapped[dst_key] = tensor
    return mapped


def load_timm_weights(model: nn.Module, path: str | Path, head: list[str]) -> None:
    """Load a local weights file into a timm model whose head may be sized for new labels."""
    state = read_state_dict(path)
    if _is_efficientnet_pytorch_layout(state):
        state = _map_by_order(state, model, head)
    target = model.state_dict()
    kept = {}
    for key, tensor in state.items():
        if key in target and tensor.shape != target[key].shape and any(key.startswith(h + ".") for h in head):
            continue  # a classifier for another label set: the new head stays freshly initialised
        kept[key] = tensor
    try:
        result = model.load_state_dict(kept, strict=False)
    except RuntimeError as err:
        raise ModelError(f"Weights file {str(path)!r} does not fit {type(model).__name__}: {err}") from None
    missing = [k for k in result.missing_keys if not any(k.startswith(h + ".") for h in head)]
    if missing or result.unexpected_keys:
        raise ModelError(
            f"Weights file {str(path)!r} does not match the architecture: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]})."
        )
