"""Audio classification: any model AutoModelForAudioClassification loads (wav2vec2, HuBERT, WavLM, ...).

Audio is decoded here with soundfile (WAV/FLAC/OGG through the libsndfile bundled in its wheel), not
through datasets' Audio decoding, which needs torchcodec and FFmpeg. Each clip is mixed down to
mono, resampled to the feature extractor's rate and cropped to `data.max_duration_s`; the feature
extractor itself normalises and pads.
"""

from __future__ import annotations

import io
import logging
from math import gcd
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import soundfile
import torch
from datasets import Audio, Dataset, Value
from scipy.signal import resample_poly
from torch import nn

from ..core.errors import DataError, ModelError
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
    TransformersClassifier,
    hf_head_modules,
    hooked_split,
    load_transformers,
)
from .usage import LOCAL_FOLDER, peft_transformers_code, pipeline_code, python_block

logger = logging.getLogger(__name__)

# A folder with none of these is a config only (e.g. pypi:tiny-wav2vec2): it can be built, not loaded.
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def load_audio(value: Any, sampling_rate: int) -> np.ndarray:
    """Decode one audio cell (path, {'path','bytes'} or {'array','sampling_rate'}) to mono float32 at
    `sampling_rate`, naming the file on failure."""
    where = value if isinstance(value, str) else (value.get("path") if isinstance(value, dict) else None)
    if isinstance(value, dict) and value.get("array") is not None:
        samples, rate = np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
    else:
        source = io.BytesIO(value["bytes"]) if isinstance(value, dict) and value.get("bytes") else where
        if not source:
            raise DataError(f"Audio cell holds no path or bytes: {value!r}")
        try:
            samples, rate = soundfile.read(source, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, OSError, TypeError) as err:
            raise DataError(
                f"Cannot decode audio {where or '<bytes>'}: {err}. soundfile reads WAV/FLAC/OGG; convert or remove it."
            ) from None
    if samples.ndim == 2:  # (frames, channels): average the channels
        samples = samples.mean(axis=1)
    if samples.size == 0:
        raise DataError(f"Audio {where or '<bytes>'} is empty (0 samples). Replace or remove it.")
    if rate != sampling_rate:
        # Polyphase resampling with scipy's anti-aliasing filter; the ratio is reduced to lowest terms.
        common = gcd(rate, sampling_rate)
        samples = resample_poly(samples, sampling_rate // common, rate // common).astype(np.float32)
    return samples


def crop(samples: np.ndarray, max_samples: int, train: bool) -> np.ndarray:
    """At most `max_samples`: a random window in training (augmentation), the centre in evaluation."""
    excess = len(samples) - max_samples
    if excess <= 0:
        return samples  # shorter clips are padded per batch by the feature extractor (collate)
    # torch's generator is seeded per example while the training transform runs (see rng.py).
    start = int(torch.randint(0, excess + 1, ())) if train else excess // 2
    return samples[start : start + max_samples]


TASK = "audio-classification"


class AudioModels(ModelIO):
    """Any AutoModelForAudioClassification model (wav2vec2 family), loaded with its feature extractor."""

    task: ClassVar[str] = TASK
    feature_extractor: Any = None  # set by load_model; the inputs and the card read it

    def load_model(self, spec: str, weights: str | None, labels: list[str], pretrained: bool) -> LoadedModel:
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        if weights is not None:
            raise ModelError("`weights` applies to timm image models only; for audio, give a folder as `model`.")
        folder = Path(spec).expanduser()
        if pretrained and folder.is_dir() and not any((folder / f).is_file() for f in _WEIGHT_FILES):
            raise ModelError(
                f"{spec!r} holds a model config but no weights: set `pretrained: false` to train it from scratch."
            )
        loaded, self.feature_extractor = load_transformers(
            TransformersClassifier(
                AutoModelForAudioClassification,
                AutoFeatureExtractor,
                self.task,
                "a local transformers folder, a previous run's output_dir, "
                "or a reachable Hub id of an audio classifier",
            ),
            spec,
            labels,
            pretrained,
            trust_remote_code=self.config.trust_remote_code,
        )
        if self.config.freeze_feature_encoder:
            freeze = getattr(loaded.model, "freeze_feature_encoder", None)
            if callable(freeze):
                freeze()  # the model's own switch: the convolutional encoder keeps its weights
            else:
                logger.info("%s has no convolutional feature encoder to freeze", type(loaded.model).__name__)
        return loaded

    @property
    def sampling_rate(self) -> int:
        """The rate the feature extractor expects, which clips are resampled to."""
        return int(self.feature_extractor.sampling_rate)

    def head_modules(self, model: nn.Module) -> list[str]:
        return hf_head_modules(model)  # wav2vec2 family: projector + classifier

    def feature_split(self, model: nn.Module) -> FeatureSplit | None:
        """wav2vec2-family heads project every frame, mean-pool the frames, classify. Projection and
        masked mean are both linear, so pooling first gives the same logits: the cached feature is one
        pooled vector per clip (not one per frame), and the head is projector then classifier."""
        if self.head_modules(model) != ["projector", "classifier"]:
            return super().feature_split(model)
        frames = hooked_split(model, "projector", self.logits, name="")

        def features(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            hidden = frames.features(batch)  # [batch, frames, hidden]
            mask = batch.get("attention_mask")
            if mask is None:
                return hidden.mean(dim=1)
            # transformers' own mask of the feature frames, the one wav2vec2's classification head pools with;
            # private, with no public equivalent (transformers 5), and called from here only.
            valid = model._get_feature_vector_attention_mask(hidden.shape[1], mask).to(hidden.dtype)
            return (hidden * valid.unsqueeze(-1)).sum(dim=1) / valid.sum(dim=1, keepdim=True)

        head = nn.Sequential(model.get_submodule("projector"), model.get_submodule("classifier"))
        return FeatureSplit(features=features, head=head, name=f"{type(model).__name__}:pooled-projector-input")

    def save_model(self, model: nn.Module, directory: Path, labels: list[str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(directory, safe_serialization=True)  # config.json carries id2label/label2id
        self.feature_extractor.save_pretrained(directory)

    def save_preprocessor(self, directory: Path) -> None:
        self.feature_extractor.save_pretrained(directory)


class AudioInputs(InputCodec):
    """Clips read with soundfile and resampled once; random windows per example; padded per batch."""

    folder_builder: ClassVar[str | None] = "audiofolder"
    input_column_key: ClassVar[str] = "audio_column"
    input_column_names: ClassVar[tuple[str, ...]] = ("audio", "file_name", "path")
    input_feature: ClassVar[type | None] = Audio
    input_is_file: ClassVar[bool] = True

    _models: AudioModels

    @property
    def _extractor(self) -> Any:
        return self._models.feature_extractor

    @property
    def _input_name(self) -> str:
        return self._extractor.model_input_names[0]  # input_values for wav2vec2/HuBERT/WavLM

    def prepare_dataset(self, dataset: Dataset) -> Dataset:
        # Paths/bytes only: we decode with soundfile, so no FFmpeg is needed and errors name the file.
        column = self.input_column
        feature = dataset.features[column]
        if isinstance(feature, Audio) and not feature.decode:
            return dataset
        if isinstance(feature, Value) and feature.dtype == "large_string":
            dataset = dataset.cast_column(column, Value("string"))  # arrow casts only string to Audio's struct
        return dataset.cast_column(column, Audio(decode=False))

    def decode(self, examples: dict[str, list[Any]], augment: bool) -> dict[str, list[Any]]:
        # Read and resampled once. The evaluation view is already the centre crop; the augmentation
        # source keeps the whole clip for random windows.
        rate, max_samples = self._models.sampling_rate, self._max_samples
        clips = [load_audio(cell, rate) for cell in examples[self.input_column]]
        if not augment:
            clips = [crop(clip, max_samples, train=False) for clip in clips]
        return {"samples": [clip.astype(np.float32).tobytes() for clip in clips]}

    def decode_signature(self, augment: bool) -> dict[str, Any]:
        return {
            "view": "train_source" if augment else "eval",
            "max_samples": None if augment else self._max_samples,
            "decoder": "soundfile+resample_poly",
            # Not used by decode itself, but by transform: the features a probe caches depend on it too.
            "extractor": self._extractor.to_dict(),
        }

    def transform(self, example: dict[str, Any], augment: bool, seed: int | None) -> dict[str, Any]:
        samples = np.frombuffer(example["samples"], dtype=np.float32)
        if augment:
            with seeded(seed):
                samples = crop(samples, self._max_samples, train=True)
        # One clip at a time: normalisation statistics come from the clip alone, never from padding.
        values = self._extractor(samples, sampling_rate=self._models.sampling_rate)[self._input_name][0]
        out: dict[str, Any] = {self._input_name: values}
        if "labels" in example:
            out["labels"] = example["labels"]
        return out

    def augmentation(self, augment: bool) -> str:
        seconds = f"{self.config.data.max_duration_s:g} s"
        return f"random {seconds} windows" if augment else f"none (the centred {seconds} window)"

    def probe_views(self, count: int | None) -> list[ProbeView]:
        """The centred window, then random windows of data.max_duration_s (time shifts; a clip no longer
        than that is the same in every view). By default (None) the centred window alone: the windows'
        gain is not measured (no pretrained audio model installs here)."""
        if count is None:
            return [EVALUATION_VIEW]
        window = (("max_samples", self._max_samples),)
        return [EVALUATION_VIEW] + [ProbeView(f"window {i}", True, window) for i in range(1, count)]

    @property
    def _max_samples(self) -> int:
        return max(1, int(round(self.config.data.max_duration_s * self._models.sampling_rate)))

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        name = self._input_name
        batch = self._extractor.pad(
            [{name: f[name]} for f in features],
            padding="longest",
            return_attention_mask=bool(getattr(self._extractor, "return_attention_mask", False)),
            return_tensors="pt",
        )
        out = {k: v for k, v in batch.items()}
        if "labels" in features[0]:
            out["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return out


class AudioCard(CardSnippets):
    """The transformers pipeline, fed arrays decoded with soundfile (no FFmpeg needed)."""

    pipeline_tag: ClassVar[str] = TASK
    folder_builder: ClassVar[str | None] = AudioInputs.folder_builder
    _models: AudioModels

    def usage_snippet(self, repo_id: str | None, labels: list[str], peft: bool, base_id: str | None) -> str:
        if peft:  # the pipeline over the adapted model, with the feature extractor saved beside the adapter
            folder = repo_id or LOCAL_FOLDER
            auto = "AutoModelForAudioClassification"
            code = (
                "import soundfile\n"
                + peft_transformers_code(auto, repo_id, labels, base_id, ", AutoFeatureExtractor, pipeline")
                + f'\nextractor = AutoFeatureExtractor.from_pretrained("{folder}")'
                # Merged: the pipeline takes a plain transformers model (it warns about a PeftModel).
                + f'\nclassifier = pipeline("{self.pipeline_tag}", model=model.merge_and_unload(), '
                "feature_extractor=extractor)"
            )
        else:
            code = "import soundfile\n" + pipeline_code(self.pipeline_tag, repo_id)
        # The array form: a file path would be decoded by the pipeline with FFmpeg.
        code += (
            '\n\nsamples, rate = soundfile.read("clip.wav", dtype="float32", always_2d=True)\n'
            'print(classifier({"raw": samples.mean(axis=1), "sampling_rate": rate}))  # channels mixed to mono'
        )
        seconds, rate = f"{self.config.data.max_duration_s:g} s", self._models.sampling_rate
        return (
            f"{python_block(code)}\n\nTrained on clips of at most {seconds} (evaluated on the centre crop); longer "
            "inputs are scored whole by the pipeline. Given a file path, the pipeline decodes it with FFmpeg, which "
            'must then be installed; given `{"raw": samples, "sampling_rate": rate}` (decoded with soundfile, '
            f"as above) it needs no FFmpeg, and resamples clips not at {rate} Hz with torchaudio."
        )


class AudioClassificationAdapter(TaskAdapter):
    """Audio classification with any AutoModelForAudioClassification model (wav2vec2 family)."""

    task: ClassVar[str] = TASK
    models_type: ClassVar[type[ModelIO]] = AudioModels
    inputs_type: ClassVar[type[InputCodec]] = AudioInputs
    card_type: ClassVar[type[CardSnippets]] = AudioCard
