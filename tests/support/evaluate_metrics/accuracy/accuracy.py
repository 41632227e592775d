"""Accuracy as an ``evaluate`` metric module, written for sweeper's tests.

evaluate's own metric scripts live on the Hugging Face Hub, which the test machines cannot
reach. This module has the same interface (``evaluate.load`` of its folder, then
``compute(predictions=..., references=...)`` returning ``{"accuracy": ...}``) and computes
the documented definition by counting, independently of scikit-learn, so the tests compare
two implementations through evaluate's real loading and computing machinery.
"""

import datasets
import evaluate


class Accuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="The fraction of predictions equal to their reference label.",
            citation="",
            inputs_description="predictions, references: integer class labels",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions: list[int], references: list[int]) -> dict[str, float]:
        matches = sum(
            1 for predicted, true in zip(predictions, references, strict=True) if predicted == true
        )
        return {"accuracy": matches / len(references)}
