"""Study-file parsing: every class of bad input fails with its key, value and fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sweeper.errors import ConfigError
from sweeper.launch.cli import build_parser, resolve_config
from sweeper.settings.config import BLOCKS_OFF, Choices, FloatRange, IntRange
from sweeper.settings.stored import stored_document
from sweeper.settings.study_file import find_study_file, load_study_config, parse_overrides
from tests.support.studies import REPO_ROOT

MINIMAL: dict[str, Any] = {
    "dataset": {"path": "reviews.csv", "text_column": "review", "label_column": "sentiment"},
    "model": {"name": "some-model", "max_length": 128},
}


def write(tmp_path: Path, document: Any, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        document if isinstance(document, str) else yaml.safe_dump(document), encoding="utf-8"
    )
    return path


def with_changes(**changes: Any) -> dict[str, Any]:
    """MINIMAL with dotted keys replaced (value None deletes the key)."""
    document = yaml.safe_load(yaml.safe_dump(MINIMAL))
    for dotted, value in changes.items():
        node = document
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return document


def test_minimal_study_gets_card_defaults(tmp_path: Path) -> None:
    config = load_study_config(write(tmp_path, MINIMAL))
    assert config.name == "study"
    assert config.training.adam_beta1 == 0.9 and config.training.adam_beta2 == 0.999
    assert config.training.adam_epsilon == 1e-8 and config.training.lr_scheduler_type == "linear"
    assert config.training.eval_batch_size == "auto"  # 32 on a CPU, 128 on a GPU
    assert config.search_space.learning_rate == FloatRange(low=1e-6, high=1e-3, log=True)
    assert config.search_space.per_device_train_batch_size == Choices(choices=[8, 16, 32, 64])
    assert 42 in config.search_space.seed.choices  # type: ignore[union-attr]
    assert config.objective.study_direction == "minimize"
    assert config.storage_url.startswith("sqlite:///") and config.storage_url.endswith(
        "runs/study/study.db"
    )


def test_imdb_study_file_is_valid_and_enqueues_both_cards() -> None:
    config = load_study_config("imdb", studies_dir=REPO_ROOT / "studies")
    baselines = dict(config.baseline_params())
    assert baselines["card A"]["learning_rate"] == 1e-5
    # card A trained 5 epochs and card B planned 200: both capped to the CPU study's maximum
    assert config.space.max_epochs() == 3
    assert baselines["card A"]["num_train_epochs"] == baselines["card B"]["num_train_epochs"] == 3
    # The default study runs from a bare clone: its data ships in the repository.
    assert Path(config.dataset.path) == (REPO_ROOT / "data" / "imdb-3k.csv.gz").resolve()
    # Its test split is carved from the data before validation, and no trial sees it.
    assert config.dataset.test_fraction == 0.2 and config.dataset.test_split is None
    assert all(
        params["per_device_train_batch_size"] == 32 and params["seed"] == 42
        for params in baselines.values()
    )


def test_full_size_study_file_is_valid_and_keeps_the_test_split_out() -> None:
    config = load_study_config("imdb-distilbert", studies_dir=REPO_ROOT / "studies")
    assert config.model.name == "distilbert-base-uncased" and config.dataset.path == "imdb"
    # IMDb's test split is never used to select: validation is carved from train, and the
    # named test split is the study's test split.
    assert config.dataset.validation_split is None and config.dataset.train_split == "train"
    assert config.dataset.test_split == "test" and config.dataset.test_fraction is None
    assert config.space.max_epochs() == 5
    assert {name for name, _ in config.baseline_params()} == {"card A", "card B"}


def test_toml_study_file(tmp_path: Path) -> None:
    text = """
