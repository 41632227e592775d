"""The Optuna study: baselines, the objective, and checkpoints.

:func:`run_study` is the entry point: it checks the config and the data before anything
is written, opens (or resumes) the study in its storage, enqueues the baselines once, and
runs trials (through :func:`sweeper.runtime.workers.run_trials`) until the study's budget, counted
in storage across every run and worker, is met. Samplers and pruners are not stored in
the database, so every worker builds them (:mod:`sweeper.settings.samplers`,
:mod:`sweeper.settings.pruners`) from the same study file.

A trial's checkpoints live in ``<checkpoint_dir>/trial-<N>``, where N is the number of the
first trial of its retry chain: a retry resumes from the newest complete checkpoint there.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeper.attributes import (
    BASELINE_ATTR,
    BEST_CHECKPOINT_ATTR,
    BEST_STEP_ATTR,
    CHECKPOINT_BYTES_ATTR,
    CHECKPOINT_COSTS_ATTR,
    CHECKPOINT_DIR_ATTR,
    CHECKPOINT_STORE_ATTR,
    CHECKPOINT_STORE_ERROR_ATTR,
    CONFIG_ATTR,
    CONFIG_VERSION_ATTR,
    CUDA_VISIBLE_DEVICES_ATTR,
    EARLY_STOP_NOTE_ATTR,
    EARLY_STOPPED_AT_ATTR,
    EVAL_SECONDS_ATTR,
    EXAMPLES_PER_STEP_ATTR,
    FAILURE_ATTR,
    HISTORY_ATTR,
    LABEL_NAMES_ATTR,
    MODEL_FINGERPRINT_ATTR,
    OBJECTIVE_METRIC_ATTR,
    PLANNED_STEPS_ATTR,
    RESUME_FALLBACK_ATTR,
    RESUMED_FROM_STEP_ATTR,
    RETRIED_FROM_SYSTEM_ATTR,
    SAVE_SECONDS_ATTR,
    STOP_REASON_ATTR,
    STUDY_READY_ATTR,
    TOTAL_PARAMETERS_ATTR,
    TRAIN_SECONDS_ATTR,
    TRAINABLE_PARAMETERS_ATTR,
    WARM_START_ATTR,
    WARM_START_SOURCE_ATTR,
    WARM_START_TRIALS_ATTR,
    WORKER_ATTR,
)
from sweeper.errors import ConfigError, StorageError
from sweeper.records.results import best_trial
from sweeper.runtime.outage import DeferredReports
from sweeper.runtime.progress import StudyProgress, TrialProgressBar
from sweeper.runtime.slurm import slurm_attrs
from sweeper.runtime.storage import (
    NoStudiesError,
    open_lock,
    open_storage,
    redact,
    sqlite_path,
    storage_health,
)
from sweeper.runtime.worker_reads import reading_at_grid_point, worker_storage
from sweeper.runtime.workers import (
    StopReason,
    StopRequest,
    TrialInterrupted,
    budget_counts,
    is_crashed,
    run_trials,
    worker_index,
)
from sweeper.settings.config import StudyConfig, WorkersConfig
from sweeper.settings.hyperparameters import suggest_params
from sweeper.settings.pruners import build_pruner
from sweeper.settings.samplers import SamplerConfig, build_sampler
from sweeper.settings.stored import CONFIG_VERSION, dump_config, stored_config, stored_document
from sweeper.settings.warm_start import source_trials
from sweeper.study.preflight import PreflightResult, run_preflight
from sweeper.study.resolve import check_run_keys_only, drop_stored_credentials, leaf_keys
from sweeper.study.warm_start import WarmStartPlan
from sweeper.trial.callbacks import TrialOutcome
from sweeper.trial.checkpoints import (
    last_checkpoint,
    remove_checkpoints,
    resume_point,
    trial_checkpoint_dir,
)
from sweeper.trial.data import (
    LABEL,
    DataSplits,
    PreparedData,
    check_unchanged,
    column_values,
    prepare_data,
    split_attrs,
)
from sweeper.trial.grid import NearChance
from sweeper.trial.models import check_same_model
from sweeper.trial.training import train_trial


@dataclass
class SweepContext:
    config: StudyConfig
    data: PreparedData
    checkpoint_dir: Path
    stop: StopRequest
    # The prefix of these trials in an object store (config.checkpoint_store), or None.
    checkpoint_store: str | None = None


def record_outcome(trial: optuna.Trial, outcome: TrialOutcome) -> None:
    """The trial's history in the model cards' form, and where its time went."""
    trial.set_user_attr(HISTORY_ATTR, outcome.history)
    trial.set_user_attr(BEST_STEP_ATTR, outcome.best_step)
    trial.set_user_attr(BEST_CHECKPOINT_ATTR, outcome.best_checkpoint)
    trial.set_user_attr(PLANNED_STEPS_ATTR, outcome.planned_steps)
    trial.set_user_attr(TRAIN_SECONDS_ATTR, round(outcome.train_seconds, 3))
    trial.set_user_attr(EVAL_SECONDS_ATTR, round(outcome.eval_seconds, 3))
    trial.set_user_attr(TRAINABLE_PARAMETERS_ATTR, outcome.trainable_parameters)
    trial.set_user_attr(TOTAL_PARAMETERS_ATTR, outcome.total_parameters)
    trial.set_user_attr(CHECKPOINT_BYTES_ATTR, outcome.checkpoint_bytes)
    trial.set_user_attr(SAVE_SECONDS_ATTR, outcome.save_seconds)
    trial.set_user_attr(EXAMPLES_PER_STEP_ATTR, outcome.examples_per_step)
    if outcome.stop_reason:
        trial.set_user_attr(STOP_REASON_ATTR, outcome.stop_reason)
    if outcome.store_error:
        trial.set_user_attr(CHECKPOINT_STORE_ERROR_ATTR, outcome.store_error)
    if outcome.checkpoint_costs:
        trial.set_user_attr(CHECKPOINT_COSTS_ATTR, outcome.checkpoint_costs)
    if outcome.early_stopped_at is not None:
        # Not stop_reason: that one means pruned (or diverged), and this trial is complete.
        trial.set_user_attr(EARLY_STOPPED_AT_ATTR, outcome.early_stopped_at)
        trial.set_user_attr(EARLY_STOP_NOTE_ATTR, outcome.early_stop_note)


class Objective:
    """One Optuna trial = one fine-tuning run; its value is its best evaluation."""

    def __init__(self, context: SweepContext, show_progress: bool = True):
        self.context = context
        self.show_progress = show_progress
        # Runs in training.report_to are named <run_prefix>-trial-<N>.
        self.run_prefix = context.config.name
        # The near_chance rule needs the validation split's majority-class rate.
        self.near_chance = NearChance.of(
            context.config, column_values(context.data.validation, LABEL)
        )

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's hyperparameters: sampled from the study's search space (or enqueued)."""
        return suggest_params(trial, self.context.config.space)

    def __call__(self, trial: optuna.Trial) -> float:
        config, stop = self.context.config, self.context.stop
        params = self.suggest(trial)
        output_dir, store_url, resume_from = self._checkpoints(trial)
        # Which machine, process and GPU ran it: the first thing to ask of a slow or odd trial.
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr(CUDA_VISIBLE_DEVICES_ATTR, os.environ.get("CUDA_VISIBLE_DEVICES"))
        # Under Slurm: which job, array task and run of it (SLURM_RESTART_COUNT, 0 at first).
        for key, value in slurm_attrs().items():
            trial.set_user_attr(key, value)
        if resume_from is not None:
            trial.set_user_attr(RESUMED_FROM_STEP_ATTR, resume_from[1])
            trial.set_user_attr(FAILURE_ATTR, None)

        # Reports wait in a queue while the study database is down; training goes on.
        health = storage_health(trial.study)
        reports = DeferredReports(trial, health)

        def on_evaluation(grid_point: int, value: float) -> bool:
            # The grid point, not the step: trials of every batch size report the same
            # indices for the same amount of training, so the pruner compares them.
            return reports.report(grid_point, value)

        def stop_requested() -> bool:
            # Past the outage limit the trial stops as for a signal: with a checkpoint.
            return stop.requested or (health is not None and health.exceeded)

        callbacks = [TrialProgressBar(trial.number)] if self.show_progress else []
        outcome = train_trial(
            config,
            params,
            self.context.data,
            output_dir,
            on_evaluation=on_evaluation,
            near_chance=self.near_chance,
            callbacks=callbacks,
            resume_from_checkpoint=resume_from[0] if resume_from else None,
            stop_requested=stop_requested,
            # <study>-trial-<N>, N the first trial of the retry chain (as the checkpoint
            # directory): a retry continues its first trial's run in training.report_to.
            run_name=f"{self.run_prefix}-{output_dir.name}",
            store_url=store_url,
        )
        if outcome.interrupted_at_step is not None and not stop.requested and health is not None:
            raise health.outage_error(
                f"trial #{trial.number} trained (it stopped at step "
                f"{outcome.interrupted_at_step} with a checkpoint saved)"
            )
        reports.flush()
        record_outcome(trial, outcome)
        if outcome.interrupted_at_step is not None:
            signal_number = stop.signal_number or 2
            reason = f"interrupted at step {outcome.interrupted_at_step} (checkpoint saved)"
            trial.set_user_attr(FAILURE_ATTR, reason)
            raise TrialInterrupted(f"trial #{trial.number} {reason}", signal_number)
        # Pruned or diverged only: a trial early_stopping ended is complete, scored by its
        # best evaluation like one that ran to its planned end.
        if outcome.stop_reason:
            raise optuna.TrialPruned(outcome.stop_reason)
        if outcome.best_value is None:
            raise optuna.TrialPruned(
                "no evaluation ran (the training split may be smaller than a batch)"
            )
        return outcome.best_value

    def _checkpoints(self, trial: optuna.Trial) -> tuple[Path, str | None, tuple[Path, int] | None]:
        """The trial's local checkpoint directory, its prefix in the object store (None
        without one), and the checkpoint a retry resumes from."""
        frozen = trial.study._storage.get_trial(trial._trial_id)  # this trial, not the study
        first = frozen.system_attrs.get(RETRIED_FROM_SYSTEM_ATTR, trial.number)
        output_dir = trial_checkpoint_dir(self.context.checkpoint_dir, first)
        trial.set_user_attr(CHECKPOINT_DIR_ATTR, str(output_dir.resolve()))
        store = self.context.checkpoint_store
        store_url = f"{store}/{output_dir.name}" if store else None
        if store_url:
            trial.set_user_attr(CHECKPOINT_STORE_ATTR, store_url)
        if first != trial.number:
            local = last_checkpoint(output_dir)
            if store_url is None:
                return output_dir, None, local
            point = resume_point(store_url, output_dir, local, f"trial #{trial.number}")
            if point.passed_over:
                trial.set_user_attr(RESUME_FALLBACK_ATTR, point.passed_over)
            return output_dir, store_url, point.checkpoint
        # A new trial starts clean: anything here is left from a deleted study of this name.
        remove_checkpoints(output_dir)
        if store_url:
            remove_checkpoints(store_url)
        return output_dir, store_url, None


