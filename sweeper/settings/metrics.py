"""The metrics a sweep records, in one table, and how accuracy and F1 are computed.

``METRICS`` is the one place that says, for each metric: its name in the config and in a
trial's history, the Trainer's key for it, whether it is minimized or maximized, its axis
title, its model-card column, its name in prose and how it is computed. Adding a metric is
one entry in ``METRICS`` (plus, where it is computed from predictions, its ``Computation``).

Computation: with Hugging Face ``evaluate`` where its metric modules load, else with
scikit-learn. ``evaluate``'s ``accuracy`` and ``f1`` scripts call
``sklearn.metrics.accuracy_score`` and ``f1_score`` with the same keyword arguments, so both
give the same numbers. The Hub, where evaluate's scripts live, cannot be reached from the
test machines: ``tests/settings/test_metrics.py`` loads evaluate modules written for the tests
(counting, not scikit-learn) through ``evaluate.load`` and checks scikit-learn agrees.

When to try ``evaluate.load``: it reads only ``HF_EVALUATE_OFFLINE``
(``evaluate.config.HF_EVALUATE_OFFLINE``), not ``HF_HUB_OFFLINE``. Measured with evaluate
0.4.6 and an empty cache, loading ``"accuracy"``:

- ``HF_EVALUATE_OFFLINE=1``: fails at once (0.04 s; 3.4 s when the network swallows requests),
  or loads the script from evaluate's cache when it is there;
- ``HF_HUB_OFFLINE=1`` alone: evaluate still sends its requests (a download count to S3, a
  HEAD to the hub for each module type and revision) with 10 s timeouts: 1.6 s where the
  name does not resolve, 330 s where the network accepts connections and never answers.

So ``evaluate.load`` is tried when ``HF_EVALUATE_OFFLINE`` is set (fast, cache only) or when
nothing says offline (the user's stack is online and evaluate downloads its scripts); with
``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) alone it is not tried, and scikit-learn
computes the same definitions. Loading happens once per process.

Definitions, as ``evaluate`` defines them (it passes these to scikit-learn):

- accuracy: the fraction of predictions equal to the reference label;
- F1 with ``average="binary"`` for two labels (F1 of label 1, the positive class) and
  ``average="macro"`` for more (the unweighted mean of per-label F1 over the labels that
  occur in the references or the predictions; a label in neither does not count);
- where F1 is undefined (binary, and neither a true nor a predicted label 1) it is 0.0,
  scikit-learn's ``zero_division`` default that evaluate inherits; its
  ``UndefinedMetricWarning`` is silenced, since early in training it would repeat at every
  evaluation;
- no examples at all: every computed metric is NaN (scikit-learn and evaluate raise).
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

Direction = Literal["minimize", "maximize"]


@dataclass(frozen=True)
class Computation:
    """How a metric is computed from predicted and reference labels.

    ``evaluate.load(evaluate_module).compute(predictions=..., references=..., **options)``
    or ``sklearn.metrics.<sklearn_function>(references, predictions, **options)``: the
    evaluate module wraps that scikit-learn function and takes the same options. It is named,
    not imported: scikit-learn loads when a metric is computed, not with the settings (a
    worker process that only reads the configuration does not pay for it).
    """

    evaluate_module: str
    sklearn_function: str
    options: Callable[[int], dict[str, Any]]  # from the number of labels


@dataclass(frozen=True)
class Metric:
    name: str  # in the config (objective.metric) and in a trial's history rows
    trainer_key: str  # its key in the metrics of ``Trainer.evaluate``: "eval_loss", "eval_f1"
    direction: Direction  # the study's direction when this metric is the objective
    title: str  # axis title, with units
    card_column: str  # column in the results table of the Trainer's model card
    prose: str  # in sentences: "the lowest validation loss"
    hub_type: str  # the metric ``type`` of a model card's model-index on the Hub
    short: str  # on a progress bar
    computation: Computation | None  # None: the Trainer computes it (the loss)

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "maximize"


def f1_average(num_labels: int) -> Literal["binary", "macro"]:
    """F1 of label 1 for two labels, the macro average over labels for more."""
    return "binary" if num_labels == 2 else "macro"


def f1_display_name(num_labels: int) -> str:
    """``"F1 (binary)"`` or ``"F1 (macro)"``: F1 with the averaging used for this many labels."""
    return f"F1 ({f1_average(num_labels)})"


METRICS: tuple[Metric, ...] = (
    Metric(
        name="validation_loss",
        trainer_key="eval_loss",
        direction="minimize",
        # The Trainer's mean cross-entropy, natural log.
        title="validation loss (cross-entropy, nats)",
        card_column="Validation Loss",
        prose="validation loss",
        hub_type="loss",
        short="val_loss",
        computation=None,
    ),
    Metric(
        name="accuracy",
        trainer_key="eval_accuracy",
        direction="maximize",
        title="validation accuracy (fraction correct, 0–1)",
        card_column="Accuracy",
        prose="accuracy",
        hub_type="accuracy",
        short="acc",
        computation=Computation("accuracy", "accuracy_score", lambda num_labels: {}),
    ),
    Metric(
        name="f1",
        trainer_key="eval_f1",
        direction="maximize",
        title="validation F1 (0–1)",
        card_column="F1",
        prose="F1",
        hub_type="f1",
        short="f1",
        computation=Computation(
            "f1", "f1_score", lambda num_labels: {"average": f1_average(num_labels)}
        ),
    ),
)

# Every metric in METRICS can be the objective: each has a trainer key and a direction.
OBJECTIVE_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
# The metrics ``build_compute_metrics`` returns (the ones computed from predictions).
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS if m.computation is not None)

_BY_NAME = {m.name: m for m in METRICS}


def metric(name: str) -> Metric:
    """The metric called ``name``; a ``ValueError`` naming the known ones otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; expected one of {list(_BY_NAME)}") from None


