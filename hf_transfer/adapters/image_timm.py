"""The timm image backend: registry names, `hf-hub:`/`timm/` ids, local timm folders, local weights files.

Preprocessing comes from the model's own data config (timm's `resolve_model_data_config`): the
evaluation view is exactly timm's eval transform (resize by crop_pct, centre crop) up to the
uint8 tensor, so `timm`, `pipeline()` and hf_transfer see the same pixels.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import timm
import timm.data
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..catalog.weights import load_timm_weights
from ..core.errors import ModelError, raise_if_offline_cache_miss
from .base import FeatureSplit, LoadedModel, checkpoint_classes
from .image_backend import ImageBackend, pil_to_uint8
from .layers import LayerIds, by_name, unwrapped
from .usage import BASE_COMMENT, BASE_PLACEHOLDER, LOCAL_FOLDER

if TYPE_CHECKING:
    from collections.abc import Callable


def is_timm_folder(path: Path) -> bool:
    """A folder written by timm's save_for_hf: config.json names an `architecture`."""
    config = path / "config.json"
    return config.is_file() and "architecture" in json.loads(config.read_text())


# One image through the model, in the card's snippets (`transform` and `model` defined above it).
_CLASSIFY = 'logits = model(transform(Image.open("image.jpg").convert("RGB")).unsqueeze(0))'


def close_names(name: str, n: int = 3) -> list[str]:
    """timm's architecture names nearest to `name`, a likely typo: by spelling, else (`resnet_nonexistent`)
    the shortest names sharing its first word (the family's base models)."""
    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.6)
    if close:
        return close
    stem = re.split(r"[_\d]", name, maxsplit=1)[0]
    alike = [m for m in names if len(stem) >= 3 and m.startswith(stem)]
    return sorted(alike, key=lambda m: (len(m), m))[:n]


def unknown_name_error(spec: str) -> ModelError:
    """The error for a bare name (no path, no Hub organisation) that no backend could load: it is not a
    timm name, which is the usual intent, so say that first, with timm's nearest names."""
    from huggingface_hub import is_offline_mode

    close = close_names(spec)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    hub = (
        "a model in the local Hugging Face cache (HF_HUB_OFFLINE is set: nothing is downloaded)"
        if is_offline_mode()
        else "a model id on the Hugging Face Hub"
    )
    return ModelError(
        f"Model {spec!r} is not a timm model name ({hint}timm.list_models() lists them all), a local folder, or {hub}."
    )


