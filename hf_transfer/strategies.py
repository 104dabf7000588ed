"""Fine-tuning strategies: plain functions that decide which parameters train.

A strategy takes the freshly built model, the adapter (for the head and LoRA targets) and the run
config, and returns the model to train. It never reaches into the model by fixed attribute names.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .adapters.base import TaskAdapter
from .config import RunConfig
from .errors import ModelError
from .registry import Registry

Strategy = Callable[[nn.Module, TaskAdapter, RunConfig], nn.Module]
STRATEGIES: Registry[Strategy] = Registry("strategy")

_NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


@STRATEGIES.register("full")
def full(model: nn.Module, adapter: TaskAdapter, config: RunConfig) -> nn.Module:
    """Every parameter trains, except what the adapter froze on purpose (e.g. wav2vec2's feature encoder)."""
    return model


@STRATEGIES.register("linear_probe")
def linear_probe(model: nn.Module, adapter: TaskAdapter, config: RunConfig) -> nn.Module:
    """Only the head trains; the frozen backbone's normalisation layers stay in eval mode (see set_train_mode)."""
    heads = adapter.head_modules(model)
    model.requires_grad_(False)
    for name in heads:
        model.get_submodule(name).requires_grad_(True)
    return model


@STRATEGIES.register("lora")
def lora(model: nn.Module, adapter: TaskAdapter, config: RunConfig) -> nn.Module:
    """peft LoRA on the adapter's default (or the configured) targets; the head is always saved and trained."""
    from peft import LoraConfig, get_peft_model

    heads = adapter.head_modules(model)
    targets: list[str] | str = config.lora.target_modules or adapter.lora_target_modules(model)
    if targets == ["all-linear"]:
        # peft's all-linear can wrap a classifier it does not recognise; our default excludes the head.
        targets = adapter.lora_target_modules(model)
    wrapped_heads = [t for t in targets if any(t == h or t.startswith(h + ".") for h in heads)]
    if wrapped_heads:
        raise ModelError(f"LoRA target_modules {wrapped_heads} are inside the head {heads}, which trains fully.")
    lora_config = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=targets,
        modules_to_save=heads,
        task_type=adapter.peft_task_type,
    )
    try:
        return get_peft_model(model, lora_config)
    except ValueError as err:
        if "not found in the base model" not in str(err) and "No modules were targeted" not in str(err):
            raise
        layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        raise ModelError(
            f"LoRA target_modules {targets} match no module of {type(model).__name__}. "
            f"Set lora.target_modules to names among its linear/conv layers, e.g. {layers[:6]}"
        ) from None


def set_train_mode(model: nn.Module) -> None:
    """model.train(), but normalisation layers whose parameters are all frozen stay in eval mode, so a
    frozen backbone keeps its running statistics (BatchNorm would otherwise update them)."""
    model.train()
    for module in model.modules():
        if isinstance(module, _NORM_LAYERS):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
