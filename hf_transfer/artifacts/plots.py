"""The pictures: a run's training/validation curves and confusion matrix (for its card), a backbone ranking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.atomic import atomic_path


def plot_curves(history: list[dict[str, Any]], train_loss: list[tuple[int, float]], path: Path) -> None:
    """Loss (training per step, validation per epoch) and validation accuracy / macro-F1, against steps."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    if train_loss:
        steps, values = zip(*train_loss, strict=True)
        left.plot(steps, values, color="tab:blue", alpha=0.6, linewidth=1, label="training loss")
    steps = [h["step"] for h in history]
    left.plot(steps, [h["loss"] for h in history], "o-", color="tab:red", label="validation loss")
    left.set(xlabel="optimizer step", ylabel="loss", title="Loss")
    left.legend()
    for key, style in (("accuracy", "o-"), ("f1_macro", "s--")):
        if history and key in history[0]:
            right.plot(steps, [h[key] for h in history], style, label=f"validation {key}")
    right.set(xlabel="optimizer step", ylim=(0, 1.02), title="Validation metrics")
    if right.lines:  # no evaluation yet: nothing to name
        right.legend(loc="lower right")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    _save(fig, path)


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path) -> None:
    """Counts with row-normalised shading (rows: true class, columns: predicted class): the per-class rates
    as colours, the counts as numbers. Drawn with matplotlib alone: scikit-learn's display would import
    `sklearn.metrics` (1.5-2.5 s) into every run for this one picture."""
    import numpy as np

    plt = _pyplot()
    counts = np.asarray(matrix)
    rates = counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None)
    side = min(2 + 0.45 * len(labels), 14)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(rates, interpolation="nearest", cmap="Blues", vmin=0, vmax=1)
    if len(labels) <= 30:  # numbers stay legible
        for (i, j), count in np.ndenumerate(counts):
            dark = rates[i, j] > 0.5  # light text on the dark cells
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    if len(labels) > 4:
        plt.setp(ax.get_xticklabels(), ha="right", rotation=45, rotation_mode="anchor")
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (validation)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    _save(fig, path)


def plot_comparison(names: list[str], accuracies: list[float], seconds: list[float], path: Path) -> None:
    """`hf-transfer compare`: validation accuracy and wall time per strategy, side by side."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.bar(names, accuracies, color="tab:blue")
    left.set(ylim=(0, 1.02), ylabel="validation accuracy", title="Accuracy")
    right.bar(names, seconds, color="tab:orange")
    right.set(ylabel="seconds", title="Wall time")
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_ranking(
    names: list[str], logme: list[float | None], accuracy: dict[str, list[float | None]], path: Path
) -> None:
    """Candidates top to bottom in ranking order: LogME on the left, validation accuracies (one bar per
    kind, e.g. the probe's and the fine-tuned model's) on the right. Missing values leave no bar."""
    import numpy as np

    plt = _pyplot()
    shown = lambda values: [np.nan if v is None else v for v in values]  # noqa: E731
    rows = np.arange(len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 1.6 + 0.45 * len(names)), sharey=True)
    # Only LogME's order and gaps mean something (a log-likelihood, no natural zero): points, not bars.
    values = np.array(shown(logme), dtype=float)
    if np.isfinite(values).any():
        low, high = np.nanmin(values), np.nanmax(values)
        start = low - 0.15 * (high - low or 1.0)
        left.hlines(rows, start, values, color="tab:blue", alpha=0.4)
        left.plot(values, rows, "o", color="tab:blue")
        left.set_xlim(start, high + 0.15 * (high - low or 1.0))
    left.set_yticks(rows, names)
    left.invert_yaxis()  # the best on top
    left.set(xlabel="LogME (higher is better)", title="Transferability, no training")
    height = 0.8 / max(1, len(accuracy))
    for i, (kind, values) in enumerate(accuracy.items()):
        right.barh(rows - 0.4 + height * (i + 0.5), shown(values), height, label=kind)
    right.set(xlabel="validation accuracy", xlim=(0, 1.02), title="Accuracy")
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.6 / len(names)), ncol=len(accuracy), fontsize=8)
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")  # long labels stay inside
    plt.close(fig)
