"""Classification metrics: accuracy and macro-F1 with scikit-learn at every evaluation, and the metrics a
user names in `train.extra_metrics` through `evaluate` (a Hub metric, or a local module folder).

scikit-learn for the two every run reports: they run at every evaluation, and an `evaluate` module
builds an Arrow table per call (about 0.2 s each) for the same two numbers. `evaluate` is imported
only when a run asks for a metric by name (importing it takes seconds).
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
    from sklearn.metrics import accuracy_score, f1_score

    labels = list(range(num_labels))
    f1 = f1_score(references, predictions, labels=labels, average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(references, predictions)), "f1_macro": float(f1)}


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
