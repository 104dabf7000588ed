"""Image classification: timm models (registry names, hf-hub: ids, local folders, local weights) and
transformers image classifiers (ViT, ResNet, ConvNeXt, ... via AutoModelForImageClassification).

The two model families differ in loading, preprocessing geometry, head, save format and call; each
is one `ImageBackend` (image_backend.py; image_timm.py, image_hf.py), chosen from the model spec. This module holds
what images share: decoding files, the uint8 views that are cached, the augmentation.

Pixels travel as uint8 from decoding to the device; normalisation (the backend's mean/std) runs
there, inside `logits`, so the data path moves four times fewer bytes and does no float work.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from torch import nn
from torchvision.transforms import v2

from ..core.errors import ConfigError, DataError, ModelError
from ..core.rng import seeded
from .base import (
    EVALUATION_VIEW,
    CardSnippets,
    FeatureSplit,
    InputCodec,
    LoadedModel,
    ModelIO,
    ProbeView,
    TaskAdapter,
)
from .image_backend import ImageBackend
from .layers import LayerIds
from .usage import python_block

# RandomResizedCrop's aspect-ratio range, as torchvision and timm use it.
_CROP_RATIO = (3 / 4, 4 / 3)
MIRRORED = "mirrored"  # the probe view that is the evaluation view flipped left to right

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
    """Decode one image cell (path, {'path','bytes'} or PIL) to RGB (see `to_rgb`), naming the file on failure."""
    where = value if isinstance(value, str) else (value.get("path") if isinstance(value, dict) else None)
    in_data = isinstance(value, dict) and bool(value.get("bytes"))
    # A file is named by its path; bytes stored in the data (parquet, Arrow) by the file name kept with them, if any.
    if in_data:
        shown = f"the image bytes of {where}" if where else "the image bytes in the data"
    else:
        shown = f"image {where}" if where else "an image passed in memory"
    fix = "Replace or remove that example." if in_data else "Replace or remove the file."
    _apply_pixel_limit()
    try:
        if isinstance(value, Image.Image):
            image = value
        elif in_data:
            image = Image.open(io.BytesIO(value["bytes"]))
        elif where:
            image = Image.open(where)
        else:
            raise DataError(f"Image cell holds no path or bytes: {value!r}")
        image.load()
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        # Pillow names a BytesIO by its repr (<_io.BytesIO object at 0x...>), which tells nobody anything.
        reason = _BYTES_REPR.sub("", str(err)).strip()
        raise DataError(f"Cannot decode {shown}: {reason}. {fix}") from None
    except Image.DecompressionBombError as err:
        size = str(err).split(",")[0]  # "Image size (N pixels) exceeds limit of M pixels"
        raise DataError(
            f"Cannot decode {shown}: {size} (Pillow's decompression-bomb check); if you trust "
            f"the file, allow larger images with {MAX_IMAGE_PIXELS_ENV}=<pixels> (or 'none'), or downscale it."
        ) from None
    return to_rgb(image, shown)


_BYTES_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")
# 16-bit grey levels (PNG, TIFF, PGM): Pillow's modes for them, little-, big- and native-endian.
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(image: Image.Image, where: str) -> Image.Image:
    """An image of any Pillow mode as the 8-bit RGB a viewer shows, upright.

    - EXIF orientation is applied (a phone photo taken upright trains upright), as datasets' Image does;
    - transparency (LA, RGBA, PA, P with a transparent colour, ...) is composited onto white, as
      transformers' image processors do (`convert_to_rgb`) and viewers show it: the colour under a fully
      transparent pixel is invisible, often black, and says nothing about the image;
    - 16-bit grey (I;16*, and I, how Pillow opens 16-bit PGM and some TIFFs) keeps its top 8 bits, as
      Pillow reduces 16-bit RGB: `convert("RGB")` would clip every level above 255 to white;
    - 32-bit float grey (F) and integers beyond 16 bits have no standard scale: refused, by name;
    - everything else (1, L, P, CMYK, YCbCr, LAB, HSV, RGBX) through Pillow's own conversion.
    """
    if image.getexif().get(ExifTags.Base.Orientation) is not None:
        image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT or image.mode == "I":
        levels = np.asarray(image)
        if image.mode == "I" and levels.size and (levels.min() < 0 or levels.max() > 65535):
            raise DataError(
                f"Cannot convert {where} to RGB: its pixels are 32-bit integers from {levels.min()} to {levels.max()} "
                "(Pillow mode I), beyond the 16-bit grey levels that have a standard scale. Convert it to an 8- or "
                "16-bit PNG with the scaling that suits your data."
            )
        grey = (levels.astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2))
    if image.mode == "F":
        raise DataError(
            f"Cannot convert {where} to RGB: its pixels are 32-bit floats (Pillow mode F), whose scale (0-1? "
            "0-255? raw measurements?) no file states. Convert it to an 8- or 16-bit PNG with the scaling that suits "
            "your data."
        )
    if image.mode == "RGB":
        return image
    if image.has_transparency_data:  # an alpha band (not LAB's "A"), or a transparent palette entry or colour
        if image.mode == "La":  # premultiplied: Pillow converts it only to LA
            image = image.convert("LA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _is_bare_name(spec: str) -> bool:
    """A name alone (`resnet18`): no path that exists, no Hub organisation, no `hf-hub:`-style prefix."""
    return "/" not in spec and ":" not in spec and not Path(spec).expanduser().exists()


def backend_for(spec: str) -> type[ImageBackend]:
    from .image_hf import TransformersImageBackend
    from .image_timm import TimmBackend

    return TimmBackend if TimmBackend.accepts(spec) else TransformersImageBackend


TASK = "image-classification"


class ImageModels(ModelIO):
    """timm or transformers image classifiers, the backend chosen from the model spec when it loads."""

    task: ClassVar[str] = TASK
    backend: ImageBackend  # set by load_model, from the model spec; the inputs and the card read it too

    def load_model(self, spec: str, weights: str | None, labels: list[str], pretrained: bool) -> LoadedModel:
        self.backend = backend_for(spec)(self.config.data.image_size, self.config.trust_remote_code)
        try:
            return self.backend.load(spec, weights, labels, pretrained)
        except ModelError:
            from .image_timm import TimmBackend, unknown_name_error

            if isinstance(self.backend, TimmBackend) or not _is_bare_name(spec):
                raise
            raise unknown_name_error(spec) from None  # no timm name, and transformers found nothing either

    def head_modules(self, model: nn.Module) -> list[str]:
        return self.backend.head_modules(model)

    def save_model(self, model: nn.Module, directory: Path, labels: list[str]) -> None:
        self.backend.save(model, directory, labels)

    def save_preprocessor(self, directory: Path) -> None:
        self.backend.save_preprocessor(directory)

    def feature_split(self, model: nn.Module) -> FeatureSplit | None:
        return self.backend.feature_split(model, self.logits)

    def enable_gradient_checkpointing(self, model: nn.Module) -> None:
        self.backend.enable_gradient_checkpointing(model)

    def layer_ids(self, model: nn.Module) -> LayerIds:
        return self.backend.layer_ids(model)

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.backend.call(model, self.backend.normalise(batch["pixel_values"]))


class ImageInputs(InputCodec):
    """Image files decoded once to the backend's uint8 views; random resized crops and flips per example."""

    folder_builder: ClassVar[str | None] = "imagefolder"
    input_column_key: ClassVar[str] = "image_column"
    input_column_names: ClassVar[tuple[str, ...]] = ("image", "img", "file_name")
    input_feature: ClassVar[type | None] = ImageFeature
    input_is_file: ClassVar[bool] = True

    _models: ImageModels
    _augment_for: tuple[ImageBackend, v2.Compose] | None = None

    @property
    def backend(self) -> ImageBackend:
        return self._models.backend

    def prepare_dataset(self, dataset: Dataset) -> Dataset:
        # Decode ourselves, so that an unreadable file is reported by its path.
        return dataset.cast_column(self.input_column, ImageFeature(decode=False))

    def decode(self, examples: dict[str, list[Any]], augment: bool) -> dict[str, list[Any]]:
        view = self.backend.train_source if augment else self.backend.eval_view
        pixels = [view(open_image(cell)) for cell in examples[self.input_column]]
        return {"pixels": [p.numpy().tobytes() for p in pixels], "pixels_shape": [list(p.shape) for p in pixels]}

    def decode_signature(self, augment: bool) -> dict[str, Any]:
        # "decoder" names how files become RGB (to_rgb): a change there must not reuse older cached pixels.
        view = "train_source" if augment else "eval"
        return {"view": view, "decoder": "to_rgb-2", **self.backend.signature()}

    def transform(self, example: dict[str, Any], augment: bool, seed: int | None) -> dict[str, Any]:
        shape = example["pixels_shape"]
        pixels = torch.frombuffer(bytearray(example["pixels"]), dtype=torch.uint8).view(*shape)
        if augment:
            with seeded(seed):
                pixels = self._augment(pixels)
        out: dict[str, Any] = {"pixel_values": pixels}
        if "labels" in example:
            out["labels"] = example["labels"]
        return out

    @property
    def _augment(self) -> v2.Compose:
        """Random resized crop and flip on uint8 tensors (bilinear, antialiased), as torchvision does them;
        built once per loaded backend (its size)."""
        backend = self.backend
        if self._augment_for is None or self._augment_for[0] is not backend:
            d = self.config.data
            crop = v2.RandomResizedCrop(backend.size, scale=tuple(d.crop_scale), ratio=_CROP_RATIO, antialias=True)
            self._augment_for = (backend, v2.Compose([crop, v2.RandomHorizontalFlip(d.hflip)]))
        return self._augment_for[1]

    def augmentation(self, augment: bool) -> str:
        if not augment:
            return "none (training sees the evaluation view: resize and centre crop)"
        d = self.config.data
        scale = f"{d.crop_scale[0]:g}-{d.crop_scale[1]:g}"
        flip = f", horizontal flip p={d.hflip:g}" if d.hflip else ", no flips"
        return f"random resized crop to {self.backend.size} px (area {scale} of the image){flip}"

    def probe_views(self, count: int | None) -> list[ProbeView]:
        """The evaluation view; its mirror image when data.hflip allows flips (digits and text do not); then
        random resized crops of data.crop_scale, each mirrored with probability data.hflip: the training
        augmentation's views. By default (None) the first two only: on few-shot tasks the mirror image
        helped where flips keep the label and the crops cost accuracy (benchmarks/RESULTS.md, issue 17).
        (Crops of the evaluation view itself, scaled back up, measured worse than these.)"""
        d = self.config.data
        views = [EVALUATION_VIEW] + ([ProbeView(MIRRORED, augment_source=False)] if d.hflip > 0 else [])
        if count is None:
            return views
        crop = (("crop_scale", tuple(d.crop_scale)), ("hflip", d.hflip), ("ratio", _CROP_RATIO))
        views += [ProbeView(f"crop {i}", augment_source=True, recipe=crop) for i in range(1, count - len(views) + 1)]
        return views[:count]

    def view_inputs(self, example: dict[str, Any], view: ProbeView, seed: int) -> dict[str, Any]:
        out = super().view_inputs(example, view, seed)
        if view.name == MIRRORED:
            out["pixel_values"] = out["pixel_values"].flip(-1)
        return out

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {"pixel_values": torch.stack([f["pixel_values"] for f in features])}
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return batch


class ImageCard(CardSnippets):
    """The saved model's library and usage code are its backend's (timm or transformers)."""

    pipeline_tag: ClassVar[str] = TASK
    folder_builder: ClassVar[str | None] = ImageInputs.folder_builder
    _models: ImageModels

    @classmethod
    def hub_id(cls, spec: str) -> str | None:
        return backend_for(spec).hub_id(spec)

    @property
    def library(self) -> str:
        return self._models.backend.library

    def usage_snippet(self, repo_id: str | None, labels: list[str], peft: bool, base_id: str | None) -> str:
        return python_block(self._models.backend.usage_code(repo_id, labels, peft, base_id))


class ImageClassificationAdapter(TaskAdapter):
    """Image classification with timm or transformers backbones (the backend follows the model spec)."""

    task: ClassVar[str] = TASK
    models_type: ClassVar[type[ModelIO]] = ImageModels
    inputs_type: ClassVar[type[InputCodec]] = ImageInputs
    card_type: ClassVar[type[CardSnippets]] = ImageCard
