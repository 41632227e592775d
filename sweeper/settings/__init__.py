"""What a study file says: the one strict base of every typed record (strict), the searchable
hyperparameters (hyperparameters), the recorded metrics (metrics), the pruners and samplers
a study can use (pruners, samplers), the schema and its run keys (config), validation errors
told per key (validation), reading a study file and its overrides (study_file), the
configuration a study stores (stored) and the generated reference (reference). Imports
nothing of sweeper's above it: every other layer reads these."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweeper.settings.config import (
        RUN_KEYS,
        DatasetConfig,
        StudyConfig,
        TrainingConfig,
        WorkersConfig,
        batch_sizes,
        check_trials_per_gpu_flag,
        is_run_key,
    )
    from sweeper.settings.hyperparameters import (
        HYPERPARAMETERS,
        Choices,
        FloatRange,
        IntRange,
        SearchSpaceBase,
        candidate_values,
        distribution,
        fixed_params,
        is_searched,
        label,
        param_title,
        suggest,
        suggest_params,
        training_arguments,
    )
    from sweeper.settings.metrics import (
        METRICS,
        OBJECTIVE_NAMES,
        build_compute_metrics,
        compute,
        evaluate_modules,
        f1_average,
        metric,
        metric_title,
    )
    from sweeper.settings.pruners import build_pruner
    from sweeper.settings.samplers import build_sampler
    from sweeper.settings.stored import CONFIG_VERSION, dump_config, stored_config, stored_document
    from sweeper.settings.strict import StrictModel
    from sweeper.settings.study_file import (
        DEFAULT_STUDIES_DIR,
        STUDY_SUFFIXES,
        apply_overrides,
        config_from_document,
        find_study_file,
        load_study_config,
        notice,
        parse_overrides,
        read_study_document,
    )
    from sweeper.settings.validation import validate_document

# What the other packages use, by the module that defines it; anything else in the
# package is its own business (tests/test_layers.py keeps this true).
_SURFACE = {
    "config": [
        "DatasetConfig",
        "RUN_KEYS",
        "StudyConfig",
        "TrainingConfig",
        "WorkersConfig",
        "batch_sizes",
        "check_trials_per_gpu_flag",
        "is_run_key",
    ],
    "hyperparameters": [
        "Choices",
        "FloatRange",
        "HYPERPARAMETERS",
        "IntRange",
        "SearchSpaceBase",
        "candidate_values",
        "distribution",
        "fixed_params",
        "is_searched",
        "label",
        "param_title",
        "suggest",
        "suggest_params",
        "training_arguments",
    ],
    "metrics": [
        "METRICS",
        "OBJECTIVE_NAMES",
        "build_compute_metrics",
        "compute",
        "evaluate_modules",
        "f1_average",
        "metric",
        "metric_title",
    ],
    "pruners": ["build_pruner"],
    "samplers": ["build_sampler"],
    "stored": ["CONFIG_VERSION", "dump_config", "stored_config", "stored_document"],
    "strict": ["StrictModel"],
    "study_file": [
        "DEFAULT_STUDIES_DIR",
        "STUDY_SUFFIXES",
        "apply_overrides",
        "config_from_document",
        "find_study_file",
        "load_study_config",
        "notice",
        "parse_overrides",
        "read_study_document",
    ],
    "validation": ["validate_document"],
}
_HOME = {name: module for module, names in _SURFACE.items() for name in names}
__all__ = [
    "CONFIG_VERSION",
    "DEFAULT_STUDIES_DIR",
    "HYPERPARAMETERS",
    "METRICS",
    "OBJECTIVE_NAMES",
    "RUN_KEYS",
    "STUDY_SUFFIXES",
    "Choices",
    "DatasetConfig",
    "FloatRange",
    "IntRange",
    "SearchSpaceBase",
    "StrictModel",
    "StudyConfig",
    "TrainingConfig",
    "WorkersConfig",
    "apply_overrides",
    "batch_sizes",
    "build_compute_metrics",
    "build_pruner",
    "build_sampler",
    "candidate_values",
    "check_trials_per_gpu_flag",
    "compute",
    "config_from_document",
    "distribution",
    "dump_config",
    "evaluate_modules",
    "f1_average",
    "find_study_file",
    "fixed_params",
    "is_run_key",
    "is_searched",
    "label",
    "load_study_config",
    "metric",
    "metric_title",
    "notice",
    "param_title",
    "parse_overrides",
    "read_study_document",
    "stored_config",
    "stored_document",
    "suggest",
    "suggest_params",
    "training_arguments",
    "validate_document",
]


def __getattr__(name: str) -> Any:
    """Loaded on first use, so importing one module of the package loads no other."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
