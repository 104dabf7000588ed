"""What a run leaves in output_dir: the model in its standard format, metrics.json, config.yaml, run_info.json.

Every file is written to a temporary name and moved into place, so a crash never leaves a
half-written artifact beside a good one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from .adapters.base import RUN_INFO, TaskAdapter
from .config import RunConfig, dump_config


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def save_model_artifact(model: nn.Module, adapter: TaskAdapter, labels: list[str], output_dir: Path) -> None:
    """The trained model in the format its standard loader opens: a LoRA run's output_dir is the
    peft adapter folder (adapter weights + saved head); otherwise the family's full format."""
    from peft import PeftModel

    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".model-") as tmp:
        staging = Path(tmp)
        if isinstance(model, PeftModel):
            model.save_pretrained(staging, safe_serialization=True)
        else:
            adapter.save_model(model, staging, labels)
        for item in staging.iterdir():
            target = output_dir / item.name
            if target.is_dir() and item.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)


def save_run_files(config: RunConfig, labels: list[str], metrics: dict[str, Any], output_dir: Path) -> None:
    write_json(output_dir / "metrics.json", metrics)
    write_text_atomic(output_dir / "config.yaml", dump_config(config))
    write_json(
        output_dir / RUN_INFO,
        {"task": config.task, "labels": list(labels), "strategy": config.strategy, "model": config.model},
    )
