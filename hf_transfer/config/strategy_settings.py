"""The strategies' names, the defaults `--help` states for them, and each strategy's own settings: the
sections `linear_probe:`, `lora:` and `lp_ft:` of RunConfig (schema.py).

Declared here, in the config layer, so that RunConfig is a plain dataclass that type checkers see and
config/ imports nothing of methods/: the strategies themselves (methods/strategies.py) register their
functions under these names with these settings classes. tests/test_core.py checks that the names and
defaults here are the registry's, so the two cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..core.errors import ConfigError
from ..core.fields import Range, check_ranges, setting

# The names of methods/strategies.py's STRATEGIES (sorted, as the registry lists them).
StrategyName = Literal["full", "linear_probe", "lora", "lp_ft"]
# Each strategy's default train.lr and whether it trains the backbone (the default of data.augment), as its
# registration says; --help states them.
DEFAULT_LR = {"full": 1e-4, "linear_probe": 1e-2, "lora": 1e-3, "lp_ft": 1e-4}
TRAINS_BACKBONE = {"full": True, "linear_probe": False, "lora": True, "lp_ft": True}

# The weight decays the linear probe's search tries by default (benchmarks/RESULTS.md, "Issue 17").
SEARCH_WEIGHT_DECAY = (0.01, 0.3, 1.0, 3.0, 10.0, 30.0)


@dataclass
class LinearProbeConfig:
    """The linear probe's settings; they apply to LP-FT's probe stage too."""

    cache_features: bool = setting(
        True,
        "Compute the frozen backbone's features once (cached on disk, keyed by model, weights, preprocessing "
        "and data) and train the head on them: many epochs in seconds. Needs data.augment off (the default).",
    )
    views: int | None = setting(
        None,
        "Cached features: views of each training example whose features are kept, one backbone pass each (paid "
        "once, cached); every epoch trains on one of them, drawn per example. Images: the evaluation view, its "
        "mirror image (when data.hflip > 0), then random crops of data.crop_scale; audio: the centred window, "
        "then random windows; text: only the evaluation view (no variation of a text surely keeps its label). "
        "Validation always uses the evaluation view. 1: the evaluation view alone. Default: the views measured "
        "to help: the evaluation view and, for images with data.hflip > 0, its mirror image (crops and audio "
        "windows only when asked for).",
        Range(1),
    )
    weight_decay: float | None = setting(
        None,
        "AdamW weight decay of the head on cached features (and of LP-FT's probe stage). Default: chosen by the "
        "search (linear_probe.search) and recorded here in the run's config.yaml; train.weight_decay when the "
        "search is off or the features are not cached.",
        Range(0),
    )
    search: bool = setting(
        True,
        "Cached features: choose the head's weight decay among linear_probe.search_weight_decay by stratified "
        "k-fold cross-validation on the training features only (never the validation set), each candidate "
        "trained with the run's recipe; then train on all training features with the choice (seconds).",
    )
    search_weight_decay: list[float] = setting(
        list(SEARCH_WEIGHT_DECAY),
        "The weight decays the search tries (AdamW's decoupled decay: with a probe's short schedule, values "
        "above 1 are what regularise). One value: no search, that value.",
        Range(0),
    )
    search_folds: int = setting(
        5,
        "Folds of the search's cross-validation (fewer when a class has fewer training examples; at least 2).",
        Range(2, 100),
    )

    def __post_init__(self) -> None:
        check_ranges(self, "linear_probe")
        if not self.search_weight_decay:
            raise ConfigError("linear_probe.search_weight_decay must list at least one weight decay, e.g. [0.01, 1]")


@dataclass
class LoraConfigSpec:
    r: int = setting(8, "LoRA rank.", Range(1))
    alpha: int = setting(16, "LoRA alpha (scaling = alpha / r).", Range(0, low_open=True))
    dropout: float = setting(0.0, "Dropout on the LoRA path.", Range(0, 1, high_open=True))
    target_modules: list[str] | None = setting(
        None, "Module names to adapt; default: the adapter's choice for the architecture."
    )

    def __post_init__(self) -> None:
        check_ranges(self, "lora")


@dataclass
class LpFtSettings:
    then: str = setting("full", "LP-FT's second stage, from the probed head: full | lora.")
    probe_epochs: int | None = setting(
        None,
        "Epochs of the first stage, the linear probe (cached features: seconds). Default (auto): chosen from the "
        "training set's size as train.epochs is (auto or not), logged and recorded in config.yaml.",
        Range(1),
        auto=True,
    )
    probe_lr: float | None = setting(
        None, "Learning rate of the probe stage; default: linear_probe's.", Range(0, low_open=True)
    )

    def __post_init__(self) -> None:
        if self.then not in ("full", "lora"):
            raise ConfigError(f"lp_ft.then must be full or lora, got {self.then!r}")
        check_ranges(self, "lp_ft")
