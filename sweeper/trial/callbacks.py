"""The Trainer callbacks of one trial, and the outcome they fill in (:class:`TrialOutcome`):
the evaluation history and the study's hook (:class:`EvaluationRecorder`), early stopping
(:class:`EarlyStopping`, transformers' own), a stop signal (:class:`StopOnRequest`), its
TensorBoard run (:class:`TensorBoardRun`) and the hand-over of each saved checkpoint to the
store, with what the store keeps at the trial's end (:class:`UploadOnSave`,
:func:`finish_uploads`)."""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import (
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_callback import EarlyStoppingCallback

from sweeper.settings.config import StudyConfig
from sweeper.settings.metrics import METRICS, metric
from sweeper.trial.checkpoints import (
    CHECKPOINT_PREFIX,
    TRAINER_STATE_FILE,
    BackgroundUploader,
    retry_store_call,
)
from sweeper.trial.grid import EvaluationGrid, EvaluationHook, NearChance


@dataclass
class TrialOutcome:
    history: list[dict[str, float | int | None]] = field(default_factory=list)
    best_value: float | None = None
    best_step: int | None = None
    best_checkpoint: str | None = None
    stop_reason: str | None = None
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    planned_steps: int = 0
    resumed_from_step: int = 0
    # Set when the worker was asked to stop: a checkpoint was saved at this step.
    interrupted_at_step: int | None = None
    # Set when early_stopping ended the trial ("stopped improving"): it is complete, not
    # pruned, and scored by its best evaluation like any other complete trial.
    early_stopped_at: int | None = None
    early_stop_note: str | None = None
    examples_per_step: int = 0
    # With a checkpoint store: why the trial stopped being resumable from it (None: it is),
    # and what its checkpoints cost (see benchmarks/checkpoints.py).
    store_error: str | None = None
    checkpoint_costs: dict[str, Any] = field(default_factory=dict)
    # What the trial trained and kept: parameters that took gradients and all of them (a
    # LoRA trial's adapters and kept modules against the base model's), the kept
    # checkpoint's bytes on disk, and the seconds each save took (after its evaluation).
    trainable_parameters: int = 0
    total_parameters: int = 0
    checkpoint_bytes: int | None = None
    save_seconds: list[float] = field(default_factory=list)


def _tensorboard() -> Any:
    """torch's TensorBoard writer module, else tensorboardX's, as transformers' own
    TensorBoardCallback picks them."""
    try:
        return importlib.import_module("torch.utils.tensorboard")
    except ImportError:
        return importlib.import_module("tensorboardX")


def tensorboard_dir(config: StudyConfig, run_name: str) -> Path:
    """Where a trial's TensorBoard run goes: ``tensorboard --logdir`` this folder's parent
    shows every trial of the study side by side."""
    return config.study_dir / "tensorboard" / run_name


class TensorBoardRun(TrainerCallback):
    """The trial's TensorBoard run in the study's folder, with its hyperparameters.

    transformers 5 has no ``logging_dir`` argument any more: its TensorBoardCallback writes
    to ``$TENSORBOARD_LOGGING_DIR`` or a dated folder under the checkpoint directory, or to
    the ``tb_writer`` it is given. :func:`build_trainer` gives it this run's writer. A retry
    writes to the same folder (TensorBoard reads every event file in it as one run), from
    ``purge_step``: scalars the dead run logged after the checkpoint the retry resumed from
    are dropped, not shown twice. The callback logs the trial's parameters, as the study
    names them, with TensorBoard's hparams summaries (the HParams tab); the Trainer itself
    logs the TrainingArguments as text ("args") and the scalars.
    """

    def __init__(self, log_dir: Path, params: dict[str, Any], resumed_from_step: int = 0):
        self.params = dict(params)
        self.writer = _tensorboard().SummaryWriter(
            log_dir=str(log_dir), purge_step=resumed_from_step + 1 if resumed_from_step else None
        )

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # The metrics the HParams tab shows next to the parameters: the Trainer's scalars
        # (only their names are written here; the values are the run's eval/* scalars).
        metrics = {f"eval/{m.trainer_key.removeprefix('eval_')}": 0.0 for m in METRICS}
        for summary in _tensorboard().summary.hparams(self.params, metrics):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()


class EvaluationRecorder(TrainerCallback):
    """Keeps the evaluation history, watches for NaN/inf and asks the study whether to stop."""

    def __init__(
        self,
        objective_key: str,
        maximize: bool,
        on_evaluation: EvaluationHook | None,
        grid: EvaluationGrid,
        near_chance: NearChance | None = None,
        resume_checkpoint_seconds: float = 0.0,
    ):
        self.objective_key = objective_key
        self.resume_checkpoint_seconds = resume_checkpoint_seconds
        self._last_save = time.monotonic()
        self._evaluated_at: float | None = None
        self.maximize = maximize
        self.on_evaluation = on_evaluation
        self.grid = grid
        self.near_chance = near_chance
        self.best_accuracy: float | None = None
        self.outcome = TrialOutcome(examples_per_step=grid.examples_per_step)
        self._training_loss: float | None = None

    def restore(self, log_history: list[dict[str, Any]]) -> None:
        """Carry on the history of the run a resumed checkpoint came from."""
        for entry in log_history:
            if "loss" in entry:
                self._training_loss = float(entry["loss"])
            if "eval_loss" in entry:
                step = int(entry.get("step", 0))
                self._record(step, float(entry.get("epoch") or 0.0), entry)
                value = entry.get(self.objective_key)
                if value is not None:
                    self._keep_if_best(float(value), step)

    def _record(self, step: int, epoch: float, metrics: dict[str, Any]) -> None:
        """One row of the cards' training-results table, with where it lies on the study's
        grid: the training examples seen and the grid point reported to the pruner."""
        self.outcome.history.append(
            {
                "step": step,
                "epoch": round(epoch, 4),
                "examples": self.grid.examples(step),
                "grid": self.grid.index(step, epoch),
                "training_loss": self._training_loss,
                **{m.name: metrics.get(m.trainer_key) for m in METRICS},
            }
        )
        # A row's training loss is the one logged since the previous row: an evaluation with
        # none (the extra one at the last step) shows "No log", as the Trainer's cards do.
        self._training_loss = None

    def _keep_if_best(self, value: float, step: int) -> None:
        best = self.outcome.best_value
        if best is None or (value > best if self.maximize else value < best):
            self.outcome.best_value, self.outcome.best_step = value, step

    def _save_if_needed(self, control: TrainerControl, step: int) -> None:
        """A checkpoint at this evaluation only when it is the trial's best so far (the one
        the trial keeps) or a retry's resume point is due (resume_checkpoint_minutes): a
        checkpoint holds the weights and the optimizer's state, three times the weights,
        the largest cost of a short trial outside training and evaluation (0.4 s a save on
        MiniLM on a 2-core CPU, docs/benchmarks/speed.md)."""
        if self.outcome.interrupted_at_step is not None:
            return  # a stop asked for this step's checkpoint: its retry resumes from it
        improved = self.outcome.best_step == step
        due = time.monotonic() - self._last_save >= self.resume_checkpoint_seconds
        if not (improved or due):
            control.should_save = False

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._last_save = time.monotonic()

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._last_save = time.monotonic()
        # The Trainer saves right after the evaluation's callbacks: this is the save's time.
        if self._evaluated_at is not None:
            self.outcome.save_seconds.append(round(self._last_save - self._evaluated_at, 4))
            self._evaluated_at = None

    def _stop(self, control: TrainerControl, reason: str) -> None:
        if self.outcome.stop_reason is None:
            self.outcome.stop_reason = reason
        control.should_training_stop = True
        if self.outcome.interrupted_at_step is None:  # a stop's checkpoint is still written
            control.should_save = False

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs and "loss" in logs:
            self._training_loss = float(logs["loss"])
            if not math.isfinite(self._training_loss):
                self._stop(
                    control,
                    f"diverged: training loss became {self._training_loss} at step {state.global_step}",
                )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # The last step is evaluated even when it falls between two evaluation steps, so no
        # trained step goes unscored. (With per-epoch evaluation the last step ends an epoch
        # and the Trainer evaluates it anyway.)
        between_evaluations = (
            args.eval_strategy == "steps"
            and args.eval_steps is not None
            and state.global_step % int(args.eval_steps) != 0
        )
        if state.global_step >= state.max_steps and between_evaluations:
            control.should_evaluate = True
            control.should_save = True

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not metrics:
            return
        self._evaluated_at = time.monotonic()
        self.outcome.eval_seconds += float(metrics.get("eval_runtime", 0.0))
        self._record(state.global_step, float(state.epoch or 0.0), metrics)
        value = metrics.get(self.objective_key)
        if (
            value is None
            or not math.isfinite(value)
            or not math.isfinite(metrics.get("eval_loss", 0.0))
        ):
            self._stop(
                control,
                f"diverged: validation loss became {metrics.get('eval_loss')} at step {state.global_step}",
            )
            return
        self._keep_if_best(float(value), state.global_step)
        self._save_if_needed(control, state.global_step)
        accuracy = metrics.get(metric("accuracy").trainer_key)
        if accuracy is not None and math.isfinite(accuracy):
            self.best_accuracy = max(self.best_accuracy or 0.0, float(accuracy))
        epoch = float(state.epoch or 0.0)
        point = self.grid.index(state.global_step, epoch)
        # Off the grid (the extra evaluation at a last step between grid points): no other
        # trial reports there, so the pruner is not asked.
        hook = self.on_evaluation
        if point is not None and hook is not None and hook(point, float(value)):
            where = self.grid.where(state.global_step, epoch)
            self._stop(control, f"pruned at {where} ({self.objective_key}={value:.4f})")
            return
        rule = self.near_chance
        # At the planned end the trial has finished anyway: nothing is stopped there.
        if (
            rule is not None
            and state.global_step < state.max_steps
            and rule.stops(state.global_step, state.max_steps, self.best_accuracy)
        ):
            where = self.grid.where(state.global_step, epoch)
            self._stop(
                control,
                f"near chance at {where} of {state.max_steps} planned steps: best accuracy "
                f"{self.best_accuracy or 0.0:.4f}, the majority class is "
                f"{rule.majority_rate:.4f} of validation (margin {rule.margin:g})",
            )


class EarlyStopping(EarlyStoppingCallback):
    """transformers' early stopping, which also says where and why it stopped the trial.

    It compares each evaluation with ``state.best_metric`` (the Trainer's best so far, by
    ``metric_for_best_model``, which :func:`build_training_arguments` sets). The best model
    is not loaded at the end (``load_best_model_at_end``): the trial keeps its best
    checkpoint and is scored by its best evaluation anyway, so the stock warning is not
    given. A trial the pruner or a divergence stopped at the same evaluation stays pruned.
    """

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float = 0.0):
        super().__init__(early_stopping_patience, early_stopping_threshold)
        self.recorder: EvaluationRecorder | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if args.metric_for_best_model is None:
            raise ValueError("early stopping needs metric_for_best_model")

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        best_before = state.best_metric
        super().on_evaluate(args, state, control, metrics, **kwargs)
        outcome = self.recorder.outcome if self.recorder is not None else None
        if (
            outcome is None
            or outcome.stop_reason is not None
            or outcome.early_stopped_at is not None
            or self.early_stopping_patience_counter < self.early_stopping_patience
            # At the planned end the trial finished anyway: nothing was stopped early.
            or state.global_step >= state.max_steps
        ):
            return
        grid = self.recorder.grid if self.recorder is not None else None
        where = (
            grid.where(state.global_step, float(state.epoch or 0.0))
            if grid
            else f"step {state.global_step}"
        )
        outcome.early_stopped_at = state.global_step
        threshold = (
            f" by more than {self.early_stopping_threshold:g}"
            if self.early_stopping_threshold
            else ""
        )
        outcome.early_stop_note = (
            f"early-stopped at {where} of {state.max_steps} planned: "
            f"{args.metric_for_best_model} did not improve on its best "
            f"({best_before:.4f}){threshold} for {self.early_stopping_patience} evaluations"
        )


