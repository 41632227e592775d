"""The storage and the workers: Optuna's RDB storage and its locks (storage), riding out a
study database that goes away (outage), reads of only what a decision needs (queries,
worker_reads), the trial loop every worker runs with its budget,
signals and heartbeats (workers), the progress lines and bars while trials run (progress),
the scheduler a worker runs under (slurm), and a local PostgreSQL without root
(local_postgres)."""

from sweeper.lazy import public_surface

# What the other packages use, by the module that defines it; anything else in the
# package is its own business (tests/test_layers.py keeps this true).
_SURFACE = {
    "outage": ["DeferredReports", "classify", "short_reason"],
    "progress": ["StudyProgress", "TrialProgressBar"],
    "slurm": ["requeue_own_slurm_task", "slurm_attrs"],
    "storage": [
        "NoStudiesError",
        "check_reachable",
        "open_lock",
        "open_storage",
        "reading_storage",
        "redact",
        "sqlite_path",
        "storage_health",
    ],
    "worker_reads": ["reading_at_grid_point", "worker_storage"],
    "workers": [
        "SPAWNED_BY_GPUS_ENV",
        "StopReason",
        "StopRequest",
        "TrialInterrupted",
        "WorkerResult",
        "apply_gpu_memory_fraction",
        "budget_counts",
        "gpu_count",
        "is_crashed",
        "parse_gpus",
        "run_trials",
        "spawn_gpu_workers",
        "worker_index",
    ],
}
__all__, __getattr__ = public_surface(__name__, _SURFACE)