class CheckpointJanitor:
    """Deletes checkpoints no trial can need any more: those of pruned trials, of trials
    that raised (they are not retried), and of finished trials other than the study's best.
    A retry chain's directory is judged by its newest trial, so an interrupted trial's
    checkpoint stays until its retry ends."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        # After the snapshot: a trial that completes in between is judged by the next call,
        # never taken for a non-best one whose checkpoints may go.
        best = best_trial(study)
        newest: dict[str, FrozenTrial] = {}
        for candidate in trials:
            directory = candidate.user_attrs.get(CHECKPOINT_DIR_ATTR)
            if directory and (
                directory not in newest or candidate.number > newest[directory].number
            ):
                newest[directory] = candidate
        for directory, owner in newest.items():
            unneeded = (
                owner.state == TrialState.PRUNED
                or is_crashed(owner)
                or (
                    owner.state == TrialState.COMPLETE
                    and (best is None or owner.number != best.number)
                )
            )
            if unneeded:
                if Path(directory).exists():
                    remove_checkpoints(directory)
                if owner.user_attrs.get(CHECKPOINT_STORE_ATTR):
                    remove_checkpoints(owner.user_attrs[CHECKPOINT_STORE_ATTR])


RESUME_SEED_STEP = 1_000_003


def _study_sampler(
    sampler_config: SamplerConfig,
    config: StudyConfig,
    observations: list[dict[str, Any]] | None,
) -> optuna.samplers.BaseSampler:
    """The study's sampler; with warm start's stored observations (and warm_start.sampler), a
    TPE that models the sources' finished trials too."""
    if not observations or not config.warm_start.sampler:
        return build_sampler(sampler_config)
    return build_sampler(
        sampler_config,
        source_trials(observations, config.space),
        config.warm_start.source_weight,
    )


