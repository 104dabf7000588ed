"""Fine-tuning strategies: which parameters train, and the settings and defaults that go with that choice.

A strategy is registered once, with everything that depends on it: the function that takes the
freshly built model, the adapter's ModelIO (`adapter.models`: the head and LoRA targets) and the run
config and returns the model to train; a one-line description (for --help, the log and the card); its
`Defaults` (learning rate, normalisation statistics); whether it trains the backbone (which decides the default
augmentation: a frozen backbone trains on the deterministic evaluation view, so its features can be
cached); and, if it has any, its
settings: a dataclass that is the run config's section named after the strategy (`lora:` in YAML,
`lora.r=16` as an override, `config.lora` in code, its keys in `--help`).

The settings dataclasses live in config/strategy_settings.py, as explicit sections of RunConfig (so
type checkers see `config.lora.r`), with the strategy names and defaults that `--help` shows; config/
imports nothing of this layer. A new strategy is its function and `@register_strategy(name, ...,
settings=ItsSettings)` here, plus its name, defaults and section there (tests/test_core.py checks that
the two agree). (lp_ft, for instance: `LpFtSettings` with its stage lengths, read as `config.lp_ft`.)
A strategy made of stages of others (LP-FT) has no function of its own: its `plan` turns the config into
its `Stage` list, data that train.py runs one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..config.strategy_settings import LinearProbeConfig, LoraConfigSpec, LpFtSettings
from ..core.errors import ModelError
from ..core.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from ..adapters.base import ModelIO
    from ..config.schema import RunConfig, TrainConfig

# No torch at import time: config.py (and so `hf-transfer --help`) reads this registry; the strategies
# import what they need when they run.
Apply = Callable[["nn.Module", "ModelIO", "RunConfig"], "nn.Module"]


@dataclass(frozen=True)
class Defaults:
    """What a strategy chooses for the settings a config leaves unset (data.augment follows `trains_backbone`)."""

    lr: float  # train.lr: AdamW's peak learning rate
    # train.freeze_norm_statistics: keep a pretrained backbone's normalisation statistics as they were.
    freeze_norm_statistics: bool = False


@dataclass(frozen=True)
class Strategy:
    """Which parameters train: one stage that `apply` sets up on the model, or stages of other strategies
    (`plan`, LP-FT), never both."""

    name: str
    description: str
    defaults: Defaults
    trains_backbone: bool
    settings: type | None = None  # dataclass of this strategy's settings: RunConfig's section `name`
    apply: Apply | None = None  # one stage: the model as this strategy trains it
    plan: Callable[[RunConfig], list[Stage]] | None = None  # stages of other strategies, as data

    def __post_init__(self) -> None:
        if (self.apply is None) == (self.plan is None):
            raise ValueError(f"strategy {self.name!r}: give either apply (one stage) or plan (stages), not both")

    @property
    def default_lr(self) -> float:
        return self.defaults.lr

    def __call__(self, model: nn.Module, models: ModelIO, config: RunConfig) -> nn.Module:
        if self.apply is None:
            raise ValueError(f"strategy {self.name!r} runs in stages: apply each of stages(config) in turn")
        return self.apply(model, models, config)


@dataclass(frozen=True)
class Stage:
    """One training of a run: a strategy (which parameters train), its optimisation settings and
    whether its examples are augmented. Most runs are one stage; LP-FT is a probe stage, then a
    fine-tuning stage from the probed head with its optimizer and schedule rebuilt."""

    name: str
    strategy: Strategy
    train: TrainConfig
    augment: bool


STRATEGIES: Registry[Strategy] = Registry("strategy")
# What `hf-transfer compare` runs unless told otherwise: every registered strategy, cheapest first.
COMPARED_BY_DEFAULT = ("linear_probe", "lora", "full", "lp_ft")


def register_strategy(
    name: str, description: str, defaults: Defaults, trains_backbone: bool, settings: type | None = None
) -> Callable[[Apply], Apply]:
    """Register the decorated function as a one-stage strategy (a strategy of stages: `STRATEGIES.register`
    of a `Strategy` with its `plan`)."""

    def decorator(apply: Apply) -> Apply:
        STRATEGIES.register(name)(Strategy(name, description, defaults, trains_backbone, settings, apply=apply))
        return apply

    return decorator


def stages(config: RunConfig) -> list[Stage]:
    """The stages of a run, in order (config already resolved: train.lr and data.augment set)."""
    strategy = STRATEGIES.get(config.strategy)
    if strategy.plan is not None:
        return strategy.plan(config)
    return [Stage(config.strategy, strategy, config.train, augments(config))]


# Full fine-tuning keeps the pretrained normalisation statistics by default: a few-shot set trains in small
# batches (train.batch_size auto: 1/8 of the set), whose statistics are noise. On digits-10 (100 scans, batch
# 32, lr 1e-3, 10 epochs) this took full fine-tuning from 0.764 to 0.950 (benchmarks/RESULTS.md, "Issue 17:
# head init, probe views, probe regularisation").
@register_strategy(
    "full",
    "full fine-tuning: every parameter trains",
    Defaults(lr=1e-4, freeze_norm_statistics=True),
    trains_backbone=True,
)
def full(model: nn.Module, models: ModelIO, config: RunConfig) -> nn.Module:
    """Every parameter trains, except what the adapter froze on purpose (e.g. wav2vec2's feature encoder)."""
    return model


@register_strategy(
    "linear_probe",
    "linear probe: the backbone is frozen, only the new head trains (on cached features where possible)",
    Defaults(lr=1e-2),
    trains_backbone=False,
    settings=LinearProbeConfig,
)
def linear_probe(model: nn.Module, models: ModelIO, config: RunConfig) -> nn.Module:
    """Only the head trains; the frozen backbone's normalisation layers stay in eval mode (engine/train_mode.py)."""
    heads = models.head_modules(model)
    model.requires_grad_(False)
    for name in heads:
        model.get_submodule(name).requires_grad_(True)
    return model


@register_strategy(
    "lora",
    "LoRA (peft): low-rank updates on the adapter's targets for the architecture, the new head trains fully",
    Defaults(lr=1e-3),
    trains_backbone=True,
    settings=LoraConfigSpec,
)
def lora(model: nn.Module, models: ModelIO, config: RunConfig) -> nn.Module:
    """peft LoRA on the adapter's default (or the configured) targets; the head is always saved and trained."""
    from peft import LoraConfig, get_peft_model

    heads = models.head_modules(model)
    targets: list[str] = config.lora.target_modules or models.lora_target_modules(model)
    if targets == ["all-linear"]:
        # peft's all-linear can wrap a classifier it does not recognise; our default excludes the head.
        targets = models.lora_target_modules(model)
    wrapped_heads = [t for t in targets if any(t == h or t.startswith(h + ".") for h in heads)]
    if wrapped_heads:
        raise ModelError(f"LoRA target_modules {wrapped_heads} are inside the head {heads}, which trains fully.")
    if not targets:
        raise ModelError(
            f"{type(model).__name__} has no layer LoRA adapts by default (linear or 1x1 conv outside the head): "
            "set lora.target_modules."
        )
    lora_config = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=targets,
        modules_to_save=heads,
        task_type=models.peft_task_type,
    )
    try:
        return get_peft_model(model, lora_config)
    except ValueError as err:
        if "not found in the base model" not in str(err) and "No modules were targeted" not in str(err):
            raise
        from torch import nn

        layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        raise ModelError(
            f"LoRA target_modules {targets} match no module of {type(model).__name__}. "
            f"Set lora.target_modules to names among its linear/conv layers, e.g. {layers[:6]}"
        ) from None


