"""What a study found, read back from its storage: the one summary that the report, the
card, the export, the notebook and the terminal all read.

Values come from what the study stores: each trial's evaluation ``history``, ``best_step``,
``planned_steps`` and ``train_seconds``, and the study's ``config`` and ``objective_metric``.
:func:`summarize` is the entry point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeper.attributes import (
    BASELINE_ATTR,
    BEST_STEP_ATTR,
    EARLY_STOPPED_AT_ATTR,
    EVAL_SECONDS_ATTR,
    EXAMPLES_PER_STEP_ATTR,
    HISTORY_ATTR,
    OBJECTIVE_METRIC_ATTR,
    PLANNED_STEPS_ATTR,
    TRAIN_SECONDS_ATTR,
)
from sweeper.records.warm_start import warm_start_record, warm_start_source
from sweeper.settings.config import StudyConfig
from sweeper.settings.stored import stored_config


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
    # The same in training examples, which mean the same at every batch size (0 for trials
    # stored before the history had examples).
    saved_examples: int = 0
    planned_examples_stopped: int = 0
    early_stopped: int = 0  # complete trials early_stopping ended before their planned end
    # Trials enqueued from earlier studies (warm start), and what the study recorded about
    # its sources when it was created (None without warm start).
    warm_started: list[FrozenTrial] = field(default_factory=list)
    warm_start: dict[str, Any] | None = None

    def enqueued(self) -> list[FrozenTrial]:
        """The baselines, then the warm-start trials: every trial not the sampler's draw."""
        return [*self.baselines, *self.warm_started]


def enqueued_as(trial: FrozenTrial) -> str | None:
    """What an enqueued trial stands for ("baseline card A", "warm start from imdb #4"), or
    None for a trial the sampler drew."""
    if BASELINE_ATTR in trial.user_attrs:
        return f"baseline {trial.user_attrs[BASELINE_ATTR]}"
    source = warm_start_source(trial)
    return f"warm start from {source}" if source is not None else None


def objective_metric(study: optuna.Study) -> str:
    return str(study.user_attrs.get(OBJECTIVE_METRIC_ATTR, "validation_loss"))


def history(trial: FrozenTrial) -> list[dict[str, Any]]:
    rows = trial.user_attrs.get(HISTORY_ATTR) or []
    return [row for row in rows if isinstance(row, dict) and row.get("step") is not None]


def steps_run(trial: FrozenTrial) -> int:
    """The last evaluated step: a trial is only ever stopped right after an evaluation."""
    return max((int(row["step"]) for row in history(trial)), default=0)


def planned_steps(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get(PLANNED_STEPS_ATTR) or 0)


def _steps_saved(trial: FrozenTrial) -> int:
    """Steps a pruned trial planned but did not run."""
    if trial.state != TrialState.PRUNED:
        return 0
    return max(planned_steps(trial) - steps_run(trial), 0)


def _seconds_saved(trial: FrozenTrial) -> float:
    """Training time a pruned trial did not spend: its unrun steps at its own pace."""
    ran, saved = steps_run(trial), _steps_saved(trial)
    seconds = float(trial.user_attrs.get(TRAIN_SECONDS_ATTR) or 0.0)
    if ran <= 0 or saved <= 0:
        return 0.0
    return saved * seconds / ran


def examples_per_step(trial: FrozenTrial) -> int:
    """Training examples per optimizer step (batch x accumulation); 0 when unknown."""
    stored = trial.user_attrs.get(EXAMPLES_PER_STEP_ATTR)
    if stored:
        return int(stored)
    for row in history(trial):
        if row.get("examples") and row["step"]:
            return int(row["examples"]) // int(row["step"])
    return 0


def examples_saved(trial: FrozenTrial) -> int:
    """Training examples a pruned trial planned but did not train on."""
    return _steps_saved(trial) * examples_per_step(trial)


def planned_examples(trial: FrozenTrial) -> int:
    return planned_steps(trial) * examples_per_step(trial)


def early_stopped_at(trial: FrozenTrial) -> int | None:
    """The step at which early_stopping ended a complete trial, if it did."""
    step = trial.user_attrs.get(EARLY_STOPPED_AT_ATTR)
    return int(step) if step is not None else None


def _stopped_where(trial: FrozenTrial) -> str:
    """Where a trial stopped, as its last evaluation row says: "320 examples (step 20)"."""
    rows = history(trial)
    if not rows:
        return "before its first evaluation"
    last = rows[-1]
    if last.get("examples") is not None:
        return f"{last['examples']} examples (step {last['step']})"
    return f"step {last['step']}"


@dataclass(frozen=True)
class StoppedComparison:
    """A pruned trial beside the study's best at the grid point where it was stopped."""

    trial: FrozenTrial
    grid_point: int  # the index both reported to Optuna (a step under evaluation.steps)
    where: str
    value: float
    winner_value: float | None  # None: the best trial never reported at that point

    def text(self, metric: str, winner_number: int) -> str:
        there = (
            f"vs the winner's (#{winner_number}) {format_value(self.winner_value)} there"
            if self.winner_value is not None
            else f"the winner (#{winner_number}) did not report there"
        )
        return (
            f"trial {self.trial.number} stopped at {self.where}: {metric} "
            f"{format_value(self.value)} {there}"
        )


def stopped_comparisons(study: optuna.Study) -> list[StoppedComparison]:
    """Each pruned trial's last reported value beside the best trial's at the same point."""
    best = best_trial(study)
    compared = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)):
        if not trial.intermediate_values:
            continue
        point = max(trial.intermediate_values)
        winner = best.intermediate_values.get(point) if best is not None else None
        compared.append(
            StoppedComparison(
                trial=trial,
                grid_point=point,
                where=_stopped_where(trial),
                value=float(trial.intermediate_values[point]),
                winner_value=float(winner) if winner is not None else None,
            )
        )
    return compared


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
    best_step = trial.user_attrs.get(BEST_STEP_ATTR)
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
    saved = [_seconds_saved(trial) for trial in pruned]
    return StudySummary(
        name=study.study_name,
        metric=objective_metric(study),
        direction=study.direction.name.lower(),
        counts=counts,
        best=best_trial(study),
        baselines=[trial for trial in trials if BASELINE_ATTR in trial.user_attrs],
        train_seconds=sum(float(t.user_attrs.get(TRAIN_SECONDS_ATTR) or 0.0) for t in trials),
        eval_seconds=sum(float(t.user_attrs.get(EVAL_SECONDS_ATTR) or 0.0) for t in trials),
        saved_seconds=sum(saved),
        saved_trials=sum(1 for trial in pruned if _steps_saved(trial) > 0),
        saved_steps=sum(_steps_saved(trial) for trial in pruned),
        planned_steps_stopped=sum(planned_steps(trial) for trial in pruned),
        config=stored_config(study.study_name, study.user_attrs),
        saved_examples=sum(examples_saved(trial) for trial in pruned),
        planned_examples_stopped=sum(planned_examples(trial) for trial in pruned),
        early_stopped=sum(
            1
            for trial in trials
            if trial.state == TrialState.COMPLETE and early_stopped_at(trial) is not None
        ),
        warm_started=[trial for trial in trials if warm_start_source(trial) is not None],
        warm_start=warm_start_record(study),
    )


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def one_line(text: Any, limit: int = 160) -> str:
    """The first line of a stored reason, cut to ``limit`` characters, for a table cell."""
    lines = str(text or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
