"""What a person sees in the terminal after a study ran: :func:`trials_table` and
:func:`best_summary` back ``sweeper show`` and ``sweeper best``, :func:`confirmation_table`
``sweeper confirm``. (The progress while a study runs is sweeper.runtime.progress.)
"""

from __future__ import annotations

from typing import Any

import optuna

from sweeper.attributes import (
    BEST_CHECKPOINT_ATTR,
    BEST_STEP_ATTR,
    CHECKPOINT_STORE_ERROR_ATTR,
    EARLY_STOP_NOTE_ATTR,
    EARLY_STOPPED_AT_ATTR,
    FAILURE_ATTR,
    RESUME_FALLBACK_ATTR,
    RESUMED_FROM_STEP_ATTR,
    RETRIED_FROM_SYSTEM_ATTR,
    SLURM_ARRAY_TASK_ID_ATTR,
    SLURM_JOB_ID_ATTR,
    SLURM_RESTART_COUNT_ATTR,
    STOP_REASON_ATTR,
)
from sweeper.records.confirmation import (
    Confirmation,
    companion_name,
    spread_text,
    validation_quantity,
)
from sweeper.records.results import best_trial, enqueued_as, format_value, one_line
from sweeper.settings.hyperparameters import label


def _format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{label(name)}={format_value(value)}" for name, value in params.items())


def trials_table(study: optuna.Study) -> str:
    """The study's trials: number, state, params, best step, objective, and notes."""
    header = ["#", "state", "value", "best step", "params", "note"]
    rows = [header]
    for trial in study.get_trials(deepcopy=False):
        notes = []
        if (enqueued := enqueued_as(trial)) is not None:
            notes.append(enqueued)
        retried = trial.system_attrs.get(RETRIED_FROM_SYSTEM_ATTR)
        if retried is not None:
            notes.append(f"retry of #{retried}")
        if trial.user_attrs.get(RESUMED_FROM_STEP_ATTR):
            notes.append(f"resumed at step {trial.user_attrs[RESUMED_FROM_STEP_ATTR]}")
        if trial.user_attrs.get(STOP_REASON_ATTR):
            notes.append(str(trial.user_attrs[STOP_REASON_ATTR]))
        if trial.user_attrs.get(EARLY_STOPPED_AT_ATTR) is not None:
            # Complete, not pruned: it stopped improving, and is scored by its best evaluation.
            notes.append(
                one_line(
                    trial.user_attrs.get(EARLY_STOP_NOTE_ATTR)
                    or f"early-stopped at step {trial.user_attrs[EARLY_STOPPED_AT_ATTR]}"
                )
            )
        if trial.user_attrs.get(FAILURE_ATTR):
            notes.append(one_line(trial.user_attrs[FAILURE_ATTR]))
        if trial.user_attrs.get(RESUME_FALLBACK_ATTR):
            notes.append(one_line(f"resume: {trial.user_attrs[RESUME_FALLBACK_ATTR]}"))
        if trial.user_attrs.get(CHECKPOINT_STORE_ERROR_ATTR):
            notes.append(
                one_line(f"not resumable: {trial.user_attrs[CHECKPOINT_STORE_ERROR_ATTR]}")
            )
        if trial.user_attrs.get(SLURM_JOB_ID_ATTR):
            task = trial.user_attrs.get(SLURM_ARRAY_TASK_ID_ATTR)
            notes.append(
                f"slurm {trial.user_attrs[SLURM_JOB_ID_ATTR]}{'' if task is None else f'_{task}'} "
                f"run {trial.user_attrs.get(SLURM_RESTART_COUNT_ATTR, 0)}"
            )
        rows.append(
            [
                str(trial.number),
                trial.state.name,
                format_value(trial.value),
                format_value(trial.user_attrs.get(BEST_STEP_ATTR)),
                _format_params(trial.params),
                "; ".join(notes),
            ]
        )
    return "\n".join(_text_table(rows))


