"""What a study recorded, read back as plain objects: its trials' outcomes and best
(results) and the confirmation over seeds (confirmation). The sweep and the confirmation
write these records; every view and command reads them; they import only settings."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweeper.records.confirmation import (
        Comparison,
        Confirmation,
        ConfirmedConfig,
        Run,
        SplitScores,
        Spread,
        companion_name,
        describe_test_split,
        load_confirmation,
        load_confirmed_run,
        on_validation,
        spread_text,
        validation_quantity,
    )
    from sweeper.records.results import (
        StudySummary,
        best_trial,
        count_states,
        early_stopped_at,
        format_duration,
        format_value,
        history,
        kept_evaluation,
        objective_metric,
        one_line,
        planned_steps,
        stopped_comparisons,
        summarize,
        validation_losses,
    )

# What the other packages use, by the module that defines it; anything else in the
# package is its own business (tests/test_layers.py keeps this true).
_SURFACE = {
    "confirmation": [
        "Comparison",
        "Confirmation",
        "ConfirmedConfig",
        "Run",
        "SplitScores",
        "Spread",
        "companion_name",
        "describe_test_split",
        "load_confirmation",
        "load_confirmed_run",
        "on_validation",
        "spread_text",
        "validation_quantity",
    ],
    "results": [
        "StudySummary",
        "best_trial",
        "count_states",
        "early_stopped_at",
        "format_duration",
        "format_value",
        "history",
        "kept_evaluation",
        "objective_metric",
        "one_line",
        "planned_steps",
        "stopped_comparisons",
        "summarize",
        "validation_losses",
    ],
}
_HOME = {name: module for module, names in _SURFACE.items() for name in names}
__all__ = [
    "Comparison",
    "Confirmation",
    "ConfirmedConfig",
    "Run",
    "SplitScores",
    "Spread",
    "StudySummary",
    "best_trial",
    "companion_name",
    "count_states",
    "describe_test_split",
    "early_stopped_at",
    "format_duration",
    "format_value",
    "history",
    "kept_evaluation",
    "load_confirmation",
    "load_confirmed_run",
    "objective_metric",
    "on_validation",
    "one_line",
    "planned_steps",
    "spread_text",
    "stopped_comparisons",
    "summarize",
    "validation_losses",
    "validation_quantity",
]


def __getattr__(name: str) -> Any:
    """Loaded on first use, so importing one module of the package loads no other."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
