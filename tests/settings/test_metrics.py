"""Metrics: evaluate (modules loaded through evaluate.load) and scikit-learn agree, binary and
multi-class, and the metric registry."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from sweeper.settings import metrics
from sweeper.settings.metrics import (
    METRIC_NAMES,
    METRICS,
    OBJECTIVE_NAMES,
    build_compute_metrics,
    compute,
    f1_average,
    f1_display_name,
    metric,
)

# evaluate metric modules written for the tests (tests/support/evaluate_metrics/README.md), loaded by
# local path: offline.
SCRIPTS = Path(__file__).resolve().parents[1] / "support" / "evaluate_metrics"


@pytest.fixture(scope="module")
def evaluate_modules() -> dict[str, Any]:
    import evaluate

    return {
        name: evaluate.load(str(SCRIPTS / name), keep_in_memory=True) for name in ("accuracy", "f1")
    }


# (case, predictions, references, num_labels, accuracy, F1)
CASES = [
    ("binary, label 1 positive", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1], 2, 3 / 5, 2 / 3),
    ("binary, positive class never predicted", [0, 0, 0], [1, 0, 1], 2, 1 / 3, 0.0),
    ("binary, all label 0 (F1 undefined: 0.0)", [0, 0, 0], [0, 0, 0], 2, 1.0, 0.0),
    ("binary, all label 1", [1, 1], [1, 1], 2, 1.0, 1.0),
    ("binary, all predicted 1, all truly 0", [1, 1], [0, 0], 2, 0.0, 0.0),
    # per-label F1: 0 -> 1/2, 1 -> 2/3, 2 -> 1, macro = 13/18
    ("3-class macro", [0, 1, 2, 0, 1, 1], [0, 1, 2, 1, 0, 1], 3, 4 / 6, 13 / 18),
    ("3-class, one class only", [2, 2], [2, 2], 3, 1.0, 1.0),
    # label 2 in neither predictions nor references: macro over labels 0 and 1 only
    ("3-class, a label absent", [0, 1, 1], [0, 1, 0], 3, 2 / 3, 2 / 3),
    ("length 0", [], [], 2, math.nan, math.nan),
    ("length 0, 3-class", [], [], 3, math.nan, math.nan),
]
IDS = [case[0] for case in CASES]


def _same(value: float, expected: float) -> bool:
    return (math.isnan(value) and math.isnan(expected)) or value == pytest.approx(expected)


@pytest.mark.parametrize(
    ("case", "predictions", "references", "labels", "accuracy", "f1"), CASES, ids=IDS
)
def test_evaluate_and_sklearn_agree(
    evaluate_modules: dict[str, Any],
    case: str,
    predictions: list[int],
    references: list[int],
    labels: int,
    accuracy: float,
    f1: float,
) -> None:
    expected = {"accuracy": accuracy, "f1": f1}
    p, r = np.array(predictions, dtype=int), np.array(references, dtype=int)
    for name in METRIC_NAMES:
        with_sklearn = compute(metric(name), p, r, labels)
        with_evaluate = compute(metric(name), p, r, labels, evaluate_modules[name])
        assert _same(with_sklearn, expected[name]), (name, with_sklearn)
        assert _same(with_evaluate, expected[name]), (name, with_evaluate)


def test_evaluate_f1_is_called_with_the_sklearn_averaging(evaluate_modules: dict[str, Any]) -> None:
    # 3-class, where binary averaging would raise: the average is passed to evaluate too.
    p, r = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1])
    result = evaluate_modules["f1"].compute(predictions=p, references=r, average=f1_average(3))
    assert compute(metric("f1"), p, r, 3, evaluate_modules["f1"]) == result["f1"]


def test_undefined_f1_gives_no_warning() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compute(metric("f1"), np.zeros(3, int), np.zeros(3, int), 2) == 0.0


@pytest.mark.parametrize("use_evaluate", [True, False], ids=["evaluate", "scikit-learn"])
def test_build_compute_metrics_from_logits(
    monkeypatch: pytest.MonkeyPatch, evaluate_modules: dict[str, Any], use_evaluate: bool
) -> None:
    monkeypatch.setattr(
        metrics, "evaluate_modules", lambda: evaluate_modules if use_evaluate else None
    )
    logits = np.array([[2.0, 1.0], [0.1, 0.9], [0.3, 0.7], [1.0, 0.0]])
    prediction = SimpleNamespace(predictions=(logits,), label_ids=np.array([0, 1, 0, 1]))
    result = build_compute_metrics(2)(prediction)
    assert list(result) == list(METRIC_NAMES)
    assert result == {"accuracy": pytest.approx(0.5), "f1": pytest.approx(0.5)}


def test_evaluate_not_tried_when_only_the_hub_is_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE alone: evaluate would still wait on the network, so it is not loaded."""
    import evaluate
    from huggingface_hub import constants

    def no_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("evaluate.load must not be called")

    monkeypatch.setattr(evaluate, "load", no_load)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", False)
    metrics._evaluate_module.cache_clear()
    try:
        assert not metrics.evaluate_may_load()
        assert metrics.evaluate_modules() is None
        monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
        assert metrics.evaluate_may_load()  # evaluate's own offline mode fails fast
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", False)
        assert metrics.evaluate_may_load()
    finally:
        metrics._evaluate_module.cache_clear()


def test_a_failing_evaluate_load_falls_back_to_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    import evaluate

    def missing(*args: Any, **kwargs: Any) -> None:
        raise FileNotFoundError("no script")

    monkeypatch.setattr(evaluate, "load", missing)
    monkeypatch.setattr(metrics, "evaluate_may_load", lambda: True)
    metrics._evaluate_module.cache_clear()
    try:
        assert metrics.evaluate_modules() is None
    finally:
        metrics._evaluate_module.cache_clear()


def test_every_objective_metric_has_a_trainer_key_and_direction() -> None:
    assert OBJECTIVE_NAMES == ("validation_loss", "accuracy", "f1")
    for name in OBJECTIVE_NAMES:
        entry = metric(name)
        assert entry.trainer_key == "eval_" + ("loss" if name == "validation_loss" else name)
        assert entry.direction in ("minimize", "maximize")
        assert entry.title and entry.card_column and entry.prose
    assert metric("validation_loss").direction == "minimize"
    assert metric("validation_loss").computation is None
    assert METRIC_NAMES == ("accuracy", "f1")


def test_registry_names_are_unique() -> None:
    for field in ("name", "trainer_key", "card_column"):
        values = [getattr(m, field) for m in METRICS]
        assert len(values) == len(set(values)), field


def test_unknown_metric_name() -> None:
    with pytest.raises(
        ValueError, match=r"unknown metric 'precision'; expected one of \['validation_loss'"
    ):
        metric("precision")


def test_loss_is_not_computed_from_predictions() -> None:
    with pytest.raises(ValueError, match="computed by the Trainer"):
        compute(metric("validation_loss"), np.array([1]), np.array([1]), 2)


@pytest.mark.parametrize(
    ("labels", "average", "display"),
    [(2, "binary", "F1 (binary)"), (3, "macro", "F1 (macro)"), (20, "macro", "F1 (macro)")],
)
def test_f1_averaging(labels: int, average: str, display: str) -> None:
    assert f1_average(labels) == average
    assert f1_display_name(labels) == display