def open_study(
    config: StudyConfig,
    storage: optuna.storages.BaseStorage,
    warm_start: WarmStartPlan | None = None,
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists; returns (study, created). Its sampler
    models the warm start's observations: those stored with a ready study, else those of
    ``warm_start`` (the plan this process will store)."""
    direction = config.objective.study_direction
    sampler_config = config.sampler
    if sampler_config.seed is not None and worker_index():
        # Worker i of those `sweeper worker --gpus` started samples with seed + i: each would
        # otherwise draw the same random sequence as its neighbours.
        sampler_config = sampler_config.model_copy(
            update={"seed": sampler_config.seed + worker_index()}
        )
    # A searched method makes the space conditional: TPE then models it by groups.
    sampler_config = sampler_config.for_space(conditional=len(config.space.methods()) > 1)
    planned = warm_start.observations if warm_start is not None else None
    pruner = reading_at_grid_point(build_pruner(config.pruner))
    storage = worker_storage(storage)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=config.name,
            direction=direction,
            sampler=_study_sampler(sampler_config, config, planned),
            pruner=pruner,
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(
            study_name=config.name,
            storage=storage,
            sampler=build_sampler(sampler_config),
            pruner=pruner,
        )
    attrs = study.user_attrs
    observations = attrs.get(WARM_START_TRIALS_ATTR) if attrs.get(STUDY_READY_ATTR) else planned
    seed = sampler_config.seed
    if seed is not None:
        # A seeded sampler rebuilt on resume would draw its first samples again (a random
        # sampler repeats trial 0's parameters as the next trial): the seed moves on by the
        # trials the study already has. The step is a large prime, so that workers started
        # together with seed + i (sweeper.runtime.workers) never land on each other's seeds.
        offset = len(study.get_trials(deepcopy=False))
        if offset:
            resumed_seed = (seed + offset * RESUME_SEED_STEP) % 2**32
            sampler_config = sampler_config.model_copy(update={"seed": resumed_seed})
    study.sampler = _study_sampler(sampler_config, config, observations)
    existing = study.direction.name.lower()
    if existing != direction:
        raise ConfigError(
            f"study {config.name!r} in the storage maximizes/minimizes as {existing!r}, but "
            f"objective.metric={config.objective.metric!r} needs {direction!r}; use another study name"
        )
    return study, False


def _enqueue_baselines(study: optuna.Study, config: StudyConfig) -> None:
    for name, params in config.baseline_params():
        study.enqueue_trial(params, user_attrs={BASELINE_ATTR: name}, skip_if_exists=True)


def _enqueue_warm_start(study: optuna.Study, plan: WarmStartPlan) -> None:
    """After the baselines: the sources' best configurations, marked with their origin."""
    for planned in plan.enqueued:
        study.enqueue_trial(
            planned["params"],
            user_attrs={WARM_START_SOURCE_ATTR: planned["source"]},
            skip_if_exists=True,
        )


# Set last by ensure_study: the study has its baselines and its stored config. A study
# without it (its creator was stopped half-way, or it predates this marker) is completed by
# the next ensure_study, which writes only what is missing.


@dataclass
class CreatedStudy:
    study: optuna.Study
    created: bool  # the study did not exist before
    completed: bool  # this call enqueued the baselines and stored the config


def ensure_study(
    config: StudyConfig,
    label_names: list[str],
    splits: DataSplits | None = None,
    model_fingerprint: str | None = None,
    warm_start: WarmStartPlan | None = None,
) -> CreatedStudy:
    """The study in its storage, with its baselines enqueued and its config stored: one
    step, idempotent, safe to run from any number of processes at once.

    Enqueuing the baselines and storing the config are separate writes; they run under a
    lock shared through the storage, taken only while the study is not ready, and a
    marker attribute is set last, so a creator stopped half-way leaves a study the next
    call completes, never one that workers take as ready without its baselines.
    ``sweeper create`` runs it before any worker starts; every worker runs it again.

    With ``splits``, the study stores their sizes and fingerprints when it is created, and
    an existing study whose stored fingerprints differ from them is refused (DataError)
    before anything else is written; so is one whose stored model fingerprint differs from
    ``model_fingerprint`` (model.name points at another model).

    With ``warm_start`` (the pre-flight's plan for a new study), the sources' configurations
    are enqueued after the baselines, and the plan and the sources' observations are stored
    with the study, so every worker's sampler models them without reaching the sources.

    The stored configuration holds no credential (``stored_document``): the storage URL's
    password stays with whoever runs the command."""
    storage = open_storage(config.storage_url, workers=config.workers)
    lock = open_lock(config.storage_url, f"create/{config.name}")
    try:
        # Creating the study is safe from any number of processes (Optuna's name is unique);
        # only one not yet ready needs the lock, for the writes that make it ready. Workers
        # joining a ready study (a thousand started together) do not queue for it.
        study, created = open_study(config, storage, warm_start)
        if not study.user_attrs.get(STUDY_READY_ATTR):
            lock.acquire()
        if not created and isinstance(study.user_attrs.get(CONFIG_ATTR), dict):
            # The command resolved its configuration on the stored one (sweeper.study.resolve)
            # unless the storage could not be read then: nothing but run keys may differ.
            stored = stored_config(config.name, study.user_attrs)
            every_key = leaf_keys(config.model_dump(mode="json"))
            check_run_keys_only(stored, config, every_key, config.storage_url)
        if splits is not None:
            check_unchanged(study.user_attrs, splits, config.name)
        check_same_model(study.user_attrs, model_fingerprint, config.model.name, config.name)
        completed = False
        if study.metric_names is None:
            # optuna-dashboard and Optuna's plots say "validation_loss", not "Objective 0".
            study.set_metric_names([config.objective.metric])
        if not study.user_attrs.get(STUDY_READY_ATTR):
            _make_ready(study, config, label_names, splits, model_fingerprint, warm_start)
            completed = True
    finally:
        lock.close()
    config.study_dir.mkdir(parents=True, exist_ok=True)
    (config.study_dir / "config.resolved.yaml").write_text(dump_config(config), encoding="utf-8")
    return CreatedStudy(study, created, completed)


def _make_ready(
    study: optuna.Study,
    config: StudyConfig,
    label_names: list[str],
    splits: DataSplits | None,
    model_fingerprint: str | None,
    warm_start: WarmStartPlan | None,
) -> None:
    """The writes that make a study ready (under ensure_study's lock): the baselines and the
    warm start's configurations enqueued, every attribute not yet stored, the marker last."""
    _enqueue_baselines(study, config)  # skip_if_exists: never twice
    if warm_start is not None:
        _enqueue_warm_start(study, warm_start)
    existing = study.user_attrs
    for key, value in (
        (CONFIG_ATTR, stored_document(config)),
        (CONFIG_VERSION_ATTR, CONFIG_VERSION),
        (OBJECTIVE_METRIC_ATTR, config.objective.metric),
        (LABEL_NAMES_ATTR, label_names),
        *(split_attrs(splits).items() if splits is not None else ()),
        *([(MODEL_FINGERPRINT_ATTR, model_fingerprint)] if model_fingerprint else ()),
        *(
            [
                (WARM_START_ATTR, warm_start.record()),
                (WARM_START_TRIALS_ATTR, warm_start.observations),
            ]
            if warm_start is not None
            else ()
        ),
    ):
        if key not in existing:
            study.set_user_attr(key, value)
    study.set_user_attr(STUDY_READY_ATTR, True)
    for line in warm_start.notes if warm_start is not None else ():
        print(f"[sweeper] warm start: {line}", flush=True)


def preflight_with_notices(config: StudyConfig) -> PreflightResult:
    """The pre-flight check; what it notices (a re-initialised head) is printed."""
    checked = run_preflight(config)
    for notice in checked.notices:
        print(f"[sweeper] note: {notice}", flush=True)
    return checked


def prepare_study_data(config: StudyConfig, checked: PreflightResult) -> PreparedData:
    """The study's splits, tokenized once into the shared cache under ``output_dir``."""
    return prepare_data(
        config.dataset,
        checked.tokenizer,
        config.model.max_length,
        Path(config.output_dir) / "cache" / "tokenized",
        splits=checked.splits,
    )


def create_study(config: StudyConfig) -> CreatedStudy:
    """``sweeper create``: the pre-flight check (nothing is written when it fails), then
    :func:`ensure_study`. What every launcher runs once before its workers start."""
    checked = preflight_with_notices(config)
    return ensure_study(
        config,
        checked.splits.label_names,
        checked.splits,
        checked.model_fingerprint,
        checked.warm_start,
    )


class BudgetMetHook(Protocol):
    """What a worker does once the sweep's budget is met (the CLI passes
    :func:`sweeper.study.confirm.run_pending_confirmation`: help a confirmation along)."""

    def __call__(
        self,
        config: StudyConfig,
        data: PreparedData,
        study: optuna.Study,
        *,
        stop: StopRequest,
        show_progress: bool,
    ) -> object: ...


def run_study(
    config: StudyConfig,
    *,
    show_progress: bool = True,
    extra_callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] | None = None,
    stop: StopRequest | None = None,
    on_budget_met: BudgetMetHook | None = None,
) -> optuna.Study:
    """Run (or resume) the study until its budget is met, as one worker among any number.

    SIGINT/SIGTERM stop it cleanly (see :class:`sweeper.runtime.workers.StopRequest`); pass
    ``stop`` to learn afterwards whether that happened and which signal it was. Once the
    budget is met, ``on_budget_met`` runs with the prepared data (the sweep module knows
    nothing of what comes after it: confirm imports sweep, never the other way).
    """
    checked = preflight_with_notices(config)  # before anything is written
    data = prepare_study_data(config, checked)
    study = ensure_study(
        config, data.label_names, checked.splits, checked.model_fingerprint, checked.warm_start
    ).study

    n_trials = config.budget.n_trials
    done, _ = budget_counts(study)
    budget = f"running until {n_trials}" if n_trials is not None else "no trial budget"
    print(
        f"[sweeper] study {config.name!r} in {redact(config.storage_url)}: "
        f"{done}{f'/{n_trials}' if n_trials is not None else ''} trials finished, {budget}",
        flush=True,
    )
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = []
    if show_progress:
        callbacks.append(StudyProgress(config.objective.metric))
    if not config.keep_all_checkpoints:
        callbacks.append(CheckpointJanitor())
    callbacks.extend(extra_callbacks or [])
    stop = stop or StopRequest()
    context = SweepContext(
        config=config,
        data=data,
        checkpoint_dir=config.checkpoint_dir,
        stop=stop,
        checkpoint_store=config.checkpoint_store,
    )
    with stop.installed():
        result = run_trials(
            study,
            Objective(context, show_progress),
            storage_url=config.storage_url,
            workers=config.workers,
            n_trials=n_trials,
            timeout_seconds=config.budget.timeout_seconds,
            callbacks=callbacks,
            stop=stop,
        )
        if result.reason is StopReason.BUDGET_MET and result.trials_run == 0:
            print(f"[sweeper] study {config.name!r} already has its {n_trials} finished trials")
        if result.reason is StopReason.BUDGET_MET and on_budget_met is not None:
            on_budget_met(config, data, study, stop=stop, show_progress=show_progress)
    return study


def load_existing_study(
    name: str, storage_url: str, workers: WorkersConfig | None = None
) -> optuna.Study:
    """The study, for commands that read it (and, with ``workers``, with the heartbeats and
    retries of a command that runs trials: confirm). A configuration an earlier sweeper
    stored with the storage password in it is rewritten without it, so no view shows it
    again."""
    try:
        storage = open_storage(
            storage_url, heartbeat=workers is not None, create=False, workers=workers
        )
    except NoStudiesError:
        if sqlite_path(storage_url) is not None:
            raise
        raise StorageError(
            f"no study named {name!r} in {redact(storage_url)}; studies there: none (the "
            "database holds no study yet: `sweeper create` or `sweeper sweep` makes one)"
        ) from None
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
        raise StorageError(
            f"no study named {name!r} in {redact(storage_url)}; studies there: {names or 'none'}"
        ) from None
    drop_stored_credentials(storage, study._study_id, study.user_attrs)
    return study
