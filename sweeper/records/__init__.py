"""What a study recorded, read back as plain objects: its trials' outcomes and best
(results), the confirmation over seeds (confirmation), and what an earlier study offers a
new one and what a warm-started study recorded (warm_start). The sweep and the confirmation
write these records; every view and command reads them; they import only settings."""

from sweeper.lazy import public_surface

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
        "enqueued_as",
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
    "warm_start": ["SourceStudy", "read_source", "task_differences"],
}
__all__, __getattr__ = public_surface(__name__, _SURFACE)
