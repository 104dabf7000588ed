"""Shared fixtures: everything offline, tiny, and written under pytest's tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ACCELERATE_USE_CPU", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(tmp_path_factory.getbasetemp() / "hf_transfer_cache"))


def write_color_images(root: Path, per_class: int = 16, size: int = 24, seed: int = 0, modes: bool = True) -> Path:
    """A learnable toy set: the class is the dominant colour channel. Some files are grayscale,
    RGBA or palette images, so mode conversion is exercised too."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(["red", "green", "blue"]):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
            pixels[..., c] = rng.integers(160, 255, size=(size, size), dtype=np.uint8)
            image = Image.fromarray(pixels)
            if modes and i == 0:
                image = image.convert("RGBA")
            elif modes and i == 1:
                image = image.convert("P")
            image.save(folder / f"{i:03d}.png")
    if modes:  # one grayscale image: converted to RGB (its class is not learnable, that's fine)
        Image.fromarray(rng.integers(0, 255, size=(size, size), dtype=np.uint8), mode="L").save(
            root / "red" / "gray.png"
        )
    return root


@pytest.fixture
def color_data(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_color_images(tmp_path / "data" / "train", per_class=16, seed=0),
        write_color_images(tmp_path / "data" / "validation", per_class=6, seed=1, modes=False),
    )


def tiny_image_overrides(train: Path, validation: Path, output_dir: Path, **extra: object) -> list[str]:
    values: dict[str, object] = {
        "task": "image-classification",
        "strategy": "full",  # what these runs test (the default is linear_probe)
        "model": "test_efficientnet",
        "pretrained": False,
        "data.train": str(train),
        "data.validation": str(validation),
        "data.image_size": 32,
        "data.crop_scale": "[1.0, 1.0]",
        "data.hflip": 0,
        "train.epochs": 3,
        "train.batch_size": 8,
        "train.lr": 0.01,
        "train.log_with": "[]",
        "train.progress_bar": False,
        "output_dir": str(output_dir),
    }
    values.update(extra)
    return as_overrides(values)


def as_overrides(values: dict[str, object]) -> list[str]:
    """{"train.epochs": 3, "pretrained": False} -> ["train.epochs=3", "pretrained=false"]."""
    return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()]


def initial_model(config, labels):
    """The model train() starts from: same seed, same build, same strategy."""
    from accelerate.utils import set_seed

    from hf_transfer import ADAPTERS, STRATEGIES

    set_seed(config.train.seed)
    adapter = ADAPTERS.get(config.task)(config)
    return STRATEGIES.get(config.strategy)(adapter.models.build_model(labels), adapter.models, config)


def changed_tensors(config, result, parameters_only: bool = False) -> set[str]:
    """Names of the tensors that training changed, against the run's rebuilt starting point."""
    start, end = initial_model(config, result.labels), result.model
    before = dict(start.named_parameters()) if parameters_only else start.state_dict()
    after = dict(end.named_parameters()) if parameters_only else end.state_dict()
    assert before.keys() == after.keys()
    return {k for k in before if not torch.equal(before[k], after[k])}


def write_tiny_vit(folder: Path):
    """A tiny transformers ViT (32 px, 2 layers) and its processor saved as a pretrained folder."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        num_labels=2,
    )
    model = ViTForImageClassification(config)
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return model


def failure_lines(stderr: str, limit: int = 3000) -> str:
    """What to show when a launched process failed: each rank's own error lines first (the launcher's
    summary at the end of stderr only says that a rank died), then the tail."""
    errors = [line for line in stderr.splitlines() if "Error" in line and not line.lstrip().startswith("File ")]
    return "\n".join(errors)[-limit:] + "\n---\n" + stderr[-limit:]
