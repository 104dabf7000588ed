"""hf_transfer: transfer learning for the Hugging Face ecosystem, one engine for every modality.

The PyPI distribution is `hf-transfer-learning`; the import name `hf_transfer` is shared with the
unrelated download accelerator `hf-transfer`, so do not install both in one environment.
"""

from .adapters import (
    ADAPTERS,
    AudioClassificationAdapter,
    ImageClassificationAdapter,
    TaskAdapter,
    TextClassificationAdapter,
)
from .config import DataConfig, RunConfig, TrainConfig, load_config
from .engine import Engine, FitResult
from .errors import ConfigError, DataError, HFTransferError, ModelError
from .log import configure_logging
from .rank import Candidate, RankResult, rank
from .strategies import STRATEGIES, LoraConfigSpec
from .train import RunResult, train

__version__ = "0.1.0"

__all__ = [
    "ADAPTERS",
    "STRATEGIES",
    "AudioClassificationAdapter",
    "Candidate",
    "ConfigError",
    "DataConfig",
    "DataError",
    "Engine",
    "FitResult",
    "HFTransferError",
    "ImageClassificationAdapter",
    "LoraConfigSpec",
    "ModelError",
    "RankResult",
    "RunConfig",
    "RunResult",
    "TaskAdapter",
    "TextClassificationAdapter",
    "TrainConfig",
    "configure_logging",
    "load_config",
    "rank",
    "train",
]
