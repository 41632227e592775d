"""One place per fact: the hyperparameter table, typed pruner/sampler sections, the stored
config's version. Each test would fail if a second table crept back in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from sweeper.attributes import CONFIG_VERSION_ATTR
from sweeper.errors import ConfigError
from sweeper.settings.config import StudyConfig
from sweeper.settings.hyperparameters import (
    HYPERPARAMETERS,
    SEARCHABLE_PARAMS,
    FloatRange,
    SearchSpace,
    suggest_params,
    training_arguments,
)
from sweeper.settings.pruners import MedianPrunerConfig, NoPrunerConfig, PercentilePrunerConfig
from sweeper.settings.samplers import RandomSamplerConfig
from sweeper.settings.stored import CONFIG_VERSION, stored_config
from sweeper.settings.study_file import load_study_config
from sweeper.trial.training import build_training_arguments

MINIMAL: dict[str, Any] = {
    "dataset": {"path": "reviews.csv", "text_column": "review", "label_column": "sentiment"},
    "model": {"name": "some-model", "max_length": 128},
}


def write(tmp_path: Path, **sections: Any) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, **sections}), encoding="utf-8")
    return path


# --- hyperparameters -----------------------------------------------------------------------------


def test_every_hyperparameter_has_its_names_and_a_training_argument() -> None:
    space = SearchSpace()
    in_search_space = tuple(e.name for e in HYPERPARAMETERS if e.home == "search_space")
    assert tuple(space.specs()) == in_search_space
    # The others live in model (method) and lora (r, alpha, ...) and shape the model, not
    # the Trainer's arguments.
    assert {e.study_key for e in HYPERPARAMETERS if e.home != "search_space"} == {
        "model.method",
        "lora.r",
        "lora.alpha",
        "lora.dropout",
        "lora.target_modules",
    }
    arguments = training_arguments(
        {
            name: 1 if entry.integer else 0.1
            for name, entry in zip(SEARCHABLE_PARAMS, HYPERPARAMETERS, strict=True)
        }
    )
    for entry in HYPERPARAMETERS:
        assert entry.label and entry.title and entry.card_name, entry.name
        assert entry.to_arguments(1 if entry.integer else 0.1).keys() <= arguments.keys()
        if entry.home != "search_space":
            assert entry.to_arguments(entry.default) == {}, entry.name


def test_label_smoothing_is_one_table_entry_from_study_file_to_trainer(tmp_path: Path) -> None:
    """The hyperparameter added by one entry: searched in a study file, sampled by Optuna,
    and handed to the Trainer, with nothing else changed."""
    config = load_study_config(
        write(tmp_path, search_space={"label_smoothing_factor": {"low": 0.0, "high": 0.2}})
    )
    assert config.search_space.label_smoothing_factor == FloatRange(low=0.0, high=0.2)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    params = suggest_params(study.ask(), config.space)
    assert 0.0 <= params["label_smoothing_factor"] <= 0.2
    arguments = build_training_arguments(config, params, tmp_path / "out")
    assert arguments.label_smoothing_factor == pytest.approx(params["label_smoothing_factor"])
    # By default it is fixed at 0 (plain cross-entropy, as both model cards) and not searched.
    assert load_study_config(write(tmp_path)).search_space.label_smoothing_factor == 0.0


@pytest.mark.parametrize(
    ("search_space", "message"),
    [
        (
            {"label_smoothing_factor": 1.0},
            r"search_space\.label_smoothing_factor: is the share of the target's probability "
            r"spread over the other labels and must lie in \[0, 1\), but got 1\.0",
        ),
        (
            {"per_device_train_batch_size": 0},
            r"search_space\.per_device_train_batch_size: must lie in \[1, inf\], but got 0",
        ),
        (
            {"seed": {"low": 1.5, "high": 3}},
            r"search_space\.seed: expected a whole number, \{low, high, step\} of whole "
            r"numbers, or \{choices: \[\.\.\.\]\}, but got 1\.5",
        ),
        (
            {"per_device_train_batch_size": {"choices": [16, 24.5]}},
            r"search_space\.per_device_train_batch_size: expected whole numbers, but got 24\.5",
        ),
        (
            {"dropout": 0.1},
            r"search_space\.dropout: unknown key",
        ),
    ],
    ids=["smoothing-of-one", "batch-of-zero", "float-seed-range", "half-batch", "unknown"],
)
def test_bounds_come_from_the_table(
    tmp_path: Path, search_space: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_study_config(write(tmp_path, search_space=search_space))


# --- pruner and sampler sections -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"pruner": {"n_startup_trials": 5}}, MedianPrunerConfig),  # no type: the median
        ({"pruner": {"type": "none"}}, NoPrunerConfig),
        ({"pruner": {"type": "percentile", "percentile": 40}}, PercentilePrunerConfig),
        ({"sampler": {"type": "random", "seed": 3}}, RandomSamplerConfig),
    ],
    ids=["median-by-default", "none", "percentile", "random-sampler"],
)
def test_the_type_picks_the_config_model(
    tmp_path: Path, section: dict[str, Any], expected: type
) -> None:
    config = load_study_config(write(tmp_path, **section))
    name = next(iter(section))
    assert isinstance(getattr(config, name), expected)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"pruner": {"type": "none", "n_startup_trials": 5}},
            r"pruner\.n_startup_trials: is not a setting of the none pruner \(pruner\.type=none\); "
            r"its settings are none",
        ),
        (
            {"pruner": {"type": "median", "percentile": 40}},
            r"pruner\.percentile: is not a setting of the median pruner \(pruner\.type=median\); "
            r"its settings are \['interval_steps', 'min_delta', 'n_startup_trials', "
            r"'n_warmup_steps', 'patience'\]",
        ),
        (
            {"sampler": {"type": "random", "multivariate": False}},
            r"sampler\.multivariate: is not a setting of the random sampler",
        ),
        (
            {"pruner": {"type": "threshold"}},
            r"pruner: the threshold pruner needs lower or upper, but got neither",
        ),
    ],
    ids=["setting-on-none", "percentile-on-median", "tpe-setting-on-random", "threshold-bounds"],
)
def test_a_setting_of_another_type_is_an_error(
    tmp_path: Path, section: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_study_config(write(tmp_path, **section))


def test_switching_the_type_on_the_command_line_drops_the_files_settings_with_a_notice(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, pruner={"type": "median", "n_startup_trials": 4, "n_warmup_steps": 2})
    notices: list[str] = []
    config = load_study_config(path, {"pruner.type": "none"}, notify=notices.append)
    assert isinstance(config.pruner, NoPrunerConfig)
    assert notices == [
        "pruner.type=none from the command line: the study file's pruner.n_startup_trials, "
        "pruner.n_warmup_steps do not apply to it and are ignored"
    ]
    # To a type that shares a setting, the shared one is kept.
    kept = load_study_config(path, {"pruner.type": "percentile"}, notify=notices.append).pruner
    assert isinstance(kept, PercentilePrunerConfig) and kept.n_startup_trials == 4


def test_a_command_line_setting_for_another_type_is_still_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, pruner={"type": "median", "n_startup_trials": 4})
    with pytest.raises(
        ConfigError, match=r"pruner\.n_startup_trials: is not a setting of the none"
    ):
        load_study_config(
            path, {"pruner.type": "none", "pruner.n_startup_trials": 1}, notify=lambda _: None
        )


# --- the stored config ---------------------------------------------------------------------------


def _version_1_document() -> dict[str, Any]:
    """A config as sweeper stored it before pruners were typed: every setting of the flat
    pruner model, with its default, whatever the type."""
    document = StudyConfig.model_validate({**MINIMAL, "name": "old"}).model_dump(mode="json")
    document["pruner"] = {
        "type": "median",
        "n_startup_trials": 2,
        "n_warmup_steps": 0,
        "interval_steps": 1,
        "percentile": 25.0,
        "min_resource": "auto",
        "max_resource": "auto",
        "reduction_factor": 3,
        "lower": None,
        "upper": None,
        "patience": None,
        "min_delta": 0.0,
    }
    document["sampler"] = {
        "type": "random",
        "seed": 1,
        "n_startup_trials": 10,
        "multivariate": True,
    }
    del document["search_space"]["label_smoothing_factor"]
    return document


def test_a_config_stored_by_version_1_is_migrated() -> None:
    config = stored_config("old", {"config": _version_1_document()})
    assert isinstance(config.pruner, MedianPrunerConfig) and config.pruner.n_startup_trials == 2
    assert isinstance(config.sampler, RandomSamplerConfig) and config.sampler.seed == 1
    assert config.search_space.label_smoothing_factor == 0.0


def _version_2_document(**sections: Any) -> dict[str, Any]:
    """A config as sweeper 2 stored it: no early_stopping section, steps or epoch only (and,
    as up to version 3, no warm_start section)."""
    document = StudyConfig.model_validate({**MINIMAL, "name": "old"}).model_dump(mode="json")
    del document["early_stopping"]
    del document["warm_start"]
    document["evaluation"] = {"strategy": "steps", "steps": 10}
    return {**document, **sections}


@pytest.mark.parametrize(
    ("attrs", "patience", "evaluation"),
    [
        # Version 2: early stopping did not exist, so it is off whatever the default.
        ({"config": _version_2_document(), CONFIG_VERSION_ATTR: 2}, None, ("steps", None)),
        (
            {
                "config": _version_2_document(evaluation={"strategy": "epoch", "steps": 100}),
                CONFIG_VERSION_ATTR: 2,
            },
            None,
            ("epoch", None),
        ),
        # Version 1 goes through both steps.
        ({"config": _version_1_document()}, None, ("epoch", None)),
        # Version 3 keeps what it stored.
        (
            {
                "config": _version_2_document(
                    early_stopping={"patience": 3, "min_delta": 0.01},
                    evaluation={"strategy": "examples", "examples": 64, "steps": 100},
                ),
                CONFIG_VERSION_ATTR: 3,
            },
            3,
            ("examples", 64),
        ),
    ],
    ids=["v2-steps", "v2-epoch", "v1", "v3"],
)
def test_stored_configs_migrate_to_the_current_version(
    attrs: dict[str, Any], patience: int | None, evaluation: tuple[str, int | None]
) -> None:
    config = stored_config("old", attrs)
    assert config.warm_start.sources == []  # before version 4: no warm start, off
    assert config.early_stopping.patience == patience
    assert (config.evaluation.strategy, config.evaluation.examples) == evaluation


def test_a_stored_config_round_trips_at_the_current_version(tmp_path: Path) -> None:
    config = load_study_config(write(tmp_path, pruner={"type": "hyperband", "min_resource": 2}))
    attrs = {"config": config.model_dump(mode="json"), CONFIG_VERSION_ATTR: CONFIG_VERSION}
    assert stored_config("s", attrs) == config


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({}, r"study 's' has no stored sweeper config .* run `sweeper create`"),
        (
            {"config": {}, CONFIG_VERSION_ATTR: CONFIG_VERSION + 1},
            rf"study 's' was written by a newer sweeper \(config_version={CONFIG_VERSION + 1}; "
            rf"this one reads up to {CONFIG_VERSION}\): upgrade sweeper",
        ),
        (
            {"config": {"name": "s"}, CONFIG_VERSION_ATTR: CONFIG_VERSION},
            rf"invalid config stored in study 's' \(config_version={CONFIG_VERSION}\):\n  "
            r"dataset: is required"
            r"(.|\n)*open it with the sweeper version that wrote it",
        ),
    ],
    ids=["missing", "newer", "invalid"],
)
def test_a_stored_config_that_cannot_be_read_says_what_to_do(
    attrs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        stored_config("s", attrs)