def timm_name(spec: str) -> str | None:
    """The name timm.create_model takes for `spec`, or None when it is not a timm model."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return f"local-dir:{path}" if is_timm_folder(path) else None
    if spec.startswith(("hf-hub:", "hf_hub:", "local-dir:")):
        return spec
    if spec.startswith("timm/"):
        return f"hf-hub:{spec}"
    return spec if timm.is_model(spec) else None


class TimmBackend(ImageBackend):
    library: ClassVar[str] = "timm"

    @classmethod
    def accepts(cls, spec: str) -> bool:
        return timm_name(spec) is not None

    @classmethod
    def hub_id(cls, spec: str) -> str | None:
        name = timm_name(spec) or spec
        if name.startswith(("hf-hub:", "hf_hub:")):
            return name.split(":", 1)[1].split("@")[0]
        if timm.is_model(name):  # a bare timm name: the Hub repository of its default pretrained tag
            return timm.models.get_pretrained_cfg(name).hf_hub_id or None
        return None  # local-dir: a local folder

    def load(self, spec: str, weights: str | None, labels: list[str], pretrained: bool) -> LoadedModel:
        name = timm_name(spec)
        assert name is not None
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
        # The classes the loaded head was trained for: what the checkpoint's config names (timm's label_names;
        # a bare weights file names none, and random weights were trained for nothing).
        classes = checkpoint_classes(model.pretrained_cfg.get("label_names")) if load_hub_weights else None
        if weights is not None:
            load_timm_weights(model, weights, head=self.head_modules(model))
        if self.image_size is not None:
            # The exported pretrained_cfg must describe the size we train at, so loaders preprocess alike.
            side = self.image_size
            model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, side, side)}
        model.pretrained_cfg = {**model.pretrained_cfg, "label_names": list(labels), "num_classes": len(labels)}
        self._config = timm.data.resolve_model_data_config(model)
        self.size = int(self._config["input_size"][-1])
        # timm's own eval transform without its last two steps (to-tensor, normalise): those run on the device.
        steps = timm.data.create_transform(**self._config, is_training=False).transforms
        if [type(t).__name__ for t in steps[-2:]] != ["MaybeToTensor", "Normalize"]:
            raise ModelError(f"Unexpected timm eval transform {steps}: expected it to end in MaybeToTensor, Normalize.")
        self._eval_geometry = steps[:-2]
        return LoadedModel(model, classes)

    def head_modules(self, model: nn.Module) -> list[str]:
        classifier = model.pretrained_cfg.get("classifier") or "classifier"
        names = [classifier] if isinstance(classifier, str) else list(classifier)
        for name in names:
            model.get_submodule(name)  # raises if timm's metadata disagrees with the module tree
        return names

    def save(self, model: nn.Module, directory: Path, labels: list[str]) -> None:
        from timm.models import save_for_hf

        directory.mkdir(parents=True, exist_ok=True)
        save_for_hf(model, str(directory), model_config={"label_names": list(labels)}, safe_serialization=True)
        # transformers' TimmWrapper passes num_classes itself; a second copy in model_args breaks
        # AutoModelForImageClassification.from_pretrained (seen with timm 1.0.31 + transformers 5.23).
        config_path = directory / "config.json"
        config = json.loads(config_path.read_text())
        config.get("model_args", {}).pop("num_classes", None)
        config_path.write_text(json.dumps(config, indent=2))

    def usage_code(self, repo_id: str | None, labels: list[str], peft: bool, base_id: str | None) -> str:
        """The model opened with timm, and one image classified with timm's own preprocessing (the model's data
        config: size, crop, mean, std), which is what hf-transfer evaluated with."""
        if peft:
            base = f"hf-hub:{base_id}" if base_id else f"local-dir:{BASE_PLACEHOLDER}"
            # The adapter folder holds no timm config: the base's, at the size this run trained at.
            size = self.image_size
            resize = f'config["input_size"] = (3, {size}, {size})  # the size it was trained at\n' if size else ""
            return (
                "import timm\nfrom peft import PeftModel\nfrom PIL import Image\n\n"
                + ("" if base_id else BASE_COMMENT)
                + f'base = timm.create_model("{base}", pretrained=True, num_classes={len(labels)})\n'
                f'model = PeftModel.from_pretrained(base, "{repo_id or LOCAL_FOLDER}").eval()\n'
                f"labels = {labels!r}\n"
                "config = timm.data.resolve_model_data_config(base)\n"
                f"{resize}"
                "transform = timm.data.create_transform(**config, is_training=False)\n"
                f"{_CLASSIFY}\nprint(labels[logits.argmax(-1).item()])"
            )
        where = f"hf-hub:{repo_id}" if repo_id else f"local-dir:{LOCAL_FOLDER}"
        return (
            f'import timm\nfrom PIL import Image\n\nmodel = timm.create_model("{where}", pretrained=True).eval()\n'
            "# Its preprocessing (resize, crop, normalisation) from its data config, as hf-transfer evaluated it:\n"
            "transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model), is_training=False)\n"
            f'{_CLASSIFY}\nprint(model.pretrained_cfg["label_names"][logits.argmax(-1).item()])\n'
            f'# or: transformers.pipeline("image-classification", model="{repo_id or LOCAL_FOLDER}")'
        )

    # ---- preprocessing ---------------------------------------------------------------------------
    def eval_view(self, image: Image.Image) -> torch.Tensor:
        for step in self._eval_geometry:
            image = step(image)
        return pil_to_uint8(image)

    def train_source(self, image: Image.Image) -> torch.Tensor:
        side = math.floor(self.size / self._config["crop_pct"])
        return pil_to_uint8(TF.resize(image, side, interpolation=InterpolationMode.BILINEAR, antialias=True))

    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...], float]:
        return tuple(self._config["mean"]), tuple(self._config["std"]), 1 / 255

    def signature(self) -> dict[str, Any]:
        return {"backend": "timm", **{k: v for k, v in self._config.items()}}

    # ---- calling the model -----------------------------------------------------------------------
    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """The float input, in NHWC ("channels last") memory on a CPU: oneDNN's convolutions run faster on it
        (measured per fp32 training step, batch 32, 2 cores: EfficientNet-Lite0 1.15x at 128 px and 1.76x at
        224 px, EfficientNet-B0 1.25x and MobileNetV3 1.17x at 128 px, ResNet-18 1.27x at 224 px, ConvNeXt and
        ViT unchanged; evaluation 1.45-1.6x). Only the input's layout changes: the activations follow it, the
        weights (and what is saved) keep theirs. Not measured on a GPU, where it stays as it was."""
        x = super().normalise(pixels)
        return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" and x.dim() == 4 else x

    def call(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        return model(pixel_values)

    def feature_split(
        self, model: nn.Module, logits: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    ) -> FeatureSplit | None:
        """timm's own cut: forward_features + forward_head(pre_logits=True), then the classifier."""
        heads = self.head_modules(model)
        if len(heads) != 1 or model.get_submodule(heads[0]) is not model.get_classifier():
            return None

        def features(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            pixels = self.normalise(batch["pixel_values"])
            return model.forward_head(model.forward_features(pixels), pre_logits=True)

        return FeatureSplit(features=features, head=model.get_classifier(), name=f"timm:{type(model).__name__}")

    def enable_gradient_checkpointing(self, model: nn.Module) -> None:
        model.set_grad_checkpointing(True)

    def layer_ids(self, model: nn.Module) -> LayerIds:
        """timm's own layers: its group matcher, numbered as timm's param_groups_layer_decay numbers them."""
        from timm.models import group_parameters

        base = unwrapped(model)
        ids = group_parameters(base, base.group_matcher(coarse=False), reverse=True)
        return by_name(model, base, ids), max(ids.values())
