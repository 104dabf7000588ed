"""Which layer each parameter is in, the adapters' answer to layer-wise learning rates (methods/layer_decay.py):
layer 0 is the stem (embeddings), the head is the top. timm models are numbered by their own group matcher
(image_timm.py); other backbones by `numbered_layer_ids`, which reads the module tree the same way for any
transformers model. Here, in the adapters' layer, because every adapter answers `layer_ids` with it.
"""

from __future__ import annotations

import sys

from torch import nn

LayerIds = tuple[dict[str, int], int]  # parameter name -> layer (0 = stem ... top = head), and top


def is_peft_model(model: nn.Module) -> bool:
    """Whether `model` is a peft wrapper (a LoRA run's). peft is not imported for the question: a model can be
    one only once peft is imported, and importing it costs a run that never uses it about a second."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def unwrapped(model: nn.Module) -> nn.Module:
    """The model under a peft wrapper (LoRA layers and the head's trainable copy included), else itself."""
    return model.get_base_model() if is_peft_model(model) else model


def by_name(model: nn.Module, base: nn.Module, ids: dict[str, int]) -> dict[str, int]:
    """`ids` keyed by `base`'s parameter names, re-keyed by `model`'s (a PeftModel prefixes the names)."""
    layer_of = {id(param): ids[name] for name, param in base.named_parameters()}
    return {name: layer_of[id(param)] for name, param in model.named_parameters()}


def numbered_layer_ids(model: nn.Module, heads: list[str]) -> LayerIds:
    """Layers from the module tree: the blocks are the entries of the numbered container (children named
    0, 1, ...) holding most of the parameters outside the head (BERT's `encoder.layer`, wav2vec2's
    `encoder.layers`, ViT's `encoder.layer`, a CNN's stages and their blocks). 0 is everything before
    them, 1..n the blocks in order (what follows them, a final norm or pooler, goes with the last), n + 1
    the head: timm's numbering."""
    base = unwrapped(model)
    container = _block_container(base, heads)
    blocks: dict[str, int] = {}
    ids: dict[str, int] = {}
    for name, _ in base.named_parameters():
        key = _block_key(name, container)
        if _inside(name, heads):
            ids[name] = -2
        elif key is not None:
            ids[name] = blocks.setdefault(key, len(blocks) + 1)
        else:
            ids[name] = -1 if blocks else 0
    n = len(blocks)
    ids = {name: {-2: n + 1, -1: n}.get(layer, layer) for name, layer in ids.items()}
    return by_name(model, base, ids), n + 1


def _block_container(model: nn.Module, heads: list[str]) -> str | None:
    """The numbered container outside the head with the most parameters (the outermost on a tie)."""
    best, best_count = None, 0
    for name, module in model.named_modules():
        children = [child for child, _ in module.named_children()]
        if not name or len(children) < 2 or not all(child.isdigit() for child in children) or _inside(name, heads):
            continue
        count = sum(p.numel() for p in module.parameters())
        if count > best_count:
            best, best_count = name, count
    return best


def _block_key(name: str, container: str | None) -> str | None:
    """`<container>.<i>[.<j>...]` for a parameter in the container's blocks (nested numbered levels are
    blocks of their own: a CNN's blocks inside its stages), else None."""
    if container is None or not name.startswith(container + "."):
        return None
    numbered = []
    for part in name[len(container) + 1 :].split(".")[:-1]:
        if not part.isdigit():
            break
        numbered.append(part)
    return ".".join([container, *numbered]) if numbered else None


def _inside(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)