class StopOnRequest(TrainerCallback):
    """Ends training at a step boundary, with a checkpoint, when the worker is told to stop."""

    def __init__(self, stop_requested: Callable[[], bool], outcome: TrialOutcome):
        self.stop_requested = stop_requested
        self.outcome = outcome

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.stop_requested() and self.outcome.interrupted_at_step is None:
            self.outcome.interrupted_at_step = state.global_step
            control.should_save = True
            control.should_training_stop = True


def local_checkpoint(output_dir: Path, checkpoint: str | None) -> Path | None:
    """The local folder of a kept checkpoint named by its path or its store URL."""
    step = _checkpoint_step(checkpoint)
    return None if step is None else output_dir / f"{CHECKPOINT_PREFIX}{step}"


def _checkpoint_step(path: str | Path | None) -> int | None:
    """The step of a ``.../checkpoint-<step>`` path or URL (None for none)."""
    if not path:
        return None
    suffix = str(path).rstrip("/").rsplit(CHECKPOINT_PREFIX, 1)[-1]
    return int(suffix) if suffix.isdigit() else None


class UploadOnSave(TrainerCallback):
    """At every save, hands the new checkpoint to the background uploader (a snapshot of
    hard links: the training thread does not wait for the store)."""

    def __init__(self, uploader: BackgroundUploader):
        self.uploader = uploader

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        checkpoint = Path(str(args.output_dir)) / f"{CHECKPOINT_PREFIX}{state.global_step}"
        if (checkpoint / TRAINER_STATE_FILE).is_file():
            best = _checkpoint_step(state.best_model_checkpoint)
            self.uploader.submit(checkpoint, state.global_step, best)


