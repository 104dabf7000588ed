"""Train mode for a model whose parts are frozen: what the loop calls where it would call `model.train()`.
In the engine's layer because the loop calls it every epoch; the strategies (methods/) freeze the parameters.
"""

from __future__ import annotations

from torch import nn


def set_train_mode(model: nn.Module, freeze_norm_statistics: bool = False) -> None:
    """model.train(), except that every part whose parameters are all frozen runs in eval mode: a frozen
    backbone keeps its BatchNorm statistics and computes its features without dropout, exactly as the
    cached-feature probe computes them once. (Parameterless layers, such as a head's dropout, follow
    their parent.) With `freeze_norm_statistics`, every layer that keeps running statistics (BatchNorm)
    runs in eval mode too: it normalises with the statistics it has and does not update them, while its
    scale and shift still train (train.freeze_norm_statistics)."""
    model.train()
    _freeze_modes(model)
    if freeze_norm_statistics:
        for module in model.modules():
            if getattr(module, "track_running_stats", False) and getattr(module, "running_mean", None) is not None:
                module.eval()


def _freeze_modes(module: nn.Module) -> bool:
    """Put frozen subtrees in eval mode; returns whether `module`'s subtree has a trainable parameter."""
    trainable = any(p.requires_grad for p in module.parameters(recurse=False))
    frozen_children = []
    for child in module.children():
        if _freeze_modes(child):
            trainable = True
        elif any(True for _ in child.parameters()):
            frozen_children.append(child)
    if trainable:
        for child in frozen_children:
            child.eval()
    return trainable
