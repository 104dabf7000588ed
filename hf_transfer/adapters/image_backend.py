"""The image backend contract: one image model family (timm, transformers) behind `ImageBackend`, which
the image adapter (image.py) holds and each backend (image_timm.py, image_hf.py) implements. Its own
module so that the backends import the contract and image.py imports the backends, never in a circle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from .base import FeatureSplit, LoadedModel
from .layers import LayerIds

if TYPE_CHECKING:
    from collections.abc import Callable


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """A PIL RGB image as a [3, H, W] uint8 tensor (what ToTensor sees before it divides by 255)."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class ImageBackend(ABC):
    """One image model family: loading, preprocessing geometry, head, saved format and call.

    After `load`, a backend knows its input `size` and turns a decoded PIL image into the uint8
    evaluation view (exactly the resize/crop its standard loader applies) or into the larger
    augmentation source; `logits` normalises uint8 pixels on the device and calls the model."""

    # The library that opens the saved model (the model card's `library_name`).
    library: ClassVar[str]

    def __init__(self, image_size: int | None, trust_remote_code: bool) -> None:
        self.image_size = image_size  # data.image_size: the input side, over the model's own (None: its own)
        self.trust_remote_code = trust_remote_code
        self.size = 0  # input side in pixels, set by load
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor, float]] = {}

    @classmethod
    @abstractmethod
    def accepts(cls, spec: str) -> bool:
        """Whether `spec` names a model of this family."""

    @abstractmethod
    def load(self, spec: str, weights: str | None, labels: list[str], pretrained: bool) -> LoadedModel:
        """The model sized for `labels` and the classes its checkpoint names (see ModelIO.load_model);
        also sets up this backend's preprocessing."""

    @abstractmethod
    def head_modules(self, model: nn.Module) -> list[str]: ...

    @abstractmethod
    def save(self, model: nn.Module, directory: Path, labels: list[str]) -> None: ...

    def save_preprocessor(self, directory: Path) -> None:
        return None

    @classmethod
    @abstractmethod
    def hub_id(cls, spec: str) -> str | None:
        """See CardSnippets.hub_id."""

    @abstractmethod
    def usage_code(self, repo_id: str | None, labels: list[str], peft: bool, base_id: str | None) -> str:
        """Python that opens the saved model with this family's loader (see CardSnippets.usage_snippet)."""

    @abstractmethod
    def eval_view(self, image: Image.Image) -> torch.Tensor:
        """[3, size, size] uint8: the standard loader's resize and crop, before scaling and normalising."""

    @abstractmethod
    def train_source(self, image: Image.Image) -> torch.Tensor:
        """[3, H, W] uint8 that random crops are cut from (shorter side about size / crop_pct)."""

    @abstractmethod
    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...], float]:
        """(mean, std, scale): pixels are `(uint8 * scale - mean) / std`, as the standard loader computes."""

    @abstractmethod
    def signature(self) -> dict[str, Any]:
        """What the views depend on (for the decoded-input cache key)."""

    @abstractmethod
    def call(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """Logits for normalised float pixels."""

    @abstractmethod
    def feature_split(
        self, model: nn.Module, logits: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    ) -> FeatureSplit | None: ...

    @abstractmethod
    def enable_gradient_checkpointing(self, model: nn.Module) -> None: ...

    @abstractmethod
    def layer_ids(self, model: nn.Module) -> LayerIds: ...

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] on any device -> the float input the model expects."""
        if pixels.dtype != torch.uint8:
            return pixels  # already normalised (a caller's own tensors)
        if pixels.device not in self._stats:
            mean, std, scale = self.normalisation()
            as_tensor = lambda v: torch.tensor(v, dtype=torch.float32, device=pixels.device).view(1, -1, 1, 1)  # noqa: E731
            self._stats[pixels.device] = (as_tensor(mean), as_tensor(std), scale)
        mean, std, scale = self._stats[pixels.device]
        # The same float operations as ToTensor + Normalize (timm) or rescale + normalize (processors).
        scaled = pixels.float().div(255.0) if scale == 1 / 255 else pixels.float().mul(scale)
        return scaled.sub(mean).div(std)
