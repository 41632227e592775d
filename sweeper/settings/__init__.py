"""What a study file says: the one strict base of every typed record (strict), the searchable
hyperparameters (hyperparameters), the recorded metrics (metrics), the pruners and samplers
a study can use (pruners, samplers), the earlier studies it starts from (warm_start), the schema and its run keys (config), validation errors
told per key (validation), reading a study file and its overrides (study_file), the
configuration a study stores (stored) and the generated reference (reference). Imports
nothing of sweeper's above it: every other layer reads these."""

from sweeper.lazy import public_surface

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
        "ParamSpace",
        "SearchSpaceBase",
        "METHODS",
        "card_name",
        "trial_params",
        "candidate_values",
        "config_key",
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
    "samplers": ["SamplerConfig", "build_sampler", "learns_from_sources"],
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
    "warm_start": [
        "WarmStartSource",
        "describe_params",
        "in_target_names",
        "map_into_space",
        "observation_params",
        "source_trials",
    ],
}
__all__, __getattr__ = public_surface(__name__, _SURFACE)
