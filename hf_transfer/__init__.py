"""hf_transfer: transfer learning for the Hugging Face ecosystem, one engine for every modality.

The PyPI distribution is `hf-transfer-learning`; the import name `hf_transfer` is shared with the
unrelated download accelerator `hf-transfer`, so do not install both in one environment.

The public names below are imported on first use (`hf_transfer.train` loads torch and friends,
`import hf_transfer` alone does not), so the command line starts at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .core.lazy import keep_functions, lazy_getattr

if TYPE_CHECKING:  # the same names for type checkers and editors (at run time, __getattr__ below imports them)
    from .adapters import (  # noqa: F401
        ADAPTERS,
        AudioClassificationAdapter,
        ImageClassificationAdapter,
        TaskAdapter,
        TextClassificationAdapter,
    )
    from .config.schema import DataConfig, RunConfig, TrainConfig, load_config  # noqa: F401
    from .config.strategy_settings import LoraConfigSpec  # noqa: F401
    from .core.errors import ConfigError, DataError, HFTransferError, ModelError  # noqa: F401
    from .core.log import configure_logging  # noqa: F401
    from .engine.loop import Engine, FitResult  # noqa: F401
    from .inference import LoadedRun, evaluate_run, load_run  # noqa: F401
    from .methods.strategies import STRATEGIES  # noqa: F401
    from .rank import Candidate, RankResult, rank  # noqa: F401
    from .train import RunResult, train  # noqa: F401

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "ADAPTERS": "adapters",
    "AudioClassificationAdapter": "adapters",
    "ImageClassificationAdapter": "adapters",
    "TaskAdapter": "adapters",
    "TextClassificationAdapter": "adapters",
    "DataConfig": "config.schema",
    "RunConfig": "config.schema",
    "TrainConfig": "config.schema",
    "load_config": "config.schema",
    "Engine": "engine.loop",
    "FitResult": "engine.loop",
    "ConfigError": "core.errors",
    "DataError": "core.errors",
    "HFTransferError": "core.errors",
    "ModelError": "core.errors",
    "LoadedRun": "inference",
    "evaluate_run": "inference",
    "load_run": "inference",
    "configure_logging": "core.log",
    "Candidate": "rank",
    "RankResult": "rank",
    "rank": "rank",
    "STRATEGIES": "methods.strategies",
    "LoraConfigSpec": "config.strategy_settings",
    "RunResult": "train",
    "train": "train",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
keep_functions(__name__, ["train", "rank"])


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
