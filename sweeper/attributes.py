"""Every user attribute sweeper stores on an Optuna study or trial, named once.

The study and its trials are the record of a sweep: the views, the card, confirm and the
workers of other machines read these keys back, and optuna-dashboard shows them. Renaming
one is a format change of every stored study (sweeper.settings.stored.CONFIG_VERSION).
"""

# --- on the study ---------------------------------------------------------------------------------
# Its resolved configuration, without credentials (sweeper.settings.stored.stored_document).
CONFIG_ATTR = "config"
CONFIG_VERSION_ATTR = "config_version"
OBJECTIVE_METRIC_ATTR = "objective_metric"
LABEL_NAMES_ATTR = "label_names"
# What the data and the model were when the study was created (sweeper.trial.data,
# sweeper.trial.models): a later run must give the same.
SPLIT_SIZES_ATTR = "split_sizes"
SPLIT_FINGERPRINTS_ATTR = "split_fingerprints"
MODEL_FINGERPRINT_ATTR = "model_fingerprint"
# Set last when a study is created: it has its baselines and its stored config.
STUDY_READY_ATTR = "sweeper_ready"
# Warm start (sweeper.study.warm_start), written when the study is created: its sources, what
# was enqueued and every line said then; and the sources' finished trials in this study's
# search space (params, state, value; no storage URL), which every worker's sampler models.
WARM_START_ATTR = "warm_start"
WARM_START_TRIALS_ATTR = "warm_start_trials"
# Optional, set by a user: the fine-tuned model's license for its card (beside model.license).
LICENSE_ATTR = "license"

# --- on a confirmation's companion study (<study>.confirm) ----------------------------------------
CANDIDATES_ATTR = "candidates"  # the frozen plan: configurations and seeds
CONFIRMATION_ATTR = "confirmation"  # the result, once every re-run finished
CONFIRM_READY_ATTR = "confirm_ready"
# One per re-run of the winner and the baselines: "test:<trial number>" -> its test scores.
TEST_SCORES_ATTR_PREFIX = "test:"

# --- on a trial: what it is ------------------------------------------------------------------------
BASELINE_ATTR = "baseline"  # the name of the baseline an enqueued trial stands for
# An enqueued warm-start trial: the source trial it comes from ("imdb #7").
WARM_START_SOURCE_ATTR = "warm_start_source"
CONFIRM_CONFIG_ATTR = "confirm_config"  # a re-run: the planned configuration's id
CONFIRM_SEED_ATTR = "confirm_seed"  # and its seed
CONFIRM_NAME_ATTR = "confirm_name"  # and its name (a baseline's, or "trial #N")

# --- on a trial: what it did (sweeper.study.sweep.record_outcome) -------------------------------
HISTORY_ATTR = "history"
BEST_STEP_ATTR = "best_step"
BEST_CHECKPOINT_ATTR = "best_checkpoint"
PLANNED_STEPS_ATTR = "planned_steps"
TRAIN_SECONDS_ATTR = "train_seconds"
EVAL_SECONDS_ATTR = "eval_seconds"
EXAMPLES_PER_STEP_ATTR = "examples_per_step"
# What a trial trained and kept: parameters with gradients, all parameters, the kept
# checkpoint's bytes, and each checkpoint save's seconds (a LoRA trial's are small).
TRAINABLE_PARAMETERS_ATTR = "trainable_parameters"
TOTAL_PARAMETERS_ATTR = "total_parameters"
CHECKPOINT_BYTES_ATTR = "checkpoint_bytes"
SAVE_SECONDS_ATTR = "save_seconds"
STOP_REASON_ATTR = "stop_reason"  # pruned, or diverged
EARLY_STOPPED_AT_ATTR = "early_stopped_at"  # stopped improving: complete nonetheless
EARLY_STOP_NOTE_ATTR = "early_stop_note"

# --- on a trial: Optuna's own (a system attribute its retry callback sets) ----------------------
# The trial a retry stands for: the number of the first trial of its retry chain.
RETRIED_FROM_SYSTEM_ATTR = "failed_trial"

# --- on a trial: where and how it ran ------------------------------------------------------------
CHECKPOINT_DIR_ATTR = "checkpoint_dir"
# With an object store as checkpoint_root: the retry chain's prefix there, why the trial is
# no longer resumable from it (uploads kept failing), and which stored checkpoints a resume
# passed over (missing or corrupt files) before the one it took, or started over without.
CHECKPOINT_STORE_ATTR = "checkpoint_store"
CHECKPOINT_STORE_ERROR_ATTR = "checkpoint_store_error"
RESUME_FALLBACK_ATTR = "resume_fallback"
# What its checkpoints cost: saves, seconds each hand-over blocked training, upload seconds.
CHECKPOINT_COSTS_ATTR = "checkpoint_costs"
RESUMED_FROM_STEP_ATTR = "resumed_from_step"
FAILURE_ATTR = "failure"
TRACEBACK_ATTR = "failure_traceback"
WORKER_ATTR = "worker"
CUDA_VISIBLE_DEVICES_ATTR = "cuda_visible_devices"
SLURM_JOB_ID_ATTR = "slurm_job_id"
SLURM_ARRAY_TASK_ID_ATTR = "slurm_array_task_id"
SLURM_RESTART_COUNT_ATTR = "slurm_restart_count"
