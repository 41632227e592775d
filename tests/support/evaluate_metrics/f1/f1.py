"""F1 as an ``evaluate`` metric module, written for sweeper's tests (see accuracy.py for why).

``average="binary"``: the F1 of ``pos_label`` (default 1). ``average="macro"``: the mean F1 of
every label that occurs in the predictions or the references. A label with no true and no
predicted example has F1 0 (scikit-learn's ``zero_division`` default). Counted here by hand,
independently of scikit-learn.
"""

import datasets
import evaluate


def _label_f1(predictions: list[int], references: list[int], label: int) -> float:
    true_positive = sum(
        1
        for predicted, true in zip(predictions, references, strict=True)
        if predicted == true == label
    )
    predicted = sum(1 for value in predictions if value == label)
    actual = sum(1 for value in references if value == label)
    return 2.0 * true_positive / (predicted + actual) if predicted + actual else 0.0


class F1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="The harmonic mean of precision and recall, per label or averaged.",
            citation="",
            inputs_description="predictions, references: integer class labels; average, pos_label",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(
        self,
        predictions: list[int],
        references: list[int],
        average: str = "binary",
        pos_label: int = 1,
    ) -> dict[str, float]:
        if average == "binary":
            return {"f1": _label_f1(predictions, references, pos_label)}
        if average != "macro":
            raise ValueError(f"average={average!r}: this test module knows binary and macro")
        labels = sorted(set(predictions) | set(references))
        scores = [_label_f1(predictions, references, label) for label in labels]
        return {"f1": sum(scores) / len(scores)}
