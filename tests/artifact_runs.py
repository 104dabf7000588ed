"""Finished tiny runs shared by test_artifacts / test_predict / test_hub (each trained once per session)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_image_overrides, write_color_images, write_tiny_vit

from hf_transfer import load_config, train

_RUNS: dict[str, Any] = {}
_DATA: dict[str, Path] = {}

TOKEN = "hf_NeverWriteThisTokenAnywhere1234567890"


def image_data(factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if "train" not in _DATA:
        root = factory.mktemp("artifact_data")
        _DATA["train"] = write_color_images(root / "train", per_class=8, seed=0)
        _DATA["validation"] = write_color_images(root / "validation", per_class=4, seed=1, modes=False)
    return _DATA["train"], _DATA["validation"]


def tiny_vit_folder(factory: pytest.TempPathFactory) -> Path:
    """A tiny transformers ViT saved as a pretrained folder, so a LoRA base is loadable by path."""
    if "vit" not in _DATA:
        folder = factory.mktemp("tiny-vit")
        write_tiny_vit(folder)
        _DATA["vit"] = folder
    return _DATA["vit"]


def run(name: str, factory: pytest.TempPathFactory, **extra: Any):
    """Train (once) the tiny image run `name` with the extra overrides; returns RunResult."""
    if name not in _RUNS:
        train_dir, val_dir = image_data(factory)
        values = {"train.epochs": 1, "train.batch_size": 6, "train.lr": 0.02, **extra}
        overrides = tiny_image_overrides(train_dir, val_dir, factory.mktemp(name) / "out", **values)
        _RUNS[name] = train(load_config(None, overrides))
    return _RUNS[name]


def timm_full(factory: pytest.TempPathFactory):
    # tensorboard on (the other runs have trackers off): a tracker changes nothing in the card.
    return run("timm_full", factory, model="test_vit", **{"train.log_with": "[tensorboard]", "train.epochs": 2})


def timm_lora(factory: pytest.TempPathFactory):
    return run("timm_lora", factory, model="test_vit", strategy="lora", **{"export.merge": True})


def vit_full(factory: pytest.TempPathFactory):
    return run("vit_full", factory, model=tiny_vit_folder(factory), pretrained=True, **{"train.lr": 0.01})


def vit_lora(factory: pytest.TempPathFactory):
    # pretrained: the base is the saved folder, which adapter_config.json then names.
    return run(
        "vit_lora", factory, model=tiny_vit_folder(factory), pretrained=True, strategy="lora", **{"export.merge": True}
    )


def validation_files() -> list[Path]:
    return sorted(_DATA["validation"].rglob("*.png"))
