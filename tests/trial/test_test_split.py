"""The study's test split: carved or named, disjoint by construction, never evaluated by the
sweep, fingerprinted in the study so that a later command can tell when the data changed."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from transformers import AutoTokenizer, Trainer

from sweeper.errors import DataError
from sweeper.launch.cli import main
from sweeper.settings.config import DatasetConfig
from sweeper.settings.study_file import load_study_config
from sweeper.study.sweep import create_study
from sweeper.trial.data import (
    CACHE_FORMAT_VERSION,
    SPLIT_FINGERPRINTS_ATTR,
    SPLIT_SIZES_ATTR,
    DataSplits,
    _cache_key,
    _load_raw,
    _tokenizer_digest,
    check_unchanged,
    load_splits,
    prepare_data,
    split_fingerprints,
    split_sizes,
)
from tests.support.studies import REPO_ROOT


def texts(split: Any) -> set[str]:
    return set(split["text"])


def marked_rows(count_by_label: dict[str, int]) -> pd.DataFrame:
    """Rows whose text starts with a unique marker, ``row0007``, in label-sorted order."""
    labels = [label for label, count in count_by_label.items() for _ in range(count)]
    return pd.DataFrame(
        {
            "body": [
                f"row{index:04d} a review labelled {label}" for index, label in enumerate(labels)
            ],
            "stars": labels,
        }
    )


def config_for(path: Path, **fields: Any) -> DatasetConfig:
    return DatasetConfig(path=str(path), text_column="body", label_column="stars", **fields)


@pytest.fixture
def unbalanced_csv(tmp_path: Path) -> Path:
    """100 rows of 3 labels (50/30/20), sorted by label: a head would see one label."""
    path = tmp_path / "unbalanced.csv"
    marked_rows({"a": 50, "b": 30, "c": 20}).to_csv(path, index=False)
    return path


@pytest.fixture
def split_folder(tmp_path: Path, small_csv: Path) -> Path:
    """train.csv, validation.csv and test.csv of real reviews (160/40/40 rows)."""
    frame = pd.read_csv(small_csv)
    folder = tmp_path / "splits"
    folder.mkdir()
    frame.iloc[:160].to_csv(folder / "train.csv", index=False)
    frame.iloc[160:200].to_csv(folder / "validation.csv", index=False)
    frame.iloc[200:].to_csv(folder / "test.csv", index=False)
    return folder


# --- bad input: one clear line, exit 2, nothing written -------------------------------------


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        pytest.param(
            {"test_split": "test", "test_fraction": 0.2},
            r"dataset\.test_fraction: is set together with dataset\.test_split='test'; a study "
            r"has one test split: keep one of the two, but got 0\.2",
            id="both-test-keys",
        ),
        pytest.param(
            {"test_fraction": 1.5},
            r"dataset\.test_fraction: must lie strictly between 0 and 1, but got 1\.5",
            id="fraction-above-one",
        ),
        pytest.param(
            {"test_fraction": 0.0},
            r"dataset\.test_fraction: must lie strictly between 0 and 1, but got 0\.0",
            id="fraction-zero",
        ),
        pytest.param(
            {"test_fraction": 0.75},
            r"dataset\.test_fraction: and dataset\.validation_fraction=0\.25 leave no training "
            r"rows \(both are shares of dataset\.train_split and must sum to less than 1\); "
            r"lower one of them, but got 0\.75",
            id="fractions-sum-to-one",
        ),
        pytest.param(
            {"test_fraction": 0.7},
            r"search_space\.per_device_train_batch_size: \[16, 32\] exceed the 12 training rows "
            r"that dataset\.test_fraction=0\.7 and dataset\.validation_fraction=0\.25 leave, so "
            r"such a trial would not make one full step; lower the batch sizes, lower "
            r"dataset\.test_fraction=0\.7 and dataset\.validation_fraction=0\.25 or raise",
            id="fractions-leave-less-than-a-batch",
        ),
        pytest.param(
            {"validation_split": "validation", "test_split": "validation"},
            r"dataset\.test_split: is dataset\.validation_split too, so test rows would select "
            r"trials; name another split, or set dataset\.test_fraction to carve one from train, "
            r"but got 'validation'",
            id="test-is-validation",
        ),
        pytest.param(
            {"test_split": "train"},
            r"dataset\.test_split: is dataset\.train_split too, so test rows would be trained "
            r"on; name another split, or set dataset\.test_fraction to carve one from train, "
            r"but got 'train'",
            id="test-is-train",
        ),
        pytest.param(
            {"test_split": "testing"},
            r"dataset\.test_split='testing' is not a split of .*splits; its splits are "
            r"\['test', 'train', 'validation'\]",
            id="no-such-split-in-a-folder",
        ),
    ],
)
def test_bad_test_split_settings_fail_before_anything_is_written(
    write_study: Callable[..., Path],
    split_folder: Path,
    small_csv: Path,
    capsys: pytest.CaptureFixture[str],
    dataset: dict[str, Any],
    message: str,
) -> None:
    # The folder has named splits; the fraction cases carve from the 240-row file.
    data_path = split_folder if "test_split" in dataset else small_csv
    study = write_study(data_path=data_path, dataset=dataset)
    for command in (["check", str(study)], ["sweep", str(study), "--no-progress"]):
        assert main(command) == 2
        error = capsys.readouterr().err
        assert re.search(message, error), error
    assert not (study.parent / "runs").exists(), "no database, cache or checkpoint may be written"


def test_a_named_test_split_a_single_file_lacks_lists_its_splits(small_csv: Path) -> None:
    config = DatasetConfig(
        path=str(small_csv), text_column="review", label_column="sentiment", test_split="test"
    )
    with pytest.raises(
        DataError,
        match=r"dataset\.test_split='test' is not a split of .*; its splits are \['train'\]",
    ):
        load_splits(config)


@pytest.mark.parametrize(
    ("counts", "fields", "message"),
    [
        pytest.param(
            {"a": 5, "b": 5},
            {"test_fraction": 0.45, "validation_fraction": 0.5},
            r"dataset\.test_fraction=0\.45 and dataset\.validation_fraction=0\.5 leave no "
            r"training rows of the 10 in the train split; lower them",
            id="rounding-leaves-no-training-rows",
        ),
        pytest.param(
            {"a": 20, "b": 1},
            {"test_fraction": 0.2},
            r"labels \['b'\] have fewer than 2 rows, so no stratified test split can hold "
            r"them; add rows or set dataset\.test_split to a named split",
            id="label-too-rare-for-a-test-split",
        ),
    ],
)
def test_carving_that_cannot_work_names_the_settings(
    tmp_path: Path, counts: dict[str, int], fields: dict[str, Any], message: str
) -> None:
    path = tmp_path / "rows.csv"
    marked_rows(counts).to_csv(path, index=False)
    with pytest.raises(DataError, match=message):
        load_splits(config_for(path, **fields))


# --- without a test split nothing changes ---------------------------------------------------


def test_without_a_test_split_the_default_study_keeps_its_rows_and_cache_key(
    tiny_model_dir: Path,
) -> None:
    """The rows the default study's data settings chose before test splits existed: these
    fingerprints were computed by sweeper before this feature (commit 0c1da93)."""
    config = load_study_config("imdb", studies_dir=REPO_ROOT / "studies").dataset.model_copy(
        update={"test_fraction": None, "test_split": None, "max_test_rows": None}
    )
    splits = load_splits(config)
    assert splits.test is None
    assert split_fingerprints(splits) == {
        "train": "ad2c4a6ed8d6b78c624005bec56615b25e8a0ef65880a35d0cc0c92df62844d6",
        "validation": "f6995e40580eec1381d47b7c4f51079adbcd522c7c99ddd06136667104a62804",
    }
    # The cache key is made as before: the unset test keys do not enter it, so the caches
    # that studies without a test split already have stay valid.
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    _, raw_digest = _load_raw(config)
    settings = config.model_dump(exclude={"path", "test_split", "test_fraction", "max_test_rows"})
    before = "\n".join(
        [
            str(CACHE_FORMAT_VERSION),
            raw_digest,
            json.dumps(settings, sort_keys=True),
            _tokenizer_digest(tokenizer),
            "128",
        ]
    )
    assert (
        _cache_key(config, raw_digest, tokenizer, 128)
        == (hashlib.sha256(before.encode()).hexdigest()[:24])
    )
    with_test = config.model_copy(update={"test_fraction": 0.2})
    assert _cache_key(with_test, raw_digest, tokenizer, 128) != _cache_key(
        config, raw_digest, tokenizer, 128
    )


def test_the_default_study_keeps_its_training_and_validation_counts() -> None:
    """studies/imdb.yaml carves a 20% test split: its capped splits keep their sizes."""
    config = load_study_config("imdb", studies_dir=REPO_ROOT / "studies")
    assert split_sizes(load_splits(config.dataset)) == {
        "train": 640,
        "validation": 160,
        "test": 636,
    }


def test_a_named_test_split_leaves_train_and_validation_as_they_were(split_folder: Path) -> None:
    fields: dict[str, Any] = {
        "text_column": "review",
        "label_column": "sentiment",
        "max_train_rows": 100,
    }
    without = load_splits(DatasetConfig(path=str(split_folder), **fields))
    named = load_splits(DatasetConfig(path=str(split_folder), test_split="test", **fields))
    assert without.test is None and named.test is not None
    assert named.train["text"] == without.train["text"]
    assert named.validation["text"] == without.validation["text"]
    assert named.test["text"] == pd.read_csv(split_folder / "test.csv")["review"].tolist()
    assert not texts(named.test) & (texts(named.train) | texts(named.validation))


# --- test_fraction: stratified, seeded, disjoint ---------------------------------------------


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_test_fraction_is_stratified_seeded_and_disjoint(
    unbalanced_csv: Path, fraction: float
) -> None:
    config = config_for(unbalanced_csv, test_fraction=fraction, validation_fraction=0.2)
    splits = load_splits(config)
    assert splits.test is not None
    total = Counter(pd.read_csv(unbalanced_csv)["stars"])
    tested = Counter(splits.label_names[label] for label in splits.test["label"])
    for label, count in total.items():  # each label's share kept within one row
        assert abs(tested[label] - fraction * count) <= 1, (label, tested, fraction)
    assert len(splits.test) == math.ceil(fraction * 100)
    # validation_fraction stays a share of the whole train split, as without a test split
    assert len(splits.validation) == len(load_splits(config_for(unbalanced_csv)).validation) == 20
    train, validation, test = texts(splits.train), texts(splits.validation), texts(splits.test)
    assert not (train & validation or train & test or validation & test)
    assert len(train | validation | test) == 100
    # The same seed draws the same rows; another seed, others.
    assert split_fingerprints(load_splits(config)) == split_fingerprints(splits)
    reseeded = load_splits(config.model_copy(update={"split_seed": 7}))
    assert split_fingerprints(reseeded)["test"] != split_fingerprints(splits)["test"]


def test_max_test_rows_caps_the_test_split_keeping_its_labels(unbalanced_csv: Path) -> None:
    splits = load_splits(config_for(unbalanced_csv, test_fraction=0.5, max_test_rows=10))
    assert splits.test is not None and len(splits.test) == 10
    assert Counter(splits.label_names[label] for label in splits.test["label"]) == {
        "a": 5,
        "b": 3,
        "c": 2,
    }


def test_prepare_data_tokenizes_and_caches_the_test_split(
    unbalanced_csv: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    without = prepare_data(config_for(unbalanced_csv), tokenizer, 32, tmp_path / "cache")
    assert without.test is None
    config = config_for(unbalanced_csv, test_fraction=0.2)
    data = prepare_data(config, tokenizer, 32, tmp_path / "cache")
    assert data.cache_path != without.cache_path  # the key covers the test split
    assert data.test is not None and len(data.test) == 20
    assert {"input_ids", "attention_mask", "label", "length"} <= set(data.test.column_names)
    lengths = data.test["length"]
    assert lengths == sorted(lengths, reverse=True)  # length-sorted, as validation
    again = prepare_data(config, tokenizer, 32, tmp_path / "cache")  # from the cache
    assert again.cache_path == data.cache_path and again.test is not None
    assert again.test["input_ids"] == data.test["input_ids"]


# --- fingerprints and a study created on other data -----------------------------------------


def test_fingerprints_ignore_row_order_and_see_text_and_labels(unbalanced_csv: Path) -> None:
    splits = load_splits(config_for(unbalanced_csv, test_fraction=0.2))
    assert splits.test is not None
    reordered = DataSplits(
        splits.train.shuffle(seed=1),
        splits.validation.shuffle(seed=1),
        splits.label_names,
        splits.raw_digest,
        splits.test.shuffle(seed=1),
    )
    assert split_fingerprints(reordered) == split_fingerprints(splits)
    relabelled = splits.test.map(
        lambda row, index: {"label": (row["label"] + (index == 0)) % 3}, with_indices=True
    )
    changed = DataSplits(splits.train, splits.validation, splits.label_names, "", relabelled)
    assert split_fingerprints(changed)["test"] != split_fingerprints(splits)["test"]
    assert split_fingerprints(changed)["train"] == split_fingerprints(splits)["train"]


def test_sweep_refuses_a_study_whose_data_changed(
    write_study: Callable[..., Path],
    tmp_path: Path,
    small_csv: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "reviews.csv"
    shutil.copyfile(small_csv, data)
    study_file = write_study(data_path=data, dataset={"test_fraction": 0.25})
    config = load_study_config(study_file)
    created = create_study(config).study
    attrs = created.user_attrs
    assert attrs[SPLIT_SIZES_ATTR] == {"train": 120, "validation": 60, "test": 60}
    assert attrs[SPLIT_FINGERPRINTS_ATTR] == split_fingerprints(load_splits(config.dataset))
    create_study(config)  # the same data: resumes
    check_unchanged(attrs, load_splits(config.dataset), config.name)

    pd.read_csv(small_csv).iloc[:200].to_csv(data, index=False)  # 40 reviews dropped
    assert main(["sweep", str(study_file), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert re.search(
        r"the data changed under study 'tiny': its train split had 120 rows \(fingerprint "
        r"[0-9a-f]{12}\), the data now gives 100 rows \(fingerprint [0-9a-f]{12}\); its "
        r"validation split had 60 rows .*, the data now gives 50 rows .*; its test split had "
        r"60 rows .*, the data now gives 50 rows .*\. Restore the data \(and dataset settings\) "
        r"the study was created with, or use a new study name \(--set name=NEW_NAME\)",
        error,
    ), error
    study = optuna.load_study(study_name="tiny", storage=config.storage_url)
    assert study.get_trials() == [], "no trial may start on changed data"


@pytest.mark.parametrize(
    ("now", "message"),
    [
        pytest.param(
            {"test_fraction": None},
            r"its train split had 120 rows .* 180 rows .*; its test split had 60 rows "
            r"\(fingerprint [0-9a-f]{12}\), the data now gives no such split\.",
            id="test-split-dropped",
        ),
        pytest.param(
            {"split_seed": 7},
            r"its train split had 120 rows .* the data now gives 120 rows",
            id="same-sizes-other-rows",
        ),
    ],
)
def test_check_unchanged_names_each_split_that_changed(
    small_csv: Path, now: dict[str, Any], message: str
) -> None:
    stored_config = DatasetConfig(
        path=str(small_csv),
        text_column="review",
        label_column="sentiment",
        validation_fraction=0.25,
        test_fraction=0.25,
    )
    stored = load_splits(stored_config)
    attrs = {
        SPLIT_SIZES_ATTR: split_sizes(stored),
        SPLIT_FINGERPRINTS_ATTR: split_fingerprints(stored),
    }
    with pytest.raises(DataError, match=r"the data changed under study 'x': " + message):
        check_unchanged(attrs, load_splits(stored_config.model_copy(update=now)), "x")
    check_unchanged({}, stored, "x")  # a study from before fingerprints: nothing to compare


# --- no evaluation of the sweep sees a test row ---------------------------------------------


@pytest.mark.timeout(300)  # a tiny sweep of 2 trials: about a minute on a busy CPU
def test_no_evaluation_during_a_sweep_touches_a_test_row(
    write_study: Callable[..., Path],
    tmp_path: Path,
    small_csv: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every batch any Trainer evaluates goes through Trainer.prediction_step: a recorder
    around it (the real step still runs) keeps every example's tokens. Each review starts
    with a unique marker, so each example maps to exactly one row."""
    frame = pd.read_csv(small_csv)
    frame["review"] = [f"zq{index:04d} {text}" for index, text in enumerate(frame["review"])]
    data = tmp_path / "marked.csv"
    frame.to_csv(data, index=False)
    study_file = write_study(
        data_path=data, dataset={"test_fraction": 0.25}, budget={"n_trials": 2}
    )
    config = load_study_config(study_file)

    evaluated: list[tuple[int, ...]] = []
    prediction_step = Trainer.prediction_step

    def recording_step(
        self: Trainer, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        for ids, mask in zip(
            inputs["input_ids"].tolist(), inputs["attention_mask"].tolist(), strict=True
        ):
            evaluated.append(tuple(token for token, keep in zip(ids, mask, strict=True) if keep))
        return prediction_step(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(Trainer, "prediction_step", recording_step)
    assert main(["sweep", str(study_file), "--no-progress"]) == 0

    splits = load_splits(config.dataset)
    assert splits.test is not None and len(splits.test) == 60
    train, validation, test = texts(splits.train), texts(splits.validation), texts(splits.test)
    assert not (test & train or test & validation or train & validation)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))

    def tokens(rows: set[str]) -> set[tuple[int, ...]]:
        encoded = tokenizer(sorted(rows), truncation=True, max_length=config.model.max_length)
        return {tuple(ids) for ids in encoded["input_ids"]}

    assert len(tokens(train | validation | test)) == len(frame)  # one token row per review
    assert evaluated, "the sweep evaluated nothing: the recorder saw no batch"
    assert not set(evaluated) & tokens(test), "a test row was evaluated during the sweep"
    assert set(evaluated) == tokens(validation)  # every evaluation saw validation, only it
    study = optuna.load_study(study_name=config.name, storage=config.storage_url)
    assert len(study.get_trials()) == 2
    assert study.user_attrs[SPLIT_SIZES_ATTR] == {"train": 120, "validation": 60, "test": 60}
