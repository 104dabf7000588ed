"""Image classification: timm models (registry names, hf-hub: ids, local folders, local weights)
and transformers image classifiers (ViT, ResNet, ConvNeXt, ... via AutoModelForImageClassification)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import timm
import timm.data
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import Image, UnidentifiedImageError
from torch import nn
from torchvision import transforms as T

from ..errors import ConfigError, DataError, ModelError, raise_if_offline_cache_miss
from ..weights import load_timm_weights
from .base import ADAPTERS, TaskAdapter, hf_head_modules

MAX_IMAGE_PIXELS_ENV = "HF_TRANSFER_MAX_IMAGE_PIXELS"


def _apply_pixel_limit() -> None:
    """Pillow's decompression-bomb limit (it refuses images over twice MAX_IMAGE_PIXELS) from the
    environment: an environment variable reaches every process that decodes (DataLoader workers,
    `accelerate launch`, predict/evaluate on a finished run), where a run setting would not."""
    raw = os.environ.get(MAX_IMAGE_PIXELS_ENV)
    if raw is None:
        return
    if raw.strip().lower() == "none":
        Image.MAX_IMAGE_PIXELS = None
        return
    try:
        Image.MAX_IMAGE_PIXELS = int(raw)
    except ValueError:
        raise ConfigError(
            f"{MAX_IMAGE_PIXELS_ENV}={raw!r} is not a number of pixels: set it to an integer, or 'none' for no limit."
        ) from None


def open_image(value: Any) -> Image.Image:
    """Decode one image cell (path, {'path','bytes'} or PIL) to RGB, naming the file on failure."""
    where = value if isinstance(value, str) else (value.get("path") if isinstance(value, dict) else None)
    _apply_pixel_limit()
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict) and value.get("bytes"):
            image = Image.open(io.BytesIO(value["bytes"]))
        elif where:
            image = Image.open(where)
        else:
            raise DataError(f"Image cell holds no path or bytes: {value!r}")
        image.load()
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise DataError(f"Cannot decode image {where or '<bytes>'}: {err}. Replace or remove the file.") from None
    except Image.DecompressionBombError as err:
        size = str(err).split(",")[0]  # "Image size (N pixels) exceeds limit of M pixels"
        raise DataError(
            f"Cannot decode image {where or '<bytes>'}: {size} (Pillow's decompression-bomb check); if you trust "
            f"the file, allow larger images with {MAX_IMAGE_PIXELS_ENV}=<pixels> (or 'none'), or downscale it."
        ) from None
    if image.mode == "P":  # palette images may carry transparency; go through RGBA to keep colours right
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def _size_dict(size: Any) -> dict[str, Any]:
    """An image processor's size as a plain dict (transformers 5 uses a SizeDict dataclass)."""
    if size is None:
        return {}
    if dataclasses.is_dataclass(size):
        return {k: v for k, v in dataclasses.asdict(size).items() if v is not None}
    return dict(size) if isinstance(size, dict) else {"height": size, "width": size}


def _is_timm_folder(path: Path) -> bool:
    config = path / "config.json"
    return config.is_file() and "architecture" in json.loads(config.read_text())


