"""F1 as an `evaluate` module shipped with hf-transfer, so it loads without the Hub."""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = "F1: the harmonic mean of precision and recall; `average` as in scikit-learn."
_KWARGS = "predictions (list[int]), references (list[int]), labels, average ('binary'|'macro'|...), sample_weight."


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, labels=None, average="binary", sample_weight=None):
        score = f1_score(
            references, predictions, labels=labels, average=average, sample_weight=sample_weight, zero_division=0
        )
        return {"f1": score.tolist() if hasattr(score, "tolist") and getattr(score, "ndim", 0) else float(score)}
