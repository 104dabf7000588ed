"""Classification metrics through `evaluate`.

`evaluate.load("accuracy")` fetches a script from the Hub, so the two metrics every run reports
ship with the package as local evaluate modules; any other Hub metric name still works online.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import evaluate
import numpy as np

_SHIPPED = Path(__file__).parent / "metric_modules"


@cache
def load_metric(name: str) -> evaluate.EvaluationModule:
    local = _SHIPPED / name
    return evaluate.load(str(local) if local.is_dir() else name)


def classification_metrics(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> dict[str, float]:
    """accuracy and macro-F1 over all classes of the label set (absent classes count as F1 = 0)."""
    labels = list(range(num_labels))
    accuracy = load_metric("accuracy").compute(predictions=predictions, references=references)["accuracy"]
    f1 = load_metric("f1").compute(predictions=predictions, references=references, labels=labels, average="macro")
    return {"accuracy": float(accuracy), "f1_macro": float(f1["f1"])}