def _lp_ft_plan(config: RunConfig) -> list[Stage]:
    """Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution"
    (ICLR 2022): fit the head on the frozen backbone first, so that fine-tuning starts from a good head
    instead of pushing a random one's gradients through the backbone."""
    probe, then = STRATEGIES.get("linear_probe"), STRATEGIES.get(config.lp_ft.then)
    settings = config.lp_ft
    probe_train = replace(
        config.train, epochs=settings.probe_epochs, max_steps=None, lr=settings.probe_lr or probe.default_lr
    )
    return [Stage("probe", probe, probe_train, augment=False), Stage("fine-tune", then, config.train, augments(config))]


STRATEGIES.register("lp_ft")(
    Strategy(
        "lp_ft",
        "LP-FT: a linear probe first (cached features), then fine-tuning (lp_ft.then: full or lora) from that head",
        Defaults(
            lr=1e-4,  # the fine-tuning stage's; the probe stage has lp_ft.probe_lr
            # The probe's head was fitted on features normalised with the pretrained statistics. Updated from the
            # fine-tuning stage's (few, augmented) batches, they shift every feature at once: at a learning rate of
            # 1e-9, so with the weights unchanged, the probe's 0.83 fell to 0.73, 0.59, 0.44 in three epochs
            # (benchmarks/RESULTS.md, "Issue 17: head init, probe views, probe regularisation").
            freeze_norm_statistics=True,
        ),
        trains_backbone=True,
        settings=LpFtSettings,
        plan=_lp_ft_plan,
    )
)


def _final(config: RunConfig) -> Strategy:
    """The strategy whose defaults train.lr and data.augment follow: LP-FT's second stage, or the strategy."""
    strategy = STRATEGIES.get(config.strategy)
    return STRATEGIES.get(config.lp_ft.then) if strategy.plan is not None else strategy


def learning_rate(config: RunConfig) -> float:
    """train.lr, or the strategy's default when it is unset (for LP-FT: its fine-tuning stage's)."""
    return config.train.lr if config.train.lr is not None else _final(config).default_lr


def freezes_norm_statistics(config: RunConfig) -> bool:
    """train.freeze_norm_statistics, or by default the strategy's choice (full, LP-FT: on) for a pretrained
    backbone; a randomly initialised one (pretrained: false) has no statistics worth keeping."""
    if config.train.freeze_norm_statistics is not None:
        return config.train.freeze_norm_statistics
    return config.pretrained and STRATEGIES.get(config.strategy).defaults.freeze_norm_statistics


def augments(config: RunConfig) -> bool:
    """data.augment, or by default: augment when the backbone trains, never for a frozen one."""
    if config.data.augment is not None:
        return config.data.augment
    return _final(config).trains_backbone


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