def metric_title(name: str) -> str:
    """An axis title for the metric ``name`` (the name itself for one not in the table)."""
    entry = _BY_NAME.get(name)
    return entry.title if entry else name


def compute(
    entry: Metric,
    predictions: np.ndarray,
    references: np.ndarray,
    num_labels: int,
    module: Any | None = None,
) -> float:
    """``entry``'s value: with evaluate's loaded ``module`` when given, else with scikit-learn."""
    computation = entry.computation
    if computation is None:
        raise ValueError(f"{entry.name} is computed by the Trainer, not from predictions")
    if len(references) == 0:
        return math.nan
    options = computation.options(num_labels)
    import sklearn.metrics
    from sklearn.exceptions import UndefinedMetricWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        if module is not None:
            result = module.compute(predictions=predictions, references=references, **options)
            return float(result[computation.evaluate_module])
        function = getattr(sklearn.metrics, computation.sklearn_function)
        return float(function(references, predictions, **options))


def evaluate_may_load() -> bool:
    """Whether to try ``evaluate.load``: not when only ``HF_HUB_OFFLINE`` says offline, since
    evaluate ignores it and waits on the network (see the module docstring)."""
    try:
        import evaluate.config
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(evaluate.config.HF_EVALUATE_OFFLINE or not constants.HF_HUB_OFFLINE)


@functools.cache
def _evaluate_module(name: str) -> Any | None:
    """evaluate's module ``name``, or None where it is not tried or does not load."""
    if not evaluate_may_load():
        return None
    try:
        import evaluate

        # keep_in_memory: no Arrow cache files, which concurrent workers could share.
        return evaluate.load(name, keep_in_memory=True)
    except Exception as error:  # no script and no hub: scikit-learn computes the same
        logger.info("evaluate.load(%r) failed (%s); using scikit-learn", name, error)
        return None


def evaluate_modules() -> dict[str, Any] | None:
    """evaluate's modules for every computed metric, or None unless all of them load."""
    modules = {}
    for entry in METRICS:
        if entry.computation is not None:
            module = _evaluate_module(entry.computation.evaluate_module)
            if module is None:
                return None
            modules[entry.name] = module
    return modules


def build_compute_metrics(num_labels: int) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` for ``transformers.Trainer``: ``METRIC_NAMES`` from logits."""
    modules = evaluate_modules() or {}
    computed = [m for m in METRICS if m.computation is not None]

    def compute_metrics(eval_prediction: Any) -> dict[str, float]:
        logits, references = eval_prediction.predictions, eval_prediction.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        predictions = np.argmax(logits, axis=-1)
        references = np.asarray(references)
        return {
            m.name: compute(m, predictions, references, num_labels, modules.get(m.name))
            for m in computed
        }

    return compute_metrics
