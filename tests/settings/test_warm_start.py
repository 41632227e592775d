"""Warm start's settings: the ``warm_start`` section, how a source's configuration maps into
a new search space, and the source-aware TPE (the test that fails when an Optuna upgrade
changes the TPESampler internals it reads)."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import BaseDistribution, FloatDistribution
from pydantic import ValidationError

from sweeper.settings.config import StudyConfig
from sweeper.settings.hyperparameters import SearchSpace
from sweeper.settings.samplers import (
    SourceAwareTPESampler,
    TPESamplerConfig,
    build_sampler,
    on_own_scale,
)
from sweeper.settings.stored import stored_document
from sweeper.settings.warm_start import (
    WarmStartConfig,
    WarmStartSource,
    map_into_space,
    observation_params,
    source_trials,
)

BASE: dict[str, Any] = {
    "name": "target",
    "dataset": {"path": "reviews.csv", "text_column": "text", "label_column": "label"},
    "model": {"name": "some-model", "max_length": 64},
}


@pytest.mark.parametrize(
    ("given", "study", "storage"),
    [
        ("imdb", "imdb", None),
        ("imdb@sqlite:////runs/imdb/study.db", "imdb", "sqlite:////runs/imdb/study.db"),
        (
            "old.v1@postgresql+psycopg://me:pw@db:5432/sweeps",
            "old.v1",
            "postgresql+psycopg://me:pw@db:5432/sweeps",
        ),
        ({"study": "imdb", "storage": "sqlite:///x.db"}, "imdb", "sqlite:///x.db"),
    ],
)
def test_a_source_is_a_name_or_a_name_at_a_storage(given: Any, study: str, storage: str) -> None:
    source = WarmStartSource.model_validate(given)
    assert (source.study, source.storage) == (study, storage)
    assert "pw" not in source.label()


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"sources": ["imdb@"]}, "names no storage after '@'"),
        ({"sources": ["bad name"]}, "String should match pattern"),
        ({"sources": ["imdb", "imdb"]}, "names 'imdb' twice"),
        ({"sources": ["imdb"], "top": -1}, "greater than or equal to 0"),
        ({"sources": ["imdb"], "source_weight": 0}, "greater than 0"),
        ({"sources": ["imdb"], "source_weight": 2}, "less than or equal to 1"),
        ({"sources": ["imdb"], "sampler": "yes please"}, "valid boolean"),
        ({"source": ["imdb"]}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_warm_start_section_is_refused(section: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        WarmStartConfig.model_validate(section)


def test_warm_start_null_is_off_and_a_source_password_is_never_stored() -> None:
    assert StudyConfig.model_validate({**BASE, "warm_start": None}).warm_start.sources == []
    config = StudyConfig.model_validate(
        {**BASE, "warm_start": {"sources": ["old@postgresql+psycopg://me:secret@db/sweeps"]}}
    )
    document = stored_document(config)
    assert document["warm_start"]["sources"] == [
        {"study": "old", "storage": "postgresql+psycopg://me@db/sweeps"}
    ]
    assert "secret" not in str(document)


def _space(**specs: Any) -> Any:
    return SearchSpace.model_validate(specs)


@pytest.mark.parametrize(
    ("params", "space", "expected", "notes"),
    [
        # In range: carried as it is.
        ({"learning_rate": 2e-5}, {"learning_rate": {"low": 1e-5, "high": 1e-4}}, 2e-5, []),
        # Outside a float range: clipped.
        (
            {"learning_rate": 3e-4},
            {"learning_rate": {"low": 1e-5, "high": 1e-4, "log": True}},
            1e-4,
            ["learning_rate=0.0003 lies outside [1e-05, 0.0001]: clipped to 0.0001"],
        ),
        # Outside an integer range with a step: clipped onto the grid.
        (
            {"num_train_epochs": 9},
            {"num_train_epochs": {"low": 1, "high": 5, "step": 2}},
            5,
            ["num_train_epochs=9 lies outside [1, 5]: clipped to 5"],
        ),
        # Above an integer range whose high is off its step: onto the grid's top (3, not 4).
        (
            {"num_train_epochs": 5},
            {"num_train_epochs": {"low": 1, "high": 4, "step": 2}},
            3,
            ["num_train_epochs=5 lies outside [1, 4]: clipped to 3"],
        ),
        # In range but off the step: snapped onto it.
        (
            {"num_train_epochs": 4},
            {"num_train_epochs": {"low": 1, "high": 5, "step": 2}},
            5,
            ["num_train_epochs=4 is off the step 2: snapped to 5"],
        ),
        # A categorical value within rounding of a choice: the choice itself.
        (
            {"per_device_train_batch_size": 32.000000000001},
            {"per_device_train_batch_size": {"choices": [16, 32]}},
            32,
            [],
        ),
        # Not a number (a plain Optuna source may hold anything): sampled.
        (
            {"per_device_train_batch_size": "large"},
            {"per_device_train_batch_size": {"choices": [16, 32]}},
            None,
            ["per_device_train_batch_size='large' is not a number: sampled"],
        ),
        # A categorical value not among the new choices: dropped, the sampler draws it.
        (
            {"per_device_train_batch_size": 64},
            {"per_device_train_batch_size": {"choices": [16, 32]}},
            None,
            ["per_device_train_batch_size=64 is not among the choices [16, 32]: sampled"],
        ),
    ],
)
def test_a_source_value_maps_into_the_new_space(
    params: dict[str, Any], space: dict[str, Any], expected: Any, notes: list[str]
) -> None:
    name = next(iter(params))
    fixed_rest = {"learning_rate": 1e-5, "per_device_train_batch_size": 16, "num_train_epochs": 1}
    fixed = {"seed": 42, "warmup_ratio": 0.0, "weight_decay": 0.0}
    specs = {**{k: v for k, v in fixed_rest.items() if k != name}, **space, **fixed}
    mapped = map_into_space(params, _space(**specs), source_fixed={})
    assert mapped.params.get(name) == (pytest.approx(expected) if expected else None)
    assert mapped.notes == notes


def test_parameters_the_spaces_do_not_share_are_dropped_or_sampled_each_said() -> None:
    space = _space(weight_decay={"low": 0.0, "high": 0.1}, seed=42, warmup_ratio=0.0)
    source = {"learning_rate": 3e-5, "seed": 7}
    mapped = map_into_space(source, space, source_fixed={"weight_decay": 0.0})
    assert "weight_decay" not in mapped.params and "seed" not in mapped.params
    assert "seed=7: not searched here (fixed at 42): dropped" in mapped.notes
    assert "weight_decay: not searched by the source (fixed at 0 there): sampled" in mapped.notes
    # As an observation, the source's trial ran with its fixed weight decay: that is kept.
    assert observation_params(source, space, {"weight_decay": 0.0})["weight_decay"] == 0.0


def _observed_study(weight: float | None, seed: int) -> list[float]:
    """Learning rates TPE draws for a new study's first 8 trials (every one scored 1.0),
    with 30 source trials that were good near 1e-2 and bad elsewhere, or without them."""
    space = _space(
        learning_rate={"low": 1e-5, "high": 1e-1, "log": True},
        per_device_train_batch_size=16,
        num_train_epochs=1,
        seed=42,
        warmup_ratio=0.0,
        weight_decay=0.0,
    )
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(30):
        lr = float(10 ** rng.uniform(-5, -1))
        rows.append(
            {"state": "COMPLETE", "value": abs(np.log10(lr) + 2), "params": {"learning_rate": lr}}
        )
    settings = TPESamplerConfig(type="tpe", seed=seed, n_startup_trials=5)
    sampler = (
        build_sampler(settings)
        if weight is None
        else build_sampler(settings, source_trials(rows, space), weight)
    )
    study = optuna.create_study(sampler=sampler)
    drawn = []
    for _ in range(8):
        trial = study.ask({"learning_rate": FloatDistribution(1e-5, 1e-1, log=True)})
        drawn.append(trial.params["learning_rate"])
        study.tell(trial, 1.0)
    assert all(t.number >= 0 for t in study.trials)  # the sources never became trials
    return drawn


def test_tpe_models_the_source_trials_from_the_first_draw() -> None:
    # This fails when an Optuna upgrade stops TPE reading its trials through the study it
    # is given (Study._get_trials), which is how the sources reach it.
    near = [0.0, 0.0]
    for seed in (1, 2, 3):
        for index, weight in enumerate((None, 0.5)):
            near[index] += sum(3e-3 <= lr <= 3e-2 for lr in _observed_study(weight, seed))
    cold, warm = near
    assert warm >= 2 * cold and warm >= 10, (cold, warm)


def test_a_source_trial_weighs_source_weight_of_one_of_the_study_s_own() -> None:
    # This fails when an Optuna upgrade changes TPESampler._build_parzen_estimator or the
    # estimator's weights, which is how the sources weigh less.
    space: dict[str, BaseDistribution] = {"learning_rate": FloatDistribution(1e-5, 1e-1, log=True)}
    rows = [{"state": "COMPLETE", "value": 0.5, "params": {"learning_rate": 1e-3}}]
    sources = source_trials(rows, _space(learning_rate={"low": 1e-5, "high": 1e-1, "log": True}))
    own = optuna.trial.create_trial(params={"learning_rate": 1e-2}, distributions=space, value=0.4)
    own.number = 0
    sampler = SourceAwareTPESampler(sources, 0.25, seed=0, n_startup_trials=0)
    study = optuna.create_study()
    estimator = sampler._build_parzen_estimator(study, space, [*sources, own], handle_below=True)
    weights = estimator._mixture_distribution.weights
    # [source, own, prior]: the source weighs a quarter of the study's own trial.
    assert weights[0] / weights[1] == pytest.approx(0.25)
    assert sources[0].number == -1


def test_source_values_are_put_on_the_study_s_own_scale_keeping_their_order() -> None:
    # Another task, other losses: a source's trials keep their order, at the study's quantiles.
    space = _space(learning_rate={"low": 1e-5, "high": 1e-1, "log": True})
    rows = [
        {"source": "old", "state": "COMPLETE", "value": value, "params": {"learning_rate": lr}}
        for value, lr in ((0.10, 1e-3), (0.30, 1e-2), (0.20, 1e-4))
    ]
    rows.append({"source": "old", "state": "PRUNED", "value": 0.9, "step": 2, "params": {}})
    sources = source_trials(rows, space)
    distributions: dict[str, BaseDistribution] = {
        "learning_rate": FloatDistribution(1e-5, 1e-1, log=True)
    }

    def own(*values: float) -> list[optuna.trial.FrozenTrial]:
        return [
            optuna.trial.create_trial(
                params={"learning_rate": 1e-3}, distributions=distributions, value=v
            )
            for v in values
        ]

    scaled = on_own_scale(sources, own(0.6, 0.7, 0.8))
    assert [t.value for t in scaled[:3]] == pytest.approx([0.6, 0.8, 0.7])
    assert scaled[3].state == optuna.trial.TrialState.PRUNED
    assert scaled[3].intermediate_values == {2: 0.9}
    assert [t.value for t in sources[:3]] == [0.10, 0.30, 0.20]  # the stored ones unchanged
    # One value of its own (or several equal ones) would tie them all: kept as they are.
    for values in ((0.6,), (0.6, 0.6)):
        assert [t.value for t in on_own_scale(sources, own(*values))[:3]] == [0.10, 0.30, 0.20]


def test_what_differed_never_shows_a_credential() -> None:
    from sweeper.records.warm_start import SourceStudy, task_differences

    source_config = StudyConfig.model_validate(BASE)
    target = StudyConfig.model_validate(
        {**BASE, "dataset": {**BASE["dataset"], "path": "s3://bucket/r.csv?token=SECRET"}}
    )
    source = SourceStudy("old", "minimize", "validation_loss", source_config, [], [])
    differs = task_differences(source, {}, target, None)
    assert differs == ["dataset.path: 'reviews.csv' -> 's3://bucket/r.csv'"]
