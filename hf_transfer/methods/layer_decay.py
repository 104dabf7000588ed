"""Layer-wise learning-rate decay: the head learns at the full rate, each layer below it at `decay` times
the rate of the layer above, the stem (embeddings) least.

timm's own `param_groups_layer_decay` sets an `lr_scale` that only timm's schedulers read. This engine's
schedules (LambdaLR, engine.lr_schedule) scale each parameter group's own starting `lr`, so the groups here
carry `lr * scale` directly. Which layer a parameter is in is the adapter's answer (`layer_ids`, see
adapters/layers.py).
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from ..adapters.layers import LayerIds

logger = logging.getLogger(__name__)


def param_groups(
    model: nn.Module, layers: LayerIds, lr: float, weight_decay: float, decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups of the trainable parameters, each at its layer's learning rate
    (`lr * decay ** (top - layer)`), no weight decay on biases and norm weights (as the engine's default)."""
    ids, top = layers
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer, no_decay = ids[name], param.ndim <= 1
        group = groups.setdefault(
            (layer, no_decay),
            {"params": [], "lr": lr * decay ** (top - layer), "weight_decay": 0.0 if no_decay else weight_decay},
        )
        group["params"].append(param)
    trained = sorted({layer for layer, _ in groups})
    shown = ", ".join(f"{_layer_name(layer, top)} {lr * decay ** (top - layer):.3g}" for layer in trained)
    logger.info("Layer-wise learning rates (decay %g, %d layers): %s", decay, top + 1, shown)
    return [groups[key] for key in sorted(groups)]


def _layer_name(layer: int, top: int) -> str:
    return "stem" if layer == 0 else "head" if layer == top else f"layer {layer}"
