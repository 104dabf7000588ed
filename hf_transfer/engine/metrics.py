"""Classification metrics: accuracy, macro-F1 and the per-class scores from one confusion matrix at every
evaluation, and the metrics a user names in `train.extra_metrics` through `evaluate` (a Hub metric, or a
local module folder).

The counts are NumPy's: scikit-learn gives the same numbers (tests/test_metrics.py compares them), but
importing `sklearn.metrics` takes 1.5-2.5 s of every run (issue 20), and an `evaluate` module builds an
Arrow table per call (about 0.2 s each) for the same two numbers. `evaluate` is imported only when a run
asks for a metric by name (importing it takes seconds).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from ..core.errors import ConfigError

if TYPE_CHECKING:
    import evaluate


def classification_metrics(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> dict[str, float]:
    """accuracy and macro-F1 over all classes of the label set (absent classes count as F1 = 0)."""
    references, predictions = np.asarray(references), np.asarray(predictions)
    if references.size == 0:
        raise ValueError("metrics need at least one example")
    _, _, f1, _ = per_class_scores(confusion_counts(predictions, references, num_labels))
    return {"accuracy": float(np.mean(predictions == references)), "f1_macro": float(f1.mean())}


def confusion_counts(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> np.ndarray:
    """[num_labels, num_labels] counts, rows the true class, columns the predicted one; pairs with a label
    outside the label set are left out (as scikit-learn's confusion_matrix(labels=...) does)."""
    references, predictions = np.asarray(references, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    known = (references >= 0) & (references < num_labels) & (predictions >= 0) & (predictions < num_labels)
    pairs = references[known] * num_labels + predictions[known]
    return np.bincount(pairs, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def per_class_scores(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """precision, recall, F1 and support per class from `confusion_counts`; a score whose denominator is 0
    is 0 (scikit-learn's zero_division=0)."""
    true_positives = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)

    def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
        return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)

    f1 = ratio(2 * true_positives, (support + predicted).astype(np.float64))
    return ratio(true_positives, predicted), ratio(true_positives, support), f1, support


@cache
def load_metric(name: str) -> evaluate.EvaluationModule:
    """`evaluate.load(name)`: a Hub metric (its script is fetched once, then cached) or a local module folder.
    In memory: several processes computing the same metric never share cache files."""
    import evaluate
    from huggingface_hub import is_offline_mode

    try:
        return evaluate.load(name, keep_in_memory=True)
    except (OSError, ValueError) as err:  # FileNotFoundError when neither on disk nor on the Hub
        why = "HF_HUB_OFFLINE is set" if is_offline_mode() else f"{type(err).__name__}: {str(err).splitlines()[0]}"
        raise ConfigError(
            f"train.extra_metrics: the evaluate metric {name!r} cannot be loaded ({why}); give a metric name on "
            "the Hub (with the Hub reachable the first time) or the path of a local evaluate module folder."
        ) from None


def named_metrics(
    names: Sequence[str], predictions: np.ndarray, references: np.ndarray, reported: Sequence[str]
) -> dict[str, float]:
    """The numbers the `evaluate` metrics `names` return, by their own keys; `reported` are keys taken already."""
    out: dict[str, float] = {}
    for name in names:
        for key, value in load_metric(name).compute(predictions=predictions, references=references).items():
            if key in reported or key in out:
                raise ConfigError(
                    f"train.extra_metrics: {name!r} reports {key!r}, which is reported already; remove {name!r}."
                )
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ConfigError(
                    f"train.extra_metrics: {name!r} returns {key}={value!r}, not a number; only metrics that "
                    "return numbers can be reported."
                )
            out[key] = float(value)
    return out