[dataset]
path = "reviews.csv"
text_column = "body"
label_column = "stars"
[model]
name = "m"
max_length = 64
[search_space]
learning_rate = {low = 1e-5, high = 1e-4, log = true}
num_train_epochs = 2
"""
    config = load_study_config(write(tmp_path, text, "other.toml"))
    assert config.name == "other" and config.dataset.text_column == "body"
    assert config.search_space.num_train_epochs == 2
    assert isinstance(config.search_space.learning_rate, FloatRange)


BAD_STUDIES = [
    pytest.param(
        with_changes(dataset__text_column=None),
        r"dataset\.text_column: is required",
        id="missing-key",
    ),
    pytest.param(with_changes(model__max_len=64), r"model\.max_len: unknown key", id="unknown-key"),
    pytest.param(
        with_changes(learning_rat=1e-5), r"learning_rat: unknown key", id="unknown-top-level-key"
    ),
    pytest.param(
        with_changes(search_space__learning_rate={"low": 1e-3, "high": 1e-6, "log": True}),
        r"search_space\.learning_rate: low must be below high, but got low=0\.001, high=1e-06",
        id="inverted-float-range",
    ),
    pytest.param(
        with_changes(search_space__num_train_epochs={"low": 5, "high": 1}),
        r"search_space\.num_train_epochs: low must be below high, but got low=5, high=1",
        id="inverted-int-range",
    ),
    pytest.param(
        with_changes(search_space__learning_rate={"low": 0.0, "high": 1e-3, "log": True}),
        r"a log range needs low > 0, but got low=0\.0",
        id="log-range-from-zero",
    ),
    pytest.param(
        with_changes(search_space__per_device_train_batch_size={"choices": [16, 24.5]}),
        r"per_device_train_batch_size: expected whole numbers, but got 24\.5",
        id="fractional-batch",
    ),
    pytest.param(
        with_changes(search_space__warmup_ratio={"low": 0.0, "high": 1.5}),
        r"search_space\.warmup_ratio: is a share of the training steps and must lie in \[0, 1\), "
        r"but got high=1\.5",
        id="warmup-range-above-one",
    ),
    pytest.param(
        with_changes(search_space__warmup_ratio=1.0),
        r"search_space\.warmup_ratio: is a share of the training steps and must lie in \[0, 1\), "
        r"but got 1\.0",
        id="fixed-warmup-of-one",
    ),
    pytest.param(
        with_changes(model__max_length=-1),
        r"model\.max_length: Input should be greater than or equal to 8, but got -1",
        id="negative-max-length",
    ),
    pytest.param(
        with_changes(dataset__validation_fraction=1.5),
        # Once: the value is not repeated after a message that already shows it.
        r"dataset\.validation_fraction: must lie strictly between 0 and 1, but got 1\.5$",
        id="fraction-out-of-range",
    ),
    pytest.param(
        with_changes(dataset__label_names=["pos"]),
        r"dataset\.label_names: a classifier needs at least 2 labels",
        id="single-label-name",
    ),
    pytest.param(
        with_changes(objective={"metric": "accuracy", "direction": "minimize"}),
        r"accuracy is to maximize, but got direction='minimize'",
        id="objective-direction",
    ),
    pytest.param(
        with_changes(pruner={"type": "median", "n_warmup_steps": -1}),
        r"pruner\.n_warmup_steps: Input should be greater than or equal to 0, but got -1",
        id="negative-warmup",
    ),
    pytest.param(
        with_changes(pruner={"type": "bogus"}),
        r"pruner\.type: expected one of \['hyperband', 'median', 'none', 'percentile', "
        r"'rank', 'successive_halving', 'threshold'\], but got 'bogus'",
        id="unknown-pruner",
    ),
    pytest.param(
        with_changes(budget={"n_trials": None, "timeout_seconds": None}),
        r"a sweep needs n_trials or timeout_seconds, but both are null",
        id="unbounded-budget",
    ),
    pytest.param(
        with_changes(baselines=[{"name": "card A", "params": {"learning_rate": 1.0}}]),
        r"baselines\[0\] \(card A\): learning_rate=1\.0 lies outside the search range",
        id="baseline-outside-space",
    ),
    pytest.param(
        # One line: the range's own message, not one more per shape the spec was tried as.
        with_changes(search_space__learning_rate={"low": -1, "high": 1e-3, "log": True}),
        r"study\.yaml:\n  search_space\.learning_rate: a log range needs low > 0, but got "
        r"low=-1\.0\Z",
        id="negative-log-range-one-line",
    ),
    pytest.param(
        with_changes(search_space__learning_rate={"low": 1e-5, "high": "x"}),
        r"study\.yaml:\n  search_space\.learning_rate: expected a number, \{low, high, log\}, or "
        r"\{choices: \[\.\.\.\]\}, but got 'x'\Z",
        id="spec-of-no-shape-one-line",
    ),
    pytest.param(
        with_changes(baselines=[{"name": "x", "params": {"seed": 5}}]),
        r"seed=5 is not among the choices \[42, 7, 1234\]",
        id="baseline-seed-not-a-choice",
    ),
    pytest.param(
        with_changes(baselines=[{"name": "x", "params": {"lr": 1e-5}}]),
        r"unknown parameter 'lr'",
        id="baseline-unknown-param",
    ),
    pytest.param(
        with_changes(name="has space"), r"name: String should match pattern", id="bad-name"
    ),
    pytest.param("dataset: [unclosed", r"is not valid YAML", id="invalid-yaml"),
    pytest.param("", r"is empty; expected at least dataset and model sections", id="empty-file"),
    pytest.param("- a\n- b\n", r"must hold a mapping, but holds list", id="not-a-mapping"),
]


@pytest.mark.parametrize(("document", "message"), BAD_STUDIES)
def test_bad_study_file_names_the_problem(tmp_path: Path, document: Any, message: str) -> None:
    path = write(tmp_path, document)
    with pytest.raises(ConfigError, match=message):
        load_study_config(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"], "nothing may be written"


def test_unknown_study_name_lists_the_available_ones(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL, "alpha.yaml")
    with pytest.raises(ConfigError, match=r"no study named 'beta'.*studies found: \['alpha'\]"):
        find_study_file("beta", tmp_path)
    with pytest.raises(ConfigError, match=r"study file 'missing\.yaml' does not exist"):
        find_study_file("missing.yaml", tmp_path)


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (["model.max_length=128"], {"model.max_length": 128}),
        (["dataset.label_names=[neg, pos]"], {"dataset.label_names": ["neg", "pos"]}),
        (["storage=sqlite:///x.db"], {"storage": "sqlite:///x.db"}),
        (["training.adam_epsilon=1e-6"], {"training.adam_epsilon": 1e-6}),
        (["checkpoint_root="], {"checkpoint_root": None}),
    ],
)
def test_overrides_parse_as_yaml_scalars(pairs: list[str], expected: dict[str, Any]) -> None:
    assert parse_overrides(pairs) == expected


@pytest.mark.parametrize(
    ("source", "block", "off"),
    [
        ("file", "near_chance", {"at_fraction": None, "margin": 0.02}),
        ("set", "near_chance", {"at_fraction": None, "margin": 0.02}),
        ("file", "early_stopping", {"patience": None, "min_delta": 0.0}),
        ("set", "early_stopping", {"patience": None, "min_delta": 0.0}),
        ("file", "pruner", {"type": "none"}),
        ("set", "pruner", {"type": "none"}),
    ],
)
def test_a_block_set_to_null_is_its_off_form_and_stored_so(
    tmp_path: Path, source: str, block: str, off: dict[str, Any]
) -> None:
    on: dict[str, dict[str, Any]] = {
        "near_chance": {"at_fraction": 0.5, "margin": 0.05},
        "early_stopping": {"patience": 3, "min_delta": 0.01},
        "pruner": {"type": "median", "n_startup_trials": 2},
    }
    document = {**MINIMAL, **on}
    if source == "file":
        config = load_study_config(write(tmp_path, {**document, block: None}))
    else:
        config = load_study_config(write(tmp_path, document), parse_overrides([f"{block}=null"]))
    stored = stored_document(config)
    assert stored[block] == off  # never null: the off form, as the reference says
    for other, settings in on.items():
        if other != block:  # the other blocks stay on, as the file has them
            assert settings.items() <= stored[other].items()
    assert BLOCKS_OFF[block].items() <= stored[block].items()


def test_override_without_equals_sign_is_an_error() -> None:
    with pytest.raises(
        ConfigError, match=r"--set expects KEY=VALUE .* but got 'model\.max_length'"
    ):
        parse_overrides(["model.max_length"])


def test_cli_flags_win_over_set_which_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, with_changes(budget={"n_trials": 50}, model__max_length=512))
    args = build_parser().parse_args(
        [
            "sweep",
            str(path),
            "--set",
            "budget.n_trials=7",
            "--set",
            "model.max_length=96",
            "--n-trials",
            "3",
        ]
    )
    config = resolve_config(args)
    assert config.budget.n_trials == 3  # --n-trials beats --set beats the file
    assert config.model.max_length == 96  # --set beats the file
    assert config.search_space.num_train_epochs == IntRange(low=1, high=5)  # default


def test_unknown_override_key_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError, match=r"model\.max_lenght: unknown key"):
        load_study_config(path, {"model.max_lenght": 64})
    with pytest.raises(
        ConfigError,
        match=r"cannot set 'model\.name\.x': 'model\.name' is 'some-model', not a mapping",
    ):
        load_study_config(path, {"model.name.x": 1})


def test_relative_paths_resolve_against_the_study_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "reviews.csv").write_text("review,sentiment\n", encoding="utf-8")
    studies = tmp_path / "studies"
    studies.mkdir()
    path = write(studies, with_changes(dataset__path="../data/reviews.csv"))
    config = load_study_config(path)
    assert Path(config.dataset.path) == (tmp_path / "data" / "reviews.csv").resolve()
    assert config.model.name == "some-model"  # not on disk: left as a hub id


def test_fixed_epochs_cap_the_baselines_epochs_too() -> None:
    """A quick look fixes num_train_epochs=1; the cards' 5 and 200 epochs are capped, not refused."""
    config = load_study_config(
        "imdb", {"search_space.num_train_epochs": 1}, studies_dir=REPO_ROOT / "studies"
    )
    assert config.space.max_epochs() == 1
    assert all("num_train_epochs" not in params for _, params in config.baseline_params())
    with pytest.raises(ConfigError, match=r"num_train_epochs=0 differs from the study's fixed"):
        load_study_config(
            "imdb",
            {
                "search_space.num_train_epochs": 1,
                "baselines": [{"name": "x", "params": {"num_train_epochs": 0}}],
            },
            studies_dir=REPO_ROOT / "studies",
        )


def set_examples(document: str) -> list[str]:
    """The `SET="k=v ..."` examples of a document, less the placeholders."""
    return [
        pairs
        for pairs in re.findall(r'SET="([^"]+)"', (REPO_ROOT / document).read_text("utf-8"))
        if pairs != "k=v k=v" and "..." not in pairs
    ]


# The Makefile and the README always have one; a page under docs/ is checked when it has one.
DOCUMENTS_WITH_SET_EXAMPLES = [
    "Makefile",
    "README.md",
    *(
        path.relative_to(REPO_ROOT).as_posix()
        for path in sorted((REPO_ROOT / "docs").rglob("*.md"))
        if set_examples(path.relative_to(REPO_ROOT).as_posix())
    ),
]


@pytest.mark.parametrize("document", DOCUMENTS_WITH_SET_EXAMPLES)
def test_set_examples_in_the_docs_name_keys_the_study_file_has(document: str) -> None:
    """Every `SET="k=v ..."` example applies to the default study (an unknown key fails)."""
    examples = set_examples(document)
    assert examples, f"no SET example found in {document}"
    for pairs in examples:
        load_study_config("imdb", parse_overrides(pairs.split()), studies_dir=REPO_ROOT / "studies")
