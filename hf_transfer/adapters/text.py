"""Text classification: any encoder AutoModelForSequenceClassification loads (BERT, DistilBERT,
RoBERTa, MiniLM, DeBERTa, ...), single texts or text pairs, with the checkpoint's own tokenizer.

Texts are tokenized without padding (truncated to `data.max_length`); each batch is padded to its
own longest example in `collate`, so short texts never pay for the longest one in the data set.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, ClassVar

import torch
from datasets import Dataset, Value
from torch import nn

from ..core.cache import fingerprint
from ..core.errors import DataError, ModelError
from .base import (
    CardSnippets,
    InputCodec,
    LoadedModel,
    ModelIO,
    TaskAdapter,
    TransformersClassifier,
    hf_head_modules,
    load_transformers,
)
from .usage import LOCAL_FOLDER, peft_transformers_code, pipeline_code, python_block

_SCAN_BATCH = 10_000  # rows read at a time by the empty-text scan


TASK = "text-classification"


class TextModels(ModelIO):
    """Any AutoModelForSequenceClassification encoder, loaded with its own tokenizer."""

    task: ClassVar[str] = TASK
    peft_task_type: ClassVar[str | None] = "SEQ_CLS"

    tokenizer: Any = None  # set by load_model; the inputs tokenize with it
    forward_inputs: list[str]  # the tokenizer outputs this model's forward() accepts
    position_limit: int  # the longest input the model's position embeddings cover

    def load_model(self, spec: str, weights: str | None, labels: list[str], pretrained: bool) -> LoadedModel:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if weights is not None:
            raise ModelError(
                "`weights` applies to timm image models only; for text, give a folder or Hub id as `model`."
            )
        loaded, self.tokenizer = load_transformers(
            TransformersClassifier(
                AutoModelForSequenceClassification,
                AutoTokenizer,
                self.task,
                "a local transformers folder (model + tokenizer), a previous run's output_dir, "
                "or a reachable Hub id of a sequence classifier",
            ),
            spec,
            labels,
            pretrained,
            trust_remote_code=self.config.trust_remote_code,
        )
        model = loaded.model
        if self.tokenizer.pad_token is None:
            # Decoder-style tokenizers (GPT-2, ...) have no pad token; the model must know which id is padding.
            if self.tokenizer.eos_token is None:
                raise ModelError(f"The tokenizer of {spec!r} has neither a pad nor an eos token to pad batches with.")
            self.tokenizer.pad_token = self.tokenizer.eos_token
            model.config.pad_token_id = self.tokenizer.pad_token_id
        # Some models (DistilBERT, ...) take no token_type_ids even where their tokenizer returns them.
        accepted = inspect.signature(model.forward).parameters
        self.forward_inputs = [name for name in self.tokenizer.model_input_names if name in accepted]
        self.position_limit = getattr(model.config, "max_position_embeddings", None) or self.config.data.max_length
        return loaded

    def head_modules(self, model: nn.Module) -> list[str]:
        return hf_head_modules(model)  # BERT: classifier; DistilBERT: pre_classifier + classifier

    def save_model(self, model: nn.Module, directory: Path, labels: list[str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        # pipeline("text-classification") names its predictions from these.
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {name: i for i, name in enumerate(labels)}
        model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)

    def save_preprocessor(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(directory)


class TextInputs(InputCodec):
    """Texts (or pairs) tokenized once, unpadded; each batch padded to its own longest example."""

    folder_builder: ClassVar[str | None] = None  # csv/json/parquet files and Hub ids only
    input_column_key: ClassVar[str] = "text_column"
    input_column_names: ClassVar[tuple[str, ...]] = ("text", "sentence", "content")

    _models: TextModels
    _collator_for: tuple[Any, Any] | None = None  # (tokenizer, its DataCollatorWithPadding)

    @property
    def input_columns(self) -> list[str]:
        pair = self.config.data.text_pair_column
        return [self.input_column] + ([pair] if pair else [])

    @property
    def max_length(self) -> int:
        # A tokenizer without a known limit reports a huge sentinel; the position table still bounds it.
        limit = self._models.position_limit
        return min(self.config.data.max_length, self._models.tokenizer.model_max_length, limit)

    def prepare_dataset(self, dataset: Dataset) -> Dataset:
        pair = self.config.data.text_pair_column
        if pair and pair not in dataset.column_names:
            raise DataError(
                f"Text pair column {pair!r} not found (columns: {', '.join(dataset.column_names)}). "
                "Set data.text_pair_column=<column>, or unset it for single texts."
            )
        for column in self.input_columns:
            feature = dataset.features[column]
            if not isinstance(feature, Value):
                raise DataError(f"Column {column!r} holds {feature}, not text: give a column of strings.")
            if feature.dtype not in ("string", "large_string"):
                # e.g. a CSV column of numbers read as int64: the tokenizer needs strings
                dataset = dataset.cast_column(column, Value("string"))
        if isinstance(dataset, Dataset):  # a stream (data.streaming) is not read whole before training
            _check_no_empty_text(dataset, self.input_columns)
        return dataset

    def decode(self, examples: dict[str, list[Any]], augment: bool) -> dict[str, list[Any]]:
        # Tokenized once, unpadded: each batch is padded to its own longest text in `collate`.
        pairs = examples[self.config.data.text_pair_column] if self.config.data.text_pair_column else None
        encoded = self._models.tokenizer(
            examples[self.input_column], pairs, truncation=True, max_length=self.max_length, padding=False
        )
        return {name: encoded[name] for name in self._models.forward_inputs}

    def decode_signature(self, augment: bool) -> dict[str, Any]:
        t = self._models.tokenizer
        # A fast tokenizer serialises whole (normaliser, pre-tokenizer, vocabulary); else the vocabulary.
        backend = getattr(t, "backend_tokenizer", None)
        identity = fingerprint(backend.to_str() if backend is not None else sorted(t.get_vocab().items()))
        return {
            "tokenizer": [type(t).__name__, identity],
            "max_length": self.max_length,
            "inputs": self._models.forward_inputs,
            "pair": self.config.data.text_pair_column,
        }

    def transform(self, example: dict[str, Any], augment: bool, seed: int | None) -> dict[str, Any]:
        # Token ids as they are (no text augmentation); other columns of the data stay behind.
        return {key: example[key] for key in [*self._models.forward_inputs, "labels"] if key in example}

    def augmentation(self, augment: bool) -> str:
        return "none"

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tokenizer = self._models.tokenizer
        if self._collator_for is None or self._collator_for[0] is not tokenizer:
            from transformers import DataCollatorWithPadding

            self._collator_for = (tokenizer, DataCollatorWithPadding(tokenizer))
        return dict(self._collator_for[1](features))  # pads to this batch's longest; `labels` become a tensor


class TextCard(CardSnippets):
    """The transformers pipeline (or AutoPeftModel), told to truncate as the run did."""

    pipeline_tag: ClassVar[str] = TASK
    folder_builder: ClassVar[str | None] = TextInputs.folder_builder

    def usage_snippet(self, repo_id: str | None, labels: list[str], peft: bool, base_id: str | None) -> str:
        if peft and base_id is None:
            # adapter_config.json names a local base by its folder's name only: the reader points at their copy.
            code = peft_transformers_code("AutoModelForSequenceClassification", repo_id, labels, None)
        elif peft:
            # AutoPeftModel finds the base itself: adapter_config.json names its Hub id.
            code = (
                "from peft import AutoPeftModelForSequenceClassification\n\n"
                "model = AutoPeftModelForSequenceClassification.from_pretrained(\n"
                f'    "{repo_id or LOCAL_FOLDER}", num_labels={len(labels)}, id2label={dict(enumerate(labels))!r}, '
                "ignore_mismatched_sizes=True\n)  # the base's own head is replaced by the adapter's saved head"
            )
        else:
            code = pipeline_code(self.pipeline_tag, repo_id)
        n = self.config.data.max_length
        # What our evaluation did that a bare pipeline call does not: say it, so results can match.
        return (
            f"{python_block(code)}\n\nTrained and evaluated on texts truncated to {n} tokens: "
            f"call the pipeline with `truncation=True, max_length={n}` to match."
        )


class TextClassificationAdapter(TaskAdapter):
    """Text classification (single texts or pairs) with any AutoModelForSequenceClassification encoder."""

    task: ClassVar[str] = TASK
    models_type: ClassVar[type[ModelIO]] = TextModels
    inputs_type: ClassVar[type[InputCodec]] = TextInputs
    card_type: ClassVar[type[CardSnippets]] = TextCard


def _check_no_empty_text(dataset: Dataset, columns: list[str]) -> None:
    """An empty text trains on nothing but [CLS] [SEP]: almost always a broken row. Name the first one."""
    for start in range(0, len(dataset), _SCAN_BATCH):
        batch = dataset.select_columns(columns)[start : start + _SCAN_BATCH]
        for column in columns:
            for offset, text in enumerate(batch[column]):
                if text is None or not text.strip():
                    row = start + offset
                    raise DataError(
                        f"Row {row} has an empty text in column {column!r} ({text!r}). "
                        "Fill it in or remove the row (rows are counted from 0, in the order of the data)."
                    )