def _text_table(rows: list[list[str]]) -> list[str]:
    """Rows of cells as aligned columns, the first row a header underlined with dashes."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def best_summary(study: optuna.Study, metric: str) -> str:
    """``sweeper best``: the confirmed winner when ``sweeper confirm`` has run, else the
    sweep's best trial, said to be a single-seed validation score."""
    from sweeper.records.confirmation import (
        companion_name,
        load_confirmed_run,
        on_validation,
        spread_text,
    )

    confirmed = load_confirmed_run(study)
    if confirmed is not None:
        confirmation, trial = confirmed
        winner, run = confirmation.winning, confirmation.export_run
        lines = [
            f"confirmed winner: {winner.id} ({winner.name}'s configuration)  {metric}="
            f"{spread_text(winner.objective)} (validation, mean ± std over "
            f"{winner.objective.n} seeds; `sweeper confirm`, study {companion_name(study.study_name)!r})",
        ]
        if winner.test_accuracy is not None:
            lines.append(
                f"test accuracy={spread_text(winner.test_accuracy)}, test F1="
                f"{spread_text(winner.test_f1)}, test loss={spread_text(winner.test_loss)}"
            )
        lines += [
            "params:",
            *[f"  {name}: {format_value(value)}" for name, value in trial.params.items()],
            f"seed {run.seed}: the median {on_validation(metric)} of the winner's seeds "
            f"(trial #{run.trial} of {companion_name(study.study_name)}), what `sweeper export` "
            "exports",
            f"checkpoint: {run.best_checkpoint or '(none saved)'}",
            *[f"{c.verdict} on {c.quantity}" for c in confirmation.comparisons],
        ]
        return "\n".join(lines)
    best = best_trial(study)
    if best is None:
        return f"study {study.study_name!r} has no completed trial yet"
    lines = [
        f"best trial: #{best.number}  {metric}={format_value(best.value)} at step {best.user_attrs.get(BEST_STEP_ATTR)}",
        "params:",
        *[f"  {name}: {format_value(value)}" for name, value in best.params.items()],
        f"checkpoint: {best.user_attrs.get(BEST_CHECKPOINT_ATTR) or '(none saved)'}",
        f"(a single-seed validation score, not confirmed: `sweeper confirm {study.study_name}` "
        "re-trains the best configurations with fresh seeds)",
    ]
    return "\n".join(lines)


def confirmation_table(confirmation: Confirmation, test_split: str | None = None) -> str:
    """What ``sweeper confirm`` prints: one row per configuration, then the verdicts."""
    metric = confirmation.metric
    header = [
        "config",
        "name",
        f"selected {metric} (1 seed)",
        f"{validation_quantity(metric)} mean ± std",
        "validation accuracy",
        "test accuracy",
        "test F1",
        "test loss",
        "optimism",
    ]
    rows = [header]
    for config in confirmation.configs:
        mark = " (winner)" if config.id == confirmation.winner else ""
        rows.append(
            [
                config.id + mark,
                config.name,
                format_value(config.selected_value),
                spread_text(config.objective, format_value),
                spread_text(config.accuracy, format_value),
                spread_text(config.test_accuracy, format_value),
                spread_text(config.test_f1, format_value),
                spread_text(config.test_loss, format_value),
                format_value(config.optimism),
            ]
        )
    seeds = ", ".join(str(seed) for seed in confirmation.seeds)
    lines = [
        f"confirmation of study {confirmation.study!r}: {len(confirmation.configs)} "
        f"configuration(s) x {len(confirmation.seeds)} seeds ({seeds}); {confirmation.direction} "
        f"{metric}, mean ± std over seeds (sample std); validation = the kept (best) evaluation "
        f"of each run; test = {test_split or 'the test split'}, from the same checkpoint",
        *_text_table(rows),
        "optimism = the sweep's single-seed value that selected it minus its confirmed mean",
        "",
    ]
    for config in confirmation.configs:
        params = " ".join(f"{k}={format_value(v)}" for k, v in config.params.items())
        lines.append(f"{config.id}: {params}  (sweep trials {config.source_trials or '-'})")
    winner = confirmation.winning
    lines += [
        "",
        f"winner: {winner.id} ({winner.name}), the best mean {metric}; export uses its seed "
        f"{confirmation.export_seed} (trial #{confirmation.export_run.trial} of "
        f"{companion_name(confirmation.study)}), the median of its seeds",
    ]
    for comparison in confirmation.comparisons:
        lines.append(f"  {comparison.text(winner.id)}: {comparison.verdict}")
    lines += [f"note: {note}" for note in confirmation.notes]
    return "\n".join(lines)
