"""Predictions over a dataset and the full classification report (per-class scores, confusion matrix).

One loop (`gather_logits`) serves the engine's evaluation every epoch, `hf-transfer evaluate` and
`load_run(...).predict`: the adapter's eval preprocessing, its collate and its `logits`, so every
number agrees with metrics.json.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..data.pipeline import ExampleView
from .metrics import classification_metrics, confusion_counts, named_metrics, per_class_scores

if TYPE_CHECKING:
    from accelerate import Accelerator
    from datasets import Dataset

    from ..adapters.base import TaskAdapter


@dataclass
class Predictions:
    logits: np.ndarray  # [n, num_labels], float32
    references: np.ndarray | None  # [n] integer labels, when the data has a `labels` column

    @property
    def probabilities(self) -> np.ndarray:
        return torch.from_numpy(self.logits).softmax(-1).numpy()

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(-1)


def predict_dataset(
    model: nn.Module,
    adapter: TaskAdapter,
    dataset: Dataset,
    batch_size: int = 32,
    accelerator: Accelerator | None = None,
    origin: str | None = None,
) -> Predictions:
    """Logits for every row of a prepared dataset (`adapter.inputs.prepare_dataset` applied), decoded and
    transformed exactly as the engine's evaluation does it. `origin` names where its rows come from, for
    the error on a row that cannot be decoded.

    With an accelerator, each process predicts its shard and gather_for_metrics reassembles the whole
    set in order (call it on every process); without one, everything runs here on the model's device.
    """
    view = ExampleView(dataset, adapter.inputs, augment=False, decoded=False, origin=origin)
    loader = DataLoader(view, batch_size=batch_size, shuffle=False, collate_fn=adapter.inputs.collate)
    if accelerator is not None:
        loader = accelerator.prepare_data_loader(loader)
    return gather_logits(model, adapter.models.logits, loader, accelerator)


@torch.no_grad()
def gather_logits(
    model: nn.Module,
    logits_fn: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor],
    loader: DataLoader,
    accelerator: Accelerator | None = None,
) -> Predictions:
    """The evaluation loop, shared by the engine and inference: eval mode, `logits_fn` (the adapter's
    `logits`), and gather_for_metrics so samples duplicated by sharding are dropped."""
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    model.eval()
    all_logits, references = [], []
    for batch in loader:
        labels = batch.pop("labels", None)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        if accelerator is not None:
            with accelerator.autocast():
                logits = logits_fn(model, batch).float()
            logits, labels = accelerator.gather_for_metrics((logits, labels))
        else:
            logits = logits_fn(model, batch).float()
        all_logits.append(logits.cpu())
        if labels is not None:
            references.append(labels.cpu())
    return Predictions(
        logits=torch.cat(all_logits).numpy(),
        references=torch.cat(references).numpy() if references else None,
    )


def summary_metrics(predictions: Predictions, num_labels: int, extra: Sequence[str] = ()) -> dict[str, float]:
    """accuracy, f1_macro and the mean cross-entropy loss, then the `evaluate` metrics named in `extra`
    (train.extra_metrics): what metrics.json reports."""
    if predictions.references is None:
        raise ValueError("metrics need references (a `labels` column)")
    refs = predictions.references
    metrics = classification_metrics(predictions.predicted, refs, num_labels=num_labels)
    metrics["loss"] = float(F.cross_entropy(torch.from_numpy(predictions.logits), torch.from_numpy(refs).long()))
    return metrics | named_metrics(extra, predictions.predicted, refs, reported=list(metrics))


def learned_nothing(report: dict[str, Any]) -> str | None:
    """A warning when the model's validation accuracy in `report` (a `classification_report`) is no better
    than always answering the most frequent validation class: whatever the run printed, it learned nothing."""
    supports = {name: r["support"] for name, r in report["per_class"].items()}
    total = sum(supports.values())
    if total == 0 or sum(1 for n in supports.values() if n) < 2:
        return None  # one class in the validation set: the baseline is perfect, no comparison says anything
    majority = max(supports, key=supports.get)
    share, accuracy = supports[majority] / total, report["metrics"]["accuracy"]
    if accuracy > share + 1e-9:
        return None
    return (
        f"The best model is no better than always answering {majority!r}, the most frequent validation class "
        f"(accuracy {accuracy:.4f} vs {share:.4f}): it has not learned the task. Lower train.lr by 10x, raise "
        "train.warmup_ratio or train.epochs; with LoRA, check lora.target_modules."
    )


def classification_report(predictions: Predictions, labels: list[str]) -> dict[str, Any]:
    """accuracy, f1_macro and loss as the engine reports them, plus per-class precision/recall/F1/support
    and the confusion matrix (rows: true class, columns: predicted class)."""
    metrics = summary_metrics(predictions, len(labels))
    refs, preds = predictions.references, predictions.predicted
    confusion = confusion_counts(preds, refs, len(labels))
    precision, recall, f1, support = per_class_scores(confusion)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(labels)
    }
    return {
        "metrics": metrics,
        "num_examples": len(refs),
        "per_class": per_class,
        "labels": list(labels),
        "confusion_matrix": confusion.tolist(),
    }
