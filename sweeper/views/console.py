"""What a person sees in the terminal: progress while a study runs, tables after.

:class:`StudyProgress` prints one line per finished trial (done / pruned / failed, best so
far); :class:`TrialProgressBar` draws a bar for the running trial; :func:`trials_table`
and :func:`best_summary` back ``sweeper show`` and ``sweeper best``.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from sweeper.attributes import (
    BASELINE_ATTR,
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
from sweeper.settings.hyperparameters import label
from sweeper.settings.metrics import METRICS
from sweeper.views.results import best_trial, count_states, format_value


def one_line(text: Any, limit: int = 160) -> str:
    """The first line of a stored reason, cut to ``limit`` characters, for a table cell."""
    lines = str(text or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{label(name)}={format_value(value)}" for name, value in params.items())


class StudyProgress:
    """An Optuna callback: after each trial, the study's tally and best value so far."""

    def __init__(self, metric: str, stream: TextIO | None = None):
        self.metric = metric
        self.stream = stream or sys.stdout

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        counts = count_states(study)
        best = best_trial(study)
        outcome = trial.state.name.lower()
        reason = trial.user_attrs.get(STOP_REASON_ATTR) or one_line(
            trial.user_attrs.get(FAILURE_ATTR)
        )
        detail = (
            f"{self.metric}={format_value(trial.value)}"
            if trial.value is not None
            else (reason or "")
        )
        if trial.user_attrs.get(EARLY_STOPPED_AT_ATTR) is not None:
            detail += f" (early-stopped at step {trial.user_attrs[EARLY_STOPPED_AT_ATTR]})"
        best_text = (
            f"best {self.metric}={format_value(best.value)} (trial {best.number})"
            if best
            else "no best yet"
        )
        print(
            f"[sweeper] trial {trial.number} {outcome}: {detail} | "
            f"complete {counts[TrialState.COMPLETE]}, pruned {counts[TrialState.PRUNED]}, "
            f"failed {counts[TrialState.FAIL]}, running {counts[TrialState.RUNNING]} | {best_text}",
            file=self.stream,
            flush=True,
        )


class TrialProgressBar(TrainerCallback):
    """A bar per trial: steps done out of planned, with the last validation loss."""

    def __init__(self, trial_number: int, position: int = 0):
        self.trial_number = trial_number
        self.position = position
        self.bar: Any = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.bar = tqdm(
            total=state.max_steps,
            initial=state.global_step,
            desc=f"trial {self.trial_number}",
            unit="step",
            position=self.position,
            leave=False,
            dynamic_ncols=True,
        )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.bar is not None and metrics:
            self.bar.set_postfix(
                **{m.short: format_value(metrics.get(m.trainer_key)) for m in METRICS},
            )

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def trials_table(study: optuna.Study) -> str:
    """The study's trials: number, state, params, best step, objective, and notes."""
    header = ["#", "state", "value", "best step", "params", "note"]
    rows = [header]
    for trial in study.get_trials(deepcopy=False):
        notes = []
        if BASELINE_ATTR in trial.user_attrs:
            notes.append(f"baseline {trial.user_attrs[BASELINE_ATTR]}")
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
                format_params(trial.params),
                "; ".join(notes),
            ]
        )
    return "\n".join(text_table(rows))


def text_table(rows: list[list[str]]) -> list[str]:
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
    from sweeper.views.confirmation import (
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
