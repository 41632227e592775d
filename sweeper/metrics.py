"""Accuracy and F1 for evaluation, computed locally so they work with no hub.

``evaluate.load`` fetches metric scripts from the hub and fails offline after a long wait;
where a script is already in the local ``evaluate`` cache it is used, otherwise the same
definitions are computed here with NumPy (accuracy = mean of exact matches; F1 of the
positive class, label 1, for two labels and macro-averaged F1 for more, as ``evaluate``'s
``f1`` with ``average="binary"`` or ``"macro"``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

METRIC_NAMES = ("accuracy", "f1")


def accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(np.mean(predictions == references)) if len(references) else float("nan")


def f1(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> float:
    labels = [1] if num_labels == 2 else list(range(num_labels))
    scores = []
    for label in labels:
        true_positive = np.sum((predictions == label) & (references == label))
        predicted = np.sum(predictions == label)
        actual = np.sum(references == label)
        denominator = predicted + actual
        scores.append(2.0 * true_positive / denominator if denominator else 0.0)
    return float(np.mean(scores))


def _cached_evaluate_metric(name: str) -> Any | None:
    """The ``evaluate`` metric when its script is already cached locally, else None."""
    try:
        from evaluate.config import HF_MODULES_CACHE
    except ImportError:
        return None
    cached = Path(HF_MODULES_CACHE) / "evaluate_modules" / "metrics" / f"evaluate-metric--{name}"
    if not cached.is_dir():
        return None
    try:
        import evaluate

        return evaluate.load(name)
    except Exception:  # a broken cache must not stop a sweep: fall back to the local definition
        return None


def build_compute_metrics(num_labels: int) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` for ``transformers.Trainer``: accuracy and F1 from logits."""
    evaluate_accuracy = _cached_evaluate_metric("accuracy")
    evaluate_f1 = _cached_evaluate_metric("f1")
    average = "binary" if num_labels == 2 else "macro"

    def compute_metrics(eval_prediction: Any) -> dict[str, float]:
        logits, references = eval_prediction.predictions, eval_prediction.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        predictions = np.argmax(logits, axis=-1)
        references = np.asarray(references)
        if evaluate_accuracy is not None and evaluate_f1 is not None:
            return {
                "accuracy": float(
                    evaluate_accuracy.compute(predictions=predictions, references=references)[
                        "accuracy"
                    ]
                ),
                "f1": float(
                    evaluate_f1.compute(
                        predictions=predictions, references=references, average=average
                    )["f1"]
                ),
            }
        return {
            "accuracy": accuracy(predictions, references),
            "f1": f1(predictions, references, num_labels),
        }

    return compute_metrics