def finish_uploads(
    uploader: BackgroundUploader, outcome: TrialOutcome, output_dir: Path, completed: bool
) -> None:
    """What the store keeps of the trial: after a stop, its newest checkpoint (waited for:
    the scheduler's grace period bounds the wait); once complete, its best checkpoint only,
    which ``best_checkpoint`` then names by its URL. A pruned trial's are the janitor's."""
    stopped = outcome.interrupted_at_step is not None
    uploader.close(timeout=None if (completed or stopped) else 0)
    outcome.store_error = uploader.error
    outcome.checkpoint_costs = {
        "saves": len(uploader.submit_seconds),
        "submit_seconds": [round(value, 4) for value in uploader.submit_seconds],
        "upload_seconds": [round(value, 3) for value in uploader.upload_seconds],
        "bytes_uploaded": uploader.bytes_uploaded,
    }
    best_step = _checkpoint_step(outcome.best_checkpoint)
    if not (completed or stopped) or best_step is None:
        return
    delays = uploader.retry_delays()
    store = uploader.store
    local_best = output_dir / f"{CHECKPOINT_PREFIX}{best_step}"
    try:
        stored = retry_store_call(lambda: {int(m["step"]) for m in store.manifests()}, delays)
        if best_step not in stored and local_best.is_dir():
            # Collapsed away by a newer upload while it was the best, or given up while the
            # store was down: sent now (after a stop too: the retry elsewhere goes on
            # comparing against it).
            retry_store_call(lambda: store.upload(local_best, best_step), delays)
        if not completed:
            return
        if uploader.prune:
            retry_store_call(lambda: store.keep_only({best_step}), delays)
        outcome.best_checkpoint = store.checkpoint_url(best_step)
        # A complete trial needs no resume: with its best checkpoint stored, nothing is lost.
        outcome.store_error = None
    except Exception as error:  # the store's client raises its own families
        stored_before = best_step in uploader.uploaded
        outcome.store_error = uploader.error or (
            f"the store failed at the trial's end ({error}); its best checkpoint (step "
            f"{best_step}) {'was stored before, but' if stored_before else 'was not stored, and'}"
            " best_checkpoint names this machine's copy"
        )
