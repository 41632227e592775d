"""One trial: a seeded ``transformers.Trainer`` fine-tuning with given hyperparameters.

:func:`train_trial` is the entry point. It knows nothing of Optuna: it calls
``on_evaluation(grid_point, value)`` after every evaluation that falls on the study's
evaluation grid (:class:`EvaluationGrid`) and stops when that returns True, which is how the
study's pruner reaches in ("worse than the others"). The study's ``early_stopping`` rule
("stopped improving") is transformers' own ``EarlyStoppingCallback``. It returns the trial's
evaluation history in the model cards' form, its best evaluation (not its last: the cards
peaked early), where the best checkpoint is, and why it stopped early if it did.
"""

from __future__ import annotations

import collections
import gc
import importlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import SequentialSampler
from transformers import (
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    set_seed,
)
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import EarlyStoppingCallback, PrinterCallback, ProgressCallback

from sweeper.settings.config import StudyConfig
from sweeper.settings.hyperparameters import training_arguments
from sweeper.settings.metrics import METRICS, build_compute_metrics, metric
from sweeper.trial.checkpoints import (
    CHECKPOINT_PREFIX,
    TRAINER_STATE_FILE,
    BackgroundUploader,
    TrialStore,
    remove_checkpoints,
    retry_store_call,
)
from sweeper.trial.data import PreparedData
from sweeper.trial.models import load_classifier
from sweeper.trial.speed import apply_tf32, configure_compile, resolve_speed

EvaluationHook = Callable[[int, float], bool]
# An epoch counts as ended when state.epoch is this close to a whole number.
EPOCH_TOLERANCE = 1e-4


@dataclass(frozen=True)
class EvaluationGrid:
    """Where a trial's evaluations fall on the study's common evaluation grid: the index a
    trial reports to the pruner, the same amount of training whatever its batch size.

    ``examples``: grid point k after k x ``evaluation.examples`` training examples (each step
    counted as a full batch x accumulation: an epoch's partial last batch counts as full);
    ``epoch``: the epoch number; ``steps``: the step itself. The extra evaluation at a last
    step between two grid points is off the grid (None): it counts for the trial's best
    value but is not reported, so the pruner never compares it with another trial's."""

    strategy: str
    examples_per_step: int
    examples_per_point: int | None = None

    @classmethod
    def of(cls, config: StudyConfig, params: dict[str, Any]) -> EvaluationGrid:
        return cls(
            strategy=config.evaluation.strategy,
            examples_per_step=config.examples_per_step(int(params["per_device_train_batch_size"])),
            examples_per_point=config.evaluation.examples,
        )

    @property
    def eval_steps(self) -> int | None:
        """The Trainer's eval_steps for this trial under ``examples`` (exact: the config
        checks that evaluation.examples is a multiple of every batch x accumulation)."""
        if self.strategy != "examples" or self.examples_per_point is None:
            return None
        return self.examples_per_point // self.examples_per_step

    def examples(self, step: int) -> int:
        return step * self.examples_per_step

    def index(self, step: int, epoch: float) -> int | None:
        if self.strategy == "examples" and self.examples_per_point:
            seen = self.examples(step)
            return seen // self.examples_per_point if seen % self.examples_per_point == 0 else None
        if self.strategy == "epoch":
            whole = round(epoch)
            return whole if whole >= 1 and abs(epoch - whole) < EPOCH_TOLERANCE else None
        return step

    def where(self, step: int, epoch: float) -> str:
        """A place in training in the cards' terms: "step 30 (480 examples, grid point 3)"."""
        point = self.index(step, epoch)
        if self.strategy == "examples":
            grid = f", grid point {point}" if point is not None else ", off the grid"
            return f"step {step} ({self.examples(step)} examples{grid})"
        if self.strategy == "epoch":
            return f"step {step} (epoch {round(epoch, 2):g}, {self.examples(step)} examples)"
        return f"step {step}"


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


def majority_rate(labels: Sequence[int]) -> float | None:
    """The share of the most frequent label (None for no labels): what near chance is
    measured from."""
    if not labels:
        return None
    return max(collections.Counter(int(label) for label in labels).values()) / len(labels)


