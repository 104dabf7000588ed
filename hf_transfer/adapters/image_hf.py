"""The transformers image backend: anything AutoModelForImageClassification loads (ViT, ResNet, ConvNeXt, ...).

The evaluation view is the checkpoint's own image processor run without rescaling and
normalising (its resize and crop, as uint8); those two steps run on the device, with the
processor's rescale factor, mean and std, so `pipeline()` and hf_transfer see the same input.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..core.errors import ModelError
from .base import (
    FeatureSplit,
    LoadedModel,
    TransformersClassifier,
    enable_hf_gradient_checkpointing,
    hf_head_modules,
    hooked_split,
    load_transformers,
)
from .image_backend import ImageBackend, pil_to_uint8
from .layers import LayerIds, numbered_layer_ids, unwrapped
from .usage import peft_transformers_code, pipeline_code

if TYPE_CHECKING:
    from collections.abc import Callable

_DEFAULT_CROP_PCT = 0.875  # the augmentation source's margin when the processor has no crop_pct


def _size_dict(size: Any) -> dict[str, Any]:
    """An image processor's size as a plain dict (transformers 5 uses a SizeDict dataclass)."""
    if size is None:
        return {}
    if dataclasses.is_dataclass(size):
        return {k: v for k, v in dataclasses.asdict(size).items() if v is not None}
    return dict(size) if isinstance(size, dict) else {"height": size, "width": size}


class TransformersImageBackend(ImageBackend):
    library: ClassVar[str] = "transformers"
    processor: Any = None

    @classmethod
    def accepts(cls, spec: str) -> bool:
        return True  # the fallback: anything that is not a timm model

    @classmethod
    def hub_id(cls, spec: str) -> str | None:
        return spec

    def load(self, spec: str, weights: str | None, labels: list[str], pretrained: bool) -> LoadedModel:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        if weights is not None:
            raise ModelError(f"`weights` applies to timm architectures only; {spec!r} is not one.")
        loaded, self.processor = load_transformers(
            TransformersClassifier(
                AutoModelForImageClassification,
                AutoImageProcessor,
                "image-classification",
                "a timm model name, a local timm/transformers folder, a previous run's output_dir, "
                "or a reachable Hub id",
            ),
            spec,
            labels,
            pretrained,
            trust_remote_code=self.trust_remote_code,
        )
        p = self.processor
        override = self.image_size
        if override is not None:
            for attr in ("size", "crop_size"):
                size = _size_dict(getattr(p, attr, None))
                if size:
                    setattr(p, attr, {k: override for k in ("height", "width", "shortest_edge") if size.get(k)})
        size = _size_dict(p.crop_size if getattr(p, "do_center_crop", False) else p.size)
        self.size = int(size.get("height") or size.get("shortest_edge"))
        return loaded

    def head_modules(self, model: nn.Module) -> list[str]:
        return hf_head_modules(model)

    def save(self, model: nn.Module, directory: Path, labels: list[str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(directory, safe_serialization=True)
        self.processor.save_pretrained(directory)

    def save_preprocessor(self, directory: Path) -> None:
        self.processor.save_pretrained(directory)

    def usage_code(self, repo_id: str | None, labels: list[str], peft: bool, base_id: str | None) -> str:
        if peft:
            return peft_transformers_code("AutoModelForImageClassification", repo_id, labels, base_id)
        return pipeline_code("image-classification", repo_id)

    # ---- preprocessing ---------------------------------------------------------------------------
    def eval_view(self, image: Image.Image) -> torch.Tensor:
        pixels = self.processor(image, do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"][0]
        return pixels.round().clamp(0, 255).to(torch.uint8) if pixels.dtype != torch.uint8 else pixels

    def train_source(self, image: Image.Image) -> torch.Tensor:
        side = round(self.size / (getattr(self.processor, "crop_pct", None) or _DEFAULT_CROP_PCT))
        return pil_to_uint8(TF.resize(image, side, interpolation=InterpolationMode.BILINEAR, antialias=True))

    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...], float]:
        p = self.processor
        scale = float(p.rescale_factor) if getattr(p, "do_rescale", True) else 1.0
        if not getattr(p, "do_normalize", True):
            return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), scale
        return tuple(p.image_mean), tuple(p.image_std), scale

    def signature(self) -> dict[str, Any]:
        return {"backend": "transformers", "processor": self.processor.to_dict()}

    # ---- calling the model -----------------------------------------------------------------------
    def call(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        return model(pixel_values=pixel_values).logits

    def feature_split(
        self, model: nn.Module, logits: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    ) -> FeatureSplit | None:
        heads = self.head_modules(model)
        if len(heads) != 1:
            return None
        return hooked_split(model, heads[0], logits, name=f"{type(model).__name__}:{heads[0]}")

    def enable_gradient_checkpointing(self, model: nn.Module) -> None:
        enable_hf_gradient_checkpointing(model)

    def layer_ids(self, model: nn.Module) -> LayerIds:
        return numbered_layer_ids(model, self.head_modules(unwrapped(model)))
