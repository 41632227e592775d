"""What a study found, read back from its storage: the one summary that the report, the
card, the export, the notebook and the terminal all read.

Values come from what the study stores: each trial's evaluation ``history``, ``best_step``,
``planned_steps`` and ``train_seconds``, and the study's ``config`` and ``objective_metric``.
:func:`summarize` is the entry point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeper.config import StudyConfig, stored_config


def count_states(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no trial has completed yet
        return None


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return (
            f"{value:.3g}"
            if abs(value) < 1e-2 and value != 0
            else f"{value:.4f}".rstrip("0").rstrip(".")
        )
    return str(value)


@dataclass(frozen=True)
class StudySummary:
    """The numbers at the top of the report and in the model card."""

    name: str
    metric: str
    direction: str
    counts: dict[str, int]
    best: FrozenTrial | None
    baselines: list[FrozenTrial]
    train_seconds: float
    eval_seconds: float
    saved_seconds: float
    saved_trials: int
    # Steps the stopped trials did not run, out of the steps they planned.
    saved_steps: int
    planned_steps_stopped: int
    config: StudyConfig  # as stored when the study was created, validated again


def objective_metric(study: optuna.Study) -> str:
    return str(study.user_attrs.get("objective_metric", "validation_loss"))


def history(trial: FrozenTrial) -> list[dict[str, Any]]:
    rows = trial.user_attrs.get("history") or []
    return [row for row in rows if isinstance(row, dict) and row.get("step") is not None]


def steps_run(trial: FrozenTrial) -> int:
    """The last evaluated step: a trial is only ever stopped right after an evaluation."""
    return max((int(row["step"]) for row in history(trial)), default=0)


def planned_steps(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get("planned_steps") or 0)


def steps_saved(trial: FrozenTrial) -> int:
    """Steps a pruned trial planned but did not run."""
    if trial.state != TrialState.PRUNED:
        return 0
    return max(planned_steps(trial) - steps_run(trial), 0)


def seconds_saved(trial: FrozenTrial) -> float:
    """Training time a pruned trial did not spend: its unrun steps at its own pace."""
    ran, saved = steps_run(trial), steps_saved(trial)
    seconds = float(trial.user_attrs.get("train_seconds") or 0.0)
    if ran <= 0 or saved <= 0:
        return 0.0
    return saved * seconds / ran


def validation_losses(trial: FrozenTrial, metric: str) -> list[tuple[int, float | None]]:
    """(step, validation loss) of each evaluation. A running trial has no stored history
    yet, but when the objective is the validation loss its reported values are the curve."""
    rows = history(trial)
    if rows:
        return [(int(row["step"]), row.get("validation_loss")) for row in rows]
    if trial.state == TrialState.RUNNING and metric == "validation_loss":
        return sorted((int(step), value) for step, value in trial.intermediate_values.items())
    return []


def kept_evaluation(trial: FrozenTrial) -> dict[str, Any] | None:
    """The evaluation whose checkpoint the trial kept (its best by the objective)."""
    best_step = trial.user_attrs.get("best_step")
    for row in history(trial):
        if row["step"] == best_step:
            return row
    return None


def summarize(study: optuna.Study) -> StudySummary:
    trials = study.get_trials(deepcopy=False)
    by_state = count_states(study)
    counts = {
        "complete": by_state[TrialState.COMPLETE],
        "pruned": by_state[TrialState.PRUNED],
        "failed": by_state[TrialState.FAIL],
        "running": by_state[TrialState.RUNNING],
        "waiting": by_state[TrialState.WAITING],
    }
    pruned = [trial for trial in trials if trial.state == TrialState.PRUNED]
    saved = [seconds_saved(trial) for trial in pruned]
    return StudySummary(
        name=study.study_name,
        metric=objective_metric(study),
        direction=study.direction.name.lower(),
        counts=counts,
        best=best_trial(study),
        baselines=[trial for trial in trials if "baseline" in trial.user_attrs],
        train_seconds=sum(float(t.user_attrs.get("train_seconds") or 0.0) for t in trials),
        eval_seconds=sum(float(t.user_attrs.get("eval_seconds") or 0.0) for t in trials),
        saved_seconds=sum(saved),
        saved_trials=sum(1 for trial in pruned if steps_saved(trial) > 0),
        saved_steps=sum(steps_saved(trial) for trial in pruned),
        planned_steps_stopped=sum(planned_steps(trial) for trial in pruned),
        config=stored_config(study.study_name, study.user_attrs),
    )


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