@dataclass(frozen=True)
class NearChance:
    """``near_chance`` with the validation split's majority-class rate: a trial whose best
    accuracy is at most ``majority_rate + margin`` after ``at_fraction`` of its planned
    steps is stopped."""

    at_fraction: float
    margin: float
    majority_rate: float

    @classmethod
    def of(cls, config: StudyConfig, validation_labels: Sequence[int]) -> NearChance | None:
        rule = config.near_chance
        majority = majority_rate(validation_labels)
        if rule.at_fraction is None or majority is None:
            return None
        return cls(rule.at_fraction, rule.margin, majority)

    def stops(self, step: int, planned_steps: int, best_accuracy: float | None) -> bool:
        # No accuracy (none computed yet): nothing to judge the trial by.
        if best_accuracy is None or planned_steps <= 0 or step < self.at_fraction * planned_steps:
            return False
        return best_accuracy <= self.majority_rate + self.margin


def precision_flags(mode: str) -> dict[str, bool]:
    """Mixed precision for TrainingArguments: bf16 where the GPU has it, fp16 on older GPUs."""
    on_gpu = torch.cuda.is_available()
    if mode == "auto":
        mode = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if on_gpu else "no"
    return {"bf16": mode == "bf16", "fp16": mode == "fp16"}


def build_training_arguments(
    config: StudyConfig,
    params: dict[str, Any],
    output_dir: Path,
    *,
    extra: dict[str, Any] | None = None,
    run_name: str | None = None,
) -> TrainingArguments:
    """Searched params from the trial, fixed ones from the study file, as the model cards used.

    ``run_name`` names the trial's run in the tracking tools of ``training.report_to``."""
    training, evaluation = config.training, config.evaluation
    # examples is the Trainer's steps strategy at this trial's own step count.
    strategy = "steps" if evaluation.strategy == "examples" else evaluation.strategy
    interval: dict[str, Any] = {
        "eval_strategy": strategy,
        "save_strategy": strategy,
        # One training-loss log per evaluation gives the cards' "Training Loss" column; it
        # is also what reaches training.report_to: train/loss (with learning_rate and
        # grad_norm) at every evaluation, next to its eval/* scalars.
        "logging_strategy": strategy,
    }
    if strategy == "steps":
        every = EvaluationGrid.of(config, params).eval_steps or evaluation.steps
        interval |= {"eval_steps": every, "save_steps": every, "logging_steps": every}
    arguments: dict[str, Any] = {
        "output_dir": str(output_dir),
        # The trial's hyperparameters, each as its entry in sweeper.settings.hyperparameters says.
        **training_arguments(params),
        # Loader workers, pinned memory, eval batch, compilation: sweeper.trial.speed.
        **resolve_speed(training).training_arguments(),
        "adam_beta1": training.adam_beta1,
        "adam_beta2": training.adam_beta2,
        "adam_epsilon": training.adam_epsilon,
        "lr_scheduler_type": training.lr_scheduler_type,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "max_grad_norm": training.max_grad_norm,
        "metric_for_best_model": metric(config.objective.metric).trainer_key,
        "greater_is_better": config.objective.study_direction == "maximize",
        # Rotation keeps the best checkpoint and the latest one (to resume from) and deletes
        # older ones as training goes. Not 1: at the end of training the Trainer then deletes
        # every checkpoint but the best, including the one a stopped worker saved to resume.
        "save_total_limit": 2,
        "train_sampling_strategy": "group_by_length" if training.group_by_length else "random",
        "length_column_name": "length",
        # NaN must reach our callback; the default filter would hide it behind an average.
        "logging_nan_inf_filter": False,
        "report_to": training.report_to,
        "run_name": run_name,
        "disable_tqdm": True,
        **precision_flags(training.mixed_precision),
        **interval,
    }
    arguments |= extra or {}
    return TrainingArguments(**arguments)


class _SortedEvaluationTrainer(Trainer):
    """Evaluates the validation split in its stored order, longest reviews first.

    ``data.prepare_data`` sorts the validation split by length once, so consecutive rows pad
    to nearly the same length. (With ``group_by_length`` the stock Trainer regroups
    evaluation rows into random "megabatches" of a few batches each: on 500 IMDb reviews at
    256 tokens that computes 1.09x the tokens of this order.) The order does not change any
    metric, and the longest batch comes first, so an evaluation that would run out of memory
    does so at once.
    """

    def _get_eval_sampler(self, eval_dataset: Any) -> torch.utils.data.Sampler | None:
        if eval_dataset is None or not hasattr(eval_dataset, "__len__"):
            return super()._get_eval_sampler(eval_dataset)
        return SequentialSampler(eval_dataset)


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


