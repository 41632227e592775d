"""One trial: the model and tokenizer (models), a LoRA trial's adapters (adapters), the data and its splits (data), the
evaluation grid and the near-chance rule (grid), the Trainer callbacks and the outcome they
record (callbacks), one fine-tuning run with transformers' Trainer (training), the speed
levers (speed), its checkpoints on disk and in an object store (checkpoints, stores) and the
scoring of a kept checkpoint on a split (evaluation)."""

from sweeper.lazy import public_surface

# What the other packages use, by the module that defines it; anything else in the
# package is its own business (tests/test_layers.py keeps this true).
_SURFACE = {
    "adapters": [
        "check_adapters",
        "is_adapter_checkpoint",
        "load_trained",
        "most_trainable",
        "peft_available",
        "require_peft",
    ],
    "callbacks": ["TrialOutcome"],
    "checkpoints": [
        "check_store",
        "fetch_checkpoint",
        "holds_model",
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
        "split_fingerprints",
    ],
    "evaluation": ["evaluate_checkpoint"],
    "grid": ["NearChance"],
    "models": [
        "check_same_model",
        "head_label_count",
        "load_model_config",
        "load_pretrained_classifier",
        "meta_classifier",
        "load_tokenizer",
        "model_fingerprint",
        "position_limit",
    ],
    "speed": ["DEVICE_DEFAULTS", "resolve_speed"],
    "training": ["train_trial"],
}
__all__, __getattr__ = public_surface(__name__, _SURFACE)
