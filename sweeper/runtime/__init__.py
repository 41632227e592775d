"""The storage and the workers: Optuna's RDB storage and its locks (storage), riding out a
study database that goes away (outage), the trial loop every worker runs with its budget,
signals and heartbeats (workers), the progress lines and bars while trials run (progress),
the scheduler a worker runs under (slurm), and a local PostgreSQL without root
(local_postgres)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweeper.runtime.outage import DeferredReports, classify, short_reason
    from sweeper.runtime.progress import StudyProgress, TrialProgressBar
    from sweeper.runtime.slurm import requeue_own_slurm_task, slurm_attrs
    from sweeper.runtime.storage import (
        NoStudiesError,
        check_reachable,
        open_lock,
        open_storage,
        redact,
        sqlite_path,
        storage_health,
    )
    from sweeper.runtime.workers import (
        SPAWNED_BY_GPUS_ENV,
        StopReason,
        StopRequest,
        TrialInterrupted,
        WorkerResult,
        apply_gpu_memory_fraction,
        budget_counts,
        gpu_count,
        is_crashed,
        parse_gpus,
        run_trials,
        spawn_gpu_workers,
        worker_index,
    )

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
        "redact",
        "sqlite_path",
        "storage_health",
    ],
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
_HOME = {name: module for module, names in _SURFACE.items() for name in names}
__all__ = [
    "SPAWNED_BY_GPUS_ENV",
    "DeferredReports",
    "NoStudiesError",
    "StopReason",
    "StopRequest",
    "StudyProgress",
    "TrialInterrupted",
    "TrialProgressBar",
    "WorkerResult",
    "apply_gpu_memory_fraction",
    "budget_counts",
    "check_reachable",
    "classify",
    "gpu_count",
    "is_crashed",
    "open_lock",
    "open_storage",
    "parse_gpus",
    "redact",
    "requeue_own_slurm_task",
    "run_trials",
    "short_reason",
    "slurm_attrs",
    "spawn_gpu_workers",
    "sqlite_path",
    "storage_health",
    "worker_index",
]


def __getattr__(name: str) -> Any:
    """Loaded on first use, so importing one module of the package loads no other."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