def build_trainer(
    config: StudyConfig,
    params: dict[str, Any],
    data: PreparedData,
    model: Any,
    output_dir: Path,
    *,
    callbacks: Sequence[TrainerCallback] = (),
    run_name: str | None = None,
    resumed_from_step: int = 0,
) -> Trainer:
    """The Trainer of one trial: dynamic padding, length-grouped training batches and
    length-sorted evaluation, the study's metrics, and no console output of its own.

    ``run_name`` (default: the checkpoint directory's name) names the trial's run in the
    tracking tools of ``training.report_to``; ``resumed_from_step`` is the step a retry
    resumes from (see :class:`TensorBoardRun`)."""
    speed = resolve_speed(config.training)
    if speed.torch_compile:
        configure_compile(config.model.max_length, speed, str(config.compile_cache_dir))
    run_name = run_name or output_dir.name
    arguments = build_training_arguments(config, params, output_dir, run_name=run_name)
    # After the arguments: the Trainer's own TF32 switch (torch_compile with bf16 sets it)
    # leaves torch's two APIs disagreeing; this makes them agree, on or off.
    if speed.device == "gpu":
        apply_tf32(speed.tf32)
    trainer = _SortedEvaluationTrainer(
        model=model,
        args=arguments,
        train_dataset=data.train,
        eval_dataset=data.validation,
        processing_class=data.tokenizer,
        data_collator=DataCollatorWithPadding(
            data.tokenizer, pad_to_multiple_of=speed.pad_to_multiple_of
        ),
        compute_metrics=build_compute_metrics(data.num_labels),
        callbacks=list(callbacks),
    )
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if any(isinstance(c, TensorBoardCallback) for c in trainer.callback_handler.callbacks):
        run = TensorBoardRun(tensorboard_dir(config, run_name), params, resumed_from_step)
        trainer.remove_callback(TensorBoardCallback)
        trainer.add_callback(TensorBoardCallback(tb_writer=run.writer))
        trainer.add_callback(run)
    return trainer


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

    def _stop(self, control: TrainerControl, reason: str) -> None:
        if self.outcome.stop_reason is None:
            self.outcome.stop_reason = reason
        control.should_training_stop = True
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


def _local(output_dir: Path, checkpoint: str | None) -> Path | None:
    """The local folder of a kept checkpoint named by its path or its store URL."""
    step = checkpoint_step(checkpoint)
    return None if step is None else output_dir / f"{CHECKPOINT_PREFIX}{step}"


def checkpoint_step(path: str | Path | None) -> int | None:
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
            best = checkpoint_step(state.best_model_checkpoint)
            self.uploader.submit(checkpoint, state.global_step, best)


