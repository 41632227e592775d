"""Progress while a study runs: :class:`StudyProgress` prints one line per finished trial
(complete / pruned / failed, the tally and the best so far); :class:`TrialProgressBar` draws
a bar for the running trial."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from sweeper.attributes import EARLY_STOPPED_AT_ATTR, FAILURE_ATTR, STOP_REASON_ATTR
from sweeper.records.results import best_trial, count_states, format_value, one_line
from sweeper.settings.metrics import METRICS


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
