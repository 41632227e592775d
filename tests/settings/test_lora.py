"""model.method and the lora section: the forms a study file may give, the Optuna parameters
they become (a conditional space), and every bad input as one line naming its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from sweeper.attributes import CONFIG_ATTR, CONFIG_VERSION_ATTR
from sweeper.errors import ConfigError
from sweeper.settings.hyperparameters import (
    Choices,
    FloatRange,
    label,
    suggest_params,
    trial_params,
)
from sweeper.settings.samplers import TPESamplerConfig
from sweeper.settings.stored import stored_config, stored_document
from sweeper.settings.study_file import load_study_config
from tests.settings.test_config import with_changes, write

LORA_RANGE = {"low": 1e-4, "high": 3e-3, "log": True}
FULL_RANGE = {"low": 1e-5, "high": 3e-4, "log": True}
PER_METHOD_LR = {"learning_rate": {"full": FULL_RANGE, "lora": LORA_RANGE}}
BOTH = {"choices": ["full", "lora"]}


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        # A full study's space is what it was before LoRA: no method, no LoRA entry.
        (
            {},
            {"learning_rate", "per_device_train_batch_size", "num_train_epochs", "seed"},
        ),
        # A LoRA study: the method fixed, LoRA's entries in (fixed unless searched).
        (
            {"model__method": "lora", "lora": {"r": {"choices": [4, 8]}}},
            {"learning_rate", "lora_r", "method", "lora_alpha", "lora_target_modules"},
        ),
        # Both methods: the method searched, a per-method range one parameter per method.
        (
            {"model__method": BOTH, "search_space": PER_METHOD_LR},
            {"method", "full_learning_rate", "lora_learning_rate", "lora_r"},
        ),
    ],
    ids=["full", "lora", "both"],
)
def test_the_space_optuna_sees(tmp_path: Path, changes: dict[str, Any], names: set[str]) -> None:
    config = load_study_config(write(tmp_path, with_changes(**changes)))
    specs = config.space.specs()
    assert names <= set(specs)
    if "method" not in names:
        assert not any(name.startswith("lora_") or name == "method" for name in specs)
        assert "learning_rate" in specs


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("auto", "auto"),
        (["query", "value"], "query,value"),
        ("query, key,value", "query,key,value"),
        ({"choices": [["query", "value"], "query,key,value"]}, ["query,value", "query,key,value"]),
    ],
    ids=["auto", "list", "comma-string", "choices-of-lists"],
)
def test_target_modules_become_one_optuna_value(tmp_path: Path, value: Any, stored: Any) -> None:
    document = with_changes(model__method="lora", lora={"target_modules": value})
    spec = load_study_config(write(tmp_path, document)).lora.target_modules
    assert (spec.choices if isinstance(spec, Choices) else spec) == stored


BAD = [
    (
        {"model__method": "qlora"},
        r"model\.method: expected one of full, lora, but got 'qlora'",
    ),
    (
        {"model__method": "lora", "lora": {"r": 0}},
        r"lora\.r: is the rank of each adapter's update and must lie in \[1, inf\], but got 0",
    ),
    (
        {"model__method": "lora", "lora": {"r": {"low": 0, "high": 8}}},
        r"lora\.r: is the rank of each adapter's update and must lie in \[1, inf\], but got low=0",
    ),
    (
        {"model__method": "lora", "lora": {"alpha": 0}},
        r"lora\.alpha: must lie in \[1, inf\]",
    ),
    (
        {"model__method": "lora", "lora": {"dropout": 1.0}},
        r"lora\.dropout: is a share of the adapter's inputs and must lie in \[0, 1\)",
    ),
    (
        {"model__method": "lora", "lora": {"target_modules": []}},
        r"lora\.target_modules: expected module names, such as \[query, value\], but got \[\]",
    ),
    (
        {"model__method": "lora", "lora": {"target_modules": ["auto", "query"]}},
        r"lora\.target_modules: 'auto' stands alone",
    ),
    (
        {"model__method": "lora", "lora": {"bias": "some"}},
        r"lora\.bias: Input should be 'none', 'all' or 'lora_only'",
    ),
    (
        {"model__method": "lora", "lora": {"rank": 8}},
        r"lora\.rank: unknown key",
    ),
    (
        {"lora": {"r": {"choices": [4, 8]}}},
        r"lora\.r is searched \(choices=\[4, 8\]\), but model\.method='full' has no LoRA trial "
        r"to use it; set model\.method: lora \(or \{choices: \[full, lora\]\}\), or give lora\.r "
        r"one value",
    ),
    (
        {"model__method": BOTH, "search_space": {"learning_rate": {"lora": LORA_RANGE}}},
        r"search_space\.learning_rate: one spec per method takes a spec for each of full, lora "
        r"and nothing else, but got \['lora'\]; give both, or one spec",
    ),
    (
        {
            "model__method": BOTH,
            "search_space": {"learning_rate": {"full": FULL_RANGE, "lora": {"low": 1e-4}}},
        },
        r"search_space\.learning_rate\.lora: expected a number, \{low, high, log\}, or "
        r"\{choices: \[\.\.\.\]\}, but got \{'low': 0\.0001\}",
    ),
    (
        {"model__method": "lora", "search_space": PER_METHOD_LR},
        r"search_space\.learning_rate gives one spec per method, but every trial is a lora "
        r"fine-tune \(model\.method='lora'\); give search_space\.learning_rate one spec, or "
        r"search model\.method",
    ),
    (
        {"model__method": "lora", "lora": {"modules_to_save": ["pre_classifier,"]}},
        r"lora\.modules_to_save: expected module names, such as \[query, value\], but got "
        r"\['pre_classifier,'\]",
    ),
    (
        {
            "model__method": "lora",
            "baselines": [{"name": "card A", "params": {"method": "full"}}],
        },
        r"baselines\[0\] \(card A\): method=full is not among model\.method's values \['lora'\]",
    ),
    (
        {"baselines": [{"name": "card A", "params": {"lora_r": 8}}]},
        r"baselines\[0\] \(card A\): lora_r is a LoRA setting, but the baseline is a full "
        r"fine-tune; drop it or give the baseline method: lora",
    ),
    (
        {"model__method": BOTH, "search_space": {"seed": {"full": 1, "lora": 2}}},
        r"search_space\.seed: takes one spec for every method, not one per method",
    ),
    (
        {"sampler": {"type": "tpe", "multivariate": False, "group": True}},
        r"group=true models groups of hyperparameters jointly, which needs multivariate=true",
    ),
]


@pytest.mark.parametrize(
    ("changes", "message"),
    BAD,
    ids=[
        "unknown-method",
        "rank-zero",
        "rank-range-from-zero",
        "alpha-zero",
        "dropout-one",
        "no-targets",
        "auto-with-names",
        "unknown-bias",
        "unknown-key",
        "searched-without-lora-trials",
        "per-method-missing-one",
        "per-method-bad-inner-spec",
        "per-method-with-one-method",
        "empty-module-name",
        "baseline-method-not-searched",
        "lora-setting-on-full-baseline",
        "seed-per-method",
        "group-without-multivariate",
    ],
)
def test_bad_lora_settings_name_the_key(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_study_config(write(tmp_path, with_changes(**changes)))


def test_a_trial_samples_its_own_methods_parameters_only(tmp_path: Path) -> None:
    """Both methods in one study: a LoRA trial samples lora_learning_rate and the adapters'
    settings, a full one full_learning_rate and nothing of LoRA; by name, both have a
    learning_rate, and baselines without a method are full fine-tunes."""
    document = with_changes(
        model__method=BOTH,
        search_space=PER_METHOD_LR,
        lora={"r": {"choices": [4, 8]}},
        baselines=[
            {"name": "card A", "params": {"learning_rate": 1e-5}},
            {"name": "lora", "params": {"method": "lora", "learning_rate": 1e-3, "lora_r": 8}},
        ],
    )
    config = load_study_config(write(tmp_path, document))
    assert config.baseline_params() == [
        ("card A", {"method": "full", "full_learning_rate": 1e-5}),
        ("lora", {"method": "lora", "lora_learning_rate": 1e-3, "lora_r": 8}),
    ]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {"full": 0, "lora": 0}
    for _ in range(12):
        trial = study.ask()
        params = suggest_params(trial, config.space)
        method = params["method"]
        seen[method] += 1
        other = "full" if method == "lora" else "lora"
        assert f"{method}_learning_rate" in trial.params
        assert f"{other}_learning_rate" not in trial.params
        assert ("lora_r" in trial.params) == (method == "lora")
        assert ("lora_r" in params) == (method == "lora")
        assert params["learning_rate"] == trial.params[f"{method}_learning_rate"]
        assert trial_params(config.space, trial.params) == params
        study.tell(trial, 0.5)
    assert seen["full"] and seen["lora"]
    assert label("lora_learning_rate") == "lora lr"


def test_group_is_on_for_a_searched_method_unless_set() -> None:
    tpe = TPESamplerConfig(type="tpe")
    assert tpe.for_space(conditional=True).group is True
    assert tpe.for_space(conditional=False).group is False
    assert TPESamplerConfig(type="tpe", group=False).for_space(conditional=True).group is False


def test_a_version_4_study_reads_as_the_full_fine_tune_it_ran(tmp_path: Path) -> None:
    config = load_study_config(write(tmp_path, with_changes()))
    document = stored_document(config)
    del document["model"]["method"]
    del document["lora"]
    read = stored_config("s", {CONFIG_ATTR: document, CONFIG_VERSION_ATTR: 4})
    assert read.model.method == "full" and read.space.methods() == ["full"]
    lora = load_study_config(write(tmp_path, with_changes(model__method="lora")))
    again = stored_config("s", {CONFIG_ATTR: stored_document(lora), CONFIG_VERSION_ATTR: 5})
    assert again.model.method == "lora" and again.lora == lora.lora
    assert isinstance(again.search_space.learning_rate, FloatRange)


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("full", {"learning_rate": FloatRange(low=1e-6, high=1e-3, log=True)}),
        ("lora", {"learning_rate": FloatRange(low=1e-4, high=3e-3, log=True)}),
        (
            BOTH,
            {
                "full_learning_rate": FloatRange(low=1e-6, high=1e-3, log=True),
                "lora_learning_rate": FloatRange(low=1e-4, high=3e-3, log=True),
            },
        ),
    ],
    ids=["full", "lora", "both"],
)
def test_a_learning_rate_left_out_takes_each_methods_default(
    tmp_path: Path, method: Any, expected: dict[str, FloatRange]
) -> None:
    document = with_changes(model__method=method)
    config = load_study_config(write(tmp_path, document))
    specs = config.space.specs()
    assert {name: specs[name] for name in expected} == expected
    # Stored as it ran: read back, the same space.
    again = stored_config("s", {CONFIG_ATTR: stored_document(config), CONFIG_VERSION_ATTR: 5})
    assert again.space == config.space


def test_yaml_numbers_without_a_dot_are_numbers_in_choices_and_baselines(tmp_path: Path) -> None:
    """YAML 1.1 reads 1e-5 as a string: in choices and baselines it is the number meant (the
    text choices of method and target_modules made the union take strings as they were)."""
    path = tmp_path / "study.yaml"
    path.write_text(
        "dataset: {path: reviews.csv, text_column: review, label_column: sentiment}\n"
        "model: {name: some-model, max_length: 128}\n"
        "search_space: {learning_rate: {choices: [1e-5, 3e-5]}}\n"
        "baselines: [{name: a, params: {learning_rate: 1e-5}}]\n",
        encoding="utf-8",
    )
    config = load_study_config(path)
    assert config.search_space.learning_rate == Choices(choices=[1e-5, 3e-5])
    assert config.baseline_params() == [("a", {"learning_rate": 1e-5})]


def test_a_baseline_may_name_the_studys_one_method(tmp_path: Path) -> None:
    document = with_changes(baselines=[{"name": "a", "params": {"method": "full"}}])
    assert load_study_config(write(tmp_path, document)).baseline_params() == [("a", {})]


def _space_of(tmp_path: Path, name: str, **changes: Any) -> Any:
    return load_study_config(write(tmp_path, with_changes(**changes), f"{name}.yaml")).space


@pytest.mark.parametrize(
    ("source", "params", "target", "expected", "notes"),
    [
        (
            {"model__method": "lora"},
            {"learning_rate": 5e-4, "lora_r": 8},
            {
                "model__method": BOTH,
                "search_space": PER_METHOD_LR,
                "lora": {"r": {"choices": [4, 8]}},
            },
            {"method": "lora", "lora_learning_rate": 5e-4, "lora_r": 8},
            [],
        ),
        (
            {"search_space": {"learning_rate": FULL_RANGE}},
            {"learning_rate": 3e-5},
            {"model__method": BOTH, "search_space": PER_METHOD_LR},
            {"method": "full", "full_learning_rate": 3e-5},
            [],
        ),
        (
            {
                "model__method": BOTH,
                "search_space": PER_METHOD_LR,
                "lora": {"r": {"choices": [4, 8]}},
            },
            {"method": "lora", "lora_learning_rate": 2e-3, "lora_r": 4},
            {"search_space": {"learning_rate": FULL_RANGE}},
            {"learning_rate": 3e-4},
            [
                "method=lora: not searched here: dropped",
                "lora_r=4: not searched here: dropped",
                "learning_rate=0.002 lies outside [1e-05, 0.0003]: clipped to 0.0003",
            ],
        ),
    ],
    ids=["lora-into-both", "full-into-both", "both-lora-trial-into-full"],
)
def test_warm_start_carries_a_configuration_by_hyperparameter_and_method(
    tmp_path: Path,
    source: dict[str, Any],
    params: dict[str, Any],
    target: dict[str, Any],
    expected: dict[str, Any],
    notes: list[str],
) -> None:
    from sweeper.settings.hyperparameters import fixed_params
    from sweeper.settings.warm_start import in_target_names, map_into_space

    source_space = _space_of(tmp_path, "source", **source)
    target_space = _space_of(tmp_path, "target", **target)
    moved, fixed = in_target_names(params, source_space, fixed_params(source_space), target_space)
    mapped = map_into_space(moved, target_space, fixed)
    assert {k: v for k, v in mapped.params.items() if k in expected} == pytest.approx(expected)
    assert [note for note in mapped.notes if "sampled" not in note] == notes
