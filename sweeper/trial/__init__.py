"""One trial: the model and tokenizer (models), the data and its splits (data), the
evaluation grid and the near-chance rule (grid), the Trainer callbacks and the outcome they
record (callbacks), one fine-tuning run with transformers' Trainer (training), the speed
levers (speed), its checkpoints on disk and in an object store (checkpoints, stores) and the
scoring of a kept checkpoint on a split (evaluation)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweeper.trial.callbacks import TrialOutcome
    from sweeper.trial.checkpoints import (
        check_store,
        fetch_checkpoint,
        is_store_url,
        last_checkpoint,
        remove_checkpoints,
        resume_point,
        trial_checkpoint_dir,
    )
    from sweeper.trial.data import (
        LABEL,
        READABLE_SUFFIXES,
        DataSplits,
        PreparedData,
        check_unchanged,
        column_values,
        data_suffix,
        load_splits,
        prepare_data,
        split_attrs,
    )
    from sweeper.trial.evaluation import evaluate_checkpoint
    from sweeper.trial.grid import NearChance
    from sweeper.trial.models import (
        check_same_model,
        head_label_count,
        load_model_config,
        load_tokenizer,
        model_fingerprint,
        position_limit,
    )
    from sweeper.trial.speed import DEVICE_DEFAULTS, resolve_speed
    from sweeper.trial.training import train_trial

# What the other packages use, by the module that defines it; anything else in the
# package is its own business (tests/test_layers.py keeps this true).
_SURFACE = {
    "callbacks": ["TrialOutcome"],
    "checkpoints": [
        "check_store",
        "fetch_checkpoint",
        "is_store_url",
        "last_checkpoint",
        "remove_checkpoints",
        "resume_point",
        "trial_checkpoint_dir",
    ],
    "data": [
        "DataSplits",
        "LABEL",
        "PreparedData",
        "READABLE_SUFFIXES",
        "check_unchanged",
        "column_values",
        "data_suffix",
        "load_splits",
        "prepare_data",
        "split_attrs",
    ],
    "evaluation": ["evaluate_checkpoint"],
    "grid": ["NearChance"],
    "models": [
        "check_same_model",
        "head_label_count",
        "load_model_config",
        "load_tokenizer",
        "model_fingerprint",
        "position_limit",
    ],
    "speed": ["DEVICE_DEFAULTS", "resolve_speed"],
    "training": ["train_trial"],
}
_HOME = {name: module for module, names in _SURFACE.items() for name in names}
__all__ = [
    "DEVICE_DEFAULTS",
    "LABEL",
    "READABLE_SUFFIXES",
    "DataSplits",
    "NearChance",
    "PreparedData",
    "TrialOutcome",
    "check_same_model",
    "check_store",
    "check_unchanged",
    "column_values",
    "data_suffix",
    "evaluate_checkpoint",
    "fetch_checkpoint",
    "head_label_count",
    "is_store_url",
    "last_checkpoint",
    "load_model_config",
    "load_splits",
    "load_tokenizer",
    "model_fingerprint",
    "position_limit",
    "prepare_data",
    "remove_checkpoints",
    "resolve_speed",
    "resume_point",
    "split_attrs",
    "train_trial",
    "trial_checkpoint_dir",
]


def __getattr__(name: str) -> Any:
    """Loaded on first use, so importing one module of the package loads no other."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
