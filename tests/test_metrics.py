"""The metrics every evaluation reports, counted with NumPy (issue 20: `sklearn.metrics` costs 1.5-2.5 s of
import per run), give scikit-learn's numbers, absent and never-predicted classes included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from hf_transfer.engine.evaluation import Predictions, classification_report
from hf_transfer.engine.metrics import classification_metrics

CASES = [
    ([0, 1, 2, 2, 1], [0, 2, 2, 2, 0], 3),
    ([0, 0, 0, 0], [1, 1, 1, 1], 4),  # classes 2 and 3 absent; no correct answer
    ([3, 3, 1], [3, 3, 1], 5),  # perfect on the classes present
    ([0], [0], 1),
]


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    num_labels = int(rng.integers(2, 12))
    refs = rng.integers(0, num_labels, size=int(rng.integers(1, 200)))
    preds = np.where(rng.random(len(refs)) < 0.5, refs, rng.integers(0, num_labels, size=len(refs)))
    return preds, refs, num_labels


@pytest.mark.parametrize("case", [*CASES, *map(_random_case, range(20))])
def test_accuracy_macro_f1_and_the_report_are_scikit_learns(case):
    preds, refs, num_labels = (np.asarray(v) if isinstance(v, list) else v for v in case)
    labels = list(range(num_labels))
    ours = classification_metrics(preds, refs, num_labels)
    assert ours["accuracy"] == pytest.approx(accuracy_score(refs, preds), abs=1e-12)
    expected_f1 = f1_score(refs, preds, labels=labels, average="macro", zero_division=0)
    assert ours["f1_macro"] == pytest.approx(expected_f1, abs=1e-12)

    logits = np.eye(num_labels, dtype=np.float32)[preds]  # argmax gives back `preds`
    report = classification_report(Predictions(logits=logits, references=refs), [f"c{i}" for i in labels])
    precision, recall, f1, support = precision_recall_fscore_support(
        refs, preds, labels=labels, average=None, zero_division=0
    )
    for i in labels:
        row = report["per_class"][f"c{i}"]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision[i], recall[i], f1[i]))
        assert row["support"] == support[i]
    assert report["confusion_matrix"] == confusion_matrix(refs, preds, labels=labels).tolist()
    assert report["metrics"]["loss"] == pytest.approx(
        float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(refs).long()))
    )


def test_no_examples_is_an_error_not_a_number():
    with pytest.raises(ValueError, match="at least one example"):
        classification_metrics(np.array([], dtype=int), np.array([], dtype=int), 3)