@ADAPTERS.register("image-classification")
class ImageClassificationAdapter(TaskAdapter):
    task: ClassVar[str] = "image-classification"
    folder_builder: ClassVar[str | None] = "imagefolder"
    pipeline_tag: ClassVar[str] = "image-classification"
    input_column_key: ClassVar[str] = "image_column"
    input_is_file: ClassVar[bool] = True

    family: str  # "timm" or "transformers", set by load_model
    processor: Any = None  # the transformers image processor (transformers family only)

    # ---- model ---------------------------------------------------------------------------------
    def load_model(self, spec: str, weights: str | None, labels: list[str], pretrained: bool) -> nn.Module:
        timm_name = self._timm_name(spec)
        if timm_name is not None:
            return self._load_timm(timm_name, weights, labels, pretrained)
        if weights is not None:
            raise ModelError(f"`weights` applies to timm architectures only; {spec!r} is not one.")
        return self._load_transformers(spec, labels, pretrained)

    @staticmethod
    def _timm_name(spec: str) -> str | None:
        path = Path(spec).expanduser()
        if path.is_dir():
            return f"local-dir:{path}" if _is_timm_folder(path) else None
        if spec.startswith(("hf-hub:", "hf_hub:", "local-dir:")):
            return spec
        if spec.startswith("timm/"):
            return f"hf-hub:{spec}"
        return spec if timm.is_model(spec) else None

    def _load_timm(self, name: str, weights: str | None, labels: list[str], pretrained: bool) -> nn.Module:
        self.family = "timm"
        load_hub_weights = pretrained and weights is None
        try:
            model = timm.create_model(name, pretrained=load_hub_weights, num_classes=len(labels))
        except RuntimeError as err:
            if "Unknown model" in str(err):
                raise ModelError(f"Unknown timm model {name!r}. See timm.list_models() for names.") from None
            raise
        except OSError as err:
            raise_if_offline_cache_miss(name, err)
            raise
        if weights is not None:
            load_timm_weights(model, weights, head=self.head_modules(model))
        size = self.config.data.image_size
        if size is not None:
            # The exported pretrained_cfg must describe the size we train at, so loaders preprocess alike.
            model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, size, size)}
        model.pretrained_cfg = {**model.pretrained_cfg, "label_names": list(labels), "num_classes": len(labels)}
        data_config = timm.data.resolve_model_data_config(model)
        d = self.config.data
        self._train_transform = timm.data.create_transform(
            **data_config, is_training=True, scale=tuple(d.crop_scale), hflip=d.hflip
        )
        self._eval_transform = timm.data.create_transform(**data_config, is_training=False)
        return model

    def _load_transformers(self, spec: str, labels: list[str], pretrained: bool) -> nn.Module:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        self.family = "transformers"
        model, self.processor = self.load_transformers(
            AutoModelForImageClassification,
            AutoImageProcessor,
            spec,
            labels,
            pretrained,
            hint="a timm model name, a local timm/transformers folder, a previous run's output_dir, "
            "or a reachable Hub id",
        )
        self._set_transformers_transforms()
        return model

    def _set_transformers_transforms(self) -> None:
        p = self.processor
        override = self.config.data.image_size
        if override is not None:
            for attr in ("size", "crop_size"):
                size = _size_dict(getattr(p, attr, None))
                if size:
                    setattr(p, attr, {k: override for k in ("height", "width", "shortest_edge") if size.get(k)})
        size = _size_dict(p.crop_size if getattr(p, "do_center_crop", False) else p.size)
        side = size.get("height") or size.get("shortest_edge")
        self._train_transform = T.Compose(
            [
                T.RandomResizedCrop(side, scale=tuple(self.config.data.crop_scale)),
                T.RandomHorizontalFlip(self.config.data.hflip),
                T.ToTensor(),
                T.Normalize(mean=p.image_mean, std=p.image_std),
            ]
        )
        self._eval_transform = None  # the processor itself, so pipeline() sees exactly what we evaluated

    def head_modules(self, model: nn.Module) -> list[str]:
        if self.family == "timm":
            classifier = model.pretrained_cfg.get("classifier") or "classifier"
            names = [classifier] if isinstance(classifier, str) else list(classifier)
            for name in names:
                model.get_submodule(name)  # raises if timm's metadata disagrees with the module tree
            return names
        return hf_head_modules(model)

    def save_model(self, model: nn.Module, directory: Path, labels: list[str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if self.family == "transformers":
            model.save_pretrained(directory, safe_serialization=True)
            self.processor.save_pretrained(directory)
            return
        from timm.models import save_for_hf

        save_for_hf(model, str(directory), model_config={"label_names": list(labels)}, safe_serialization=True)
        # transformers' TimmWrapper passes num_classes itself; a second copy in model_args breaks
        # AutoModelForImageClassification.from_pretrained (seen with timm 1.0.31 + transformers 5.23).
        config_path = directory / "config.json"
        config = json.loads(config_path.read_text())
        config.get("model_args", {}).pop("num_classes", None)
        config_path.write_text(json.dumps(config, indent=2))

    def save_preprocessor(self, directory: Path) -> None:
        if self.family == "transformers":
            self.processor.save_pretrained(directory)

    # ---- data ----------------------------------------------------------------------------------
    def prepare_dataset(self, dataset: Dataset) -> Dataset:
        # Decode ourselves, so that an unreadable file is reported by its path.
        return dataset.cast_column(self.input_column, ImageFeature(decode=False))

    def preprocess(self, examples: dict[str, list[Any]], train: bool) -> dict[str, list[Any]]:
        images = [open_image(v) for v in examples[self.input_column]]
        transform = self._train_transform if train else self._eval_transform
        if transform is None:
            pixel_values = list(self.processor(images, return_tensors="pt")["pixel_values"])
        else:
            pixel_values = [transform(image) for image in images]
        out: dict[str, list[Any]] = {"pixel_values": pixel_values}
        if "labels" in examples:
            out["labels"] = examples["labels"]
        return out

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {"pixel_values": torch.stack([f["pixel_values"] for f in features])}
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return batch

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.family == "timm":
            return model(batch["pixel_values"])
        return model(pixel_values=batch["pixel_values"]).logits