def _finish_uploads(
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
    best_step = checkpoint_step(outcome.best_checkpoint)
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


def release_memory() -> None:
    """Free what a finished trial held, so a long study does not grow."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _stoppers(
    config: StudyConfig,
    recorder: EvaluationRecorder,
    stop_requested: Callable[[], bool] | None,
) -> list[TrainerCallback]:
    """What may end a trial before its plan: a stop signal, and early stopping."""
    stoppers: list[TrainerCallback] = (
        [StopOnRequest(stop_requested, recorder.outcome)] if stop_requested else []
    )
    rule = config.early_stopping
    if rule.patience is not None:
        early = EarlyStopping(rule.patience, rule.min_delta)
        early.recorder = recorder
        stoppers.append(early)
    return stoppers


def _resume_from(
    checkpoint: Path, recorder: EvaluationRecorder, stoppers: Sequence[TrainerCallback]
) -> None:
    """A retry's history, step and early-stopping count, as its checkpoint left them."""
    state = json.loads((checkpoint / TRAINER_STATE_FILE).read_text())
    recorder.restore(state.get("log_history", []))
    recorder.outcome.resumed_from_step = int(state.get("global_step", 0))
    # A retry carries on counting evaluations without improvement where its checkpoint left
    # off. Not restore_callback_states_from_checkpoint: it replaces each stateful callback
    # (and the TrainerControl) with a new one built from its saved args, which would lose
    # this callback's link to the recorder.
    saved = (state.get("stateful_callbacks") or {}).get(EarlyStopping.__name__)
    for callback in stoppers:
        if isinstance(callback, EarlyStopping) and isinstance(saved, dict):
            counter = (saved.get("attributes") or {}).get("early_stopping_patience_counter")
            callback.early_stopping_patience_counter = int(counter or 0)


def train_trial(
    config: StudyConfig,
    params: dict[str, Any],
    data: PreparedData,
    output_dir: Path,
    *,
    on_evaluation: EvaluationHook | None = None,
    near_chance: NearChance | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    resume_from_checkpoint: Path | None = None,
    stop_requested: Callable[[], bool] | None = None,
    run_name: str | None = None,
    store_url: str | None = None,
) -> TrialOutcome:
    """Fine-tune the study's model with ``params`` and report every evaluation.

    With ``resume_from_checkpoint`` (a retried trial) training continues from that
    checkpoint's model, optimizer, scheduler, RNG and step, and the history carries on.
    When ``stop_requested()`` turns true, training stops at the next step with a checkpoint
    and ``interrupted_at_step`` set. ``run_name`` names the run in the tracking tools of
    ``training.report_to`` (a retry passes its first trial's, and continues that run).
    With ``store_url`` (the retry chain's prefix in an object store) every checkpoint is
    also uploaded there in the background, for a retry on any machine. With
    ``near_chance`` a trial still near chance part-way through its plan is stopped as pruned.
    """
    maximize = config.objective.study_direction == "maximize"
    recorder = EvaluationRecorder(
        metric(config.objective.metric).trainer_key,
        maximize,
        on_evaluation,
        EvaluationGrid.of(config, params),
        near_chance,
        resume_checkpoint_seconds=config.resume_checkpoint_minutes * 60,
    )
    outcome = recorder.outcome
    stoppers = _stoppers(config, recorder, stop_requested)
    if resume_from_checkpoint is not None:
        _resume_from(resume_from_checkpoint, recorder, stoppers)
    set_seed(int(params["seed"]))  # the classification head is initialised from this seed
    model = load_classifier(config.model.name, data.label_names)
    trainer = build_trainer(
        config,
        params,
        data,
        model,
        output_dir,
        callbacks=[recorder, *stoppers, *callbacks],
        run_name=run_name,
        resumed_from_step=outcome.resumed_from_step,
    )
    uploader = None
    if store_url:
        staging = output_dir.parent / ".uploads" / output_dir.name
        uploader = BackgroundUploader(
            TrialStore(store_url), staging, prune=not config.keep_all_checkpoints
        )
        trainer.add_callback(UploadOnSave(uploader))
    started = time.perf_counter()
    completed = False
    try:
        try:
            trainer.train(
                resume_from_checkpoint=str(resume_from_checkpoint)
                if resume_from_checkpoint
                else None
            )
        except torch.OutOfMemoryError:
            batch = params["per_device_train_batch_size"]
            outcome.stop_reason = f"out of memory at per_device_train_batch_size={batch}"
        outcome.planned_steps = trainer.state.max_steps
        outcome.best_checkpoint = trainer.state.best_model_checkpoint
        completed = outcome.stop_reason is None and outcome.interrupted_at_step is None
    finally:
        outcome.train_seconds = max(time.perf_counter() - started - outcome.eval_seconds, 0.0)
        _after_training(config, trainer, outcome, uploader, output_dir, completed)
        del trainer, model
        release_memory()
    return outcome


def _after_training(
    config: StudyConfig,
    trainer: Trainer,
    outcome: TrialOutcome,
    uploader: BackgroundUploader | None,
    output_dir: Path,
    completed: bool,
) -> None:
    """The store's and the disk's share of a trial that ended (or raised), and its logs."""
    if uploader is not None:
        _finish_uploads(uploader, outcome, output_dir, completed)
    if completed and not config.keep_all_checkpoints:
        # The best one stays (none: the trial kept nothing worth its disk).
        remove_checkpoints(output_dir, keep=_local(output_dir, outcome.best_checkpoint))
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardRun):
            callback.writer.close()  # training that raised never reached on_train_end
