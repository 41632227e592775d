"""One trial: a seeded ``transformers.Trainer`` fine-tuning with given hyperparameters.

:func:`train_trial` is the entry point. It knows nothing of Optuna: it calls
``on_evaluation(grid_point, value)`` after every evaluation that falls on the study's
evaluation grid (sweeper.trial.grid) and stops when that returns True, which is how the
study's pruner reaches in ("worse than the others"). The study's ``early_stopping`` rule
("stopped improving") is transformers' own ``EarlyStoppingCallback``. It returns the trial's
evaluation history in the model cards' form, its best evaluation (not its last: the cards
peaked early), where the best checkpoint is, and why it stopped early if it did
(:class:`sweeper.trial.callbacks.TrialOutcome`, which the trial's callbacks fill in).
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import SequentialSampler
from transformers import (
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from sweeper.settings.config import StudyConfig
from sweeper.settings.hyperparameters import training_arguments
from sweeper.settings.metrics import build_compute_metrics, metric
from sweeper.trial.adapters import AdapterSettings, parameter_counts, wrap_with_adapters
from sweeper.trial.callbacks import (
    EarlyStopping,
    EvaluationRecorder,
    StopOnRequest,
    TensorBoardRun,
    TrialOutcome,
    UploadOnSave,
    finish_uploads,
    local_checkpoint,
    tensorboard_dir,
)
from sweeper.trial.checkpoints import (
    TRAINER_STATE_FILE,
    BackgroundUploader,
    TrialStore,
    directory_bytes,
    remove_checkpoints,
)
from sweeper.trial.data import PreparedData
from sweeper.trial.grid import EvaluationGrid, EvaluationHook, NearChance
from sweeper.trial.models import load_pretrained_classifier
from sweeper.trial.speed import apply_tf32, configure_compile, resolve_speed


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


def _build_model(config: StudyConfig, params: dict[str, Any], label_names: list[str]) -> Any:
    """The model a trial trains: the pretrained classifier, every weight trainable (method
    full), or frozen with LoRA adapters and its head and new modules trainable (lora)."""
    loaded = load_pretrained_classifier(config.model.name, label_names)
    if params.get("method", "full") != "lora":
        return loaded.model
    settings = AdapterSettings.of(params, config.lora)
    return wrap_with_adapters(loaded.model, settings, loaded.new_modules)


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
    model = _build_model(config, params, data.label_names)
    outcome.trainable_parameters, outcome.total_parameters = parameter_counts(model)
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
    # What the kept checkpoint costs on disk, measured before anything is cleaned up.
    outcome.checkpoint_bytes = directory_bytes(
        local_checkpoint(output_dir, outcome.best_checkpoint)
    )
    if uploader is not None:
        finish_uploads(uploader, outcome, output_dir, completed)
    if completed and not config.keep_all_checkpoints:
        # The best one stays (none: the trial kept nothing worth its disk).
        remove_checkpoints(output_dir, keep=local_checkpoint(output_dir, outcome.best_checkpoint))
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardRun):
            callback.writer.close()  # training that raised never reached on_train_end
