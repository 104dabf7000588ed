"""What a run leaves in output_dir: the model in its standard format, metrics.json, config.yaml, run_info.json.

Every file is written to a temporary name and moved into place (core/atomic.py; the model's files as one
staging folder), so a crash never leaves a half-written artifact beside a good one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ..adapters.base import ModelIO
from ..adapters.layers import is_peft_model
from ..config.schema import RunConfig
from ..core.atomic import write_json, write_text_atomic
from ..core.rundir import RunDir

if TYPE_CHECKING:
    from ..engine.loop import RunSetup


def save_model_artifact(
    model: nn.Module,
    models: ModelIO,
    labels: list[str],
    output_dir: RunDir | Path,
    base_model: str | None = None,
    merge: bool = False,
) -> list[str]:
    """The trained model in the format its standard loader opens: a LoRA run's output_dir is the
    peft adapter folder (adapter weights + saved head + the preprocessing files, adapter_config.json
    naming `base_model`, a portable name: see card.portable_base), plus with `merge` a merged plain model
    in output_dir/merged/; otherwise the family's full format."""
    with RunDir.of(output_dir).stage_model() as staging:
        if is_peft_model(model):
            model.save_pretrained(staging, safe_serialization=True)
            models.save_preprocessor(staging)
            if base_model is not None:
                _set_base_model(staging, base_model)
            if merge:
                models.save_model(merged_copy(model), staging / RunDir.MERGED, labels)
        else:
            models.save_model(model, staging, labels)
        written = sorted(item.name for item in staging.iterdir())
    return written


def merged_copy(model: nn.Module) -> nn.Module:
    """The LoRA weights folded into a copy of the base (the trained model itself stays a PeftModel)."""
    return copy.deepcopy(model).merge_and_unload()


def _set_base_model(adapter_dir: Path, base_model: str) -> None:
    # peft records `model.name_or_path`: empty for timm models, this machine's path for a local folder.
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_model
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_run_files(
    config: RunConfig,
    labels: list[str],
    metrics: dict[str, Any],
    output_dir: RunDir | Path,
    artifacts: list[str],
    setup: RunSetup | None = None,
) -> None:
    """metrics.json, config.yaml, and last run_info.json, which marks the folder as a finished run, lists
    the model files (`artifacts`) that belong to it and records the `setup` it trained with (processes,
    mixed precision, batch per device, accumulation, effective batch)."""
    run = RunDir.of(output_dir)
    write_json(run.metrics, metrics)
    write_text_atomic(run.config, config.to_yaml())
    info = {"task": config.task, "labels": list(labels), "strategy": config.strategy, "model": config.model}
    if setup is not None:
        info["setup"] = dataclasses.asdict(setup)
    write_json(run.run_info, {**info, "artifacts": artifacts})
