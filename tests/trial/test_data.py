"""Loading any text-classification data: formats, column names, labels, splits, the cache."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer

from sweeper.errors import DataError
from sweeper.settings.config import DatasetConfig
from sweeper.trial.data import prepare_data

ROWS = [
    ("a wonderful, moving film", "pos"),
    ("dull and far too long", "neg"),
    ("I loved every minute", "pos"),
    ("the plot makes no sense", "neg"),
] * 10


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def frame(text: str = "body", label: str = "stars") -> pd.DataFrame:
    return pd.DataFrame(
        {text: [row[0] for row in ROWS], label: [row[1] for row in ROWS], "extra": 1}
    )


def dataset_config(path: Path | str, **fields: Any) -> DatasetConfig:
    return DatasetConfig(path=str(path), text_column="body", label_column="stars", **fields)


WRITERS = {
    "csv": lambda df, path: df.to_csv(path, index=False),
    "tsv": lambda df, path: df.to_csv(path, sep="\t", index=False),
    "jsonl": lambda df, path: df.to_json(path, orient="records", lines=True),
    "json": lambda df, path: df.to_json(path, orient="records"),
    "parquet": lambda df, path: df.to_parquet(path),
}


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_every_file_format_loads_with_its_own_column_names(
    tmp_path: Path, tokenizer: Any, suffix: str
) -> None:
    path = tmp_path / f"data.{suffix}"
    WRITERS[suffix](frame(), path)
    data = prepare_data(dataset_config(path), tokenizer, 32, tmp_path / "cache")
    assert data.label_names == ["neg", "pos"]
    assert len(data.train) + len(data.validation) == len(ROWS)
    assert {"input_ids", "attention_mask", "label", "length"} <= set(data.train.column_names)
    assert "body" not in data.train.column_names and "extra" not in data.train.column_names
    assert max(data.train["length"]) <= 32


@pytest.mark.parametrize("name", ["data.csv.gz", "data.tsv.bz2", "data.jsonl.xz", "data.json.gz"])
def test_compressed_text_files_load(tmp_path: Path, tokenizer: Any, name: str) -> None:
    path = tmp_path / name
    writer = WRITERS[name.split(".")[1]]
    writer(frame(), path)  # pandas compresses by the last suffix
    data = prepare_data(dataset_config(path), tokenizer, 32, tmp_path / "cache")
    assert data.label_names == ["neg", "pos"]
    assert len(data.train) + len(data.validation) == len(ROWS)


@pytest.mark.parametrize(
    ("labels", "fields", "names", "first_ids"),
    [
        pytest.param([True, False], {}, ["False", "True"], [1, 0], id="booleans"),
        pytest.param([1.0, 0.0], {}, ["0", "1"], [1, 0], id="whole-floats-name-themselves"),
        pytest.param(
            [1.0, 0.0], {"label_names": ["neg", "pos"]}, ["neg", "pos"], [1, 0], id="float-ids"
        ),
        pytest.param([10, 2], {}, ["2", "10"], [1, 0], id="numeric-order"),
    ],
)
def test_label_values_of_any_type(
    tmp_path: Path,
    tokenizer: Any,
    labels: list[Any],
    fields: dict[str, Any],
    names: list[str],
    first_ids: list[int],
) -> None:
    rows = {"body": [row[0] for row in ROWS], "stars": labels * (len(ROWS) // 2)}
    path = tmp_path / "data.parquet"
    pd.DataFrame(rows).to_parquet(path)
    config = dataset_config(path, validation_split="train", **fields)
    data = prepare_data(config, tokenizer, 32, tmp_path / "cache")
    assert data.label_names == names
    assert data.validation["label"][:2] == first_ids


def test_validation_split_is_stratified_and_seeded(tmp_path: Path, tokenizer: Any) -> None:
    path = tmp_path / "data.csv"
    frame().to_csv(path, index=False)
    first = prepare_data(
        dataset_config(path, validation_fraction=0.5), tokenizer, 32, tmp_path / "a"
    )
    second = prepare_data(
        dataset_config(path, validation_fraction=0.5), tokenizer, 32, tmp_path / "b"
    )
    assert (
        sorted(first.validation["label"]) == [0] * 10 + [1] * 10
    )  # stratified: half of each label
    assert first.validation["input_ids"] == second.validation["input_ids"]  # seeded


def test_saved_dataset_with_named_splits_and_integer_labels(tmp_path: Path, tokenizer: Any) -> None:
    rows = {"text": [row[0] for row in ROWS], "label": [int(row[1] == "pos") for row in ROWS]}
    DatasetDict({"train": Dataset.from_dict(rows), "test": Dataset.from_dict(rows)}).save_to_disk(
        tmp_path / "saved"
    )
    config = DatasetConfig(
        path=str(tmp_path / "saved"),
        text_column="text",
        label_column="label",
        validation_split="test",
        label_names=["negative", "positive"],
        max_train_rows=12,
    )
    data = prepare_data(config, tokenizer, 16, tmp_path / "cache")
    assert data.label_names == ["negative", "positive"]
    assert len(data.train) == 12 and len(data.validation) == len(ROWS)


def test_folder_of_split_files(tmp_path: Path, tokenizer: Any) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    frame().to_csv(folder / "train.csv", index=False)
    frame().head(8).to_csv(folder / "validation.csv.gz", index=False)
    data = prepare_data(
        dataset_config(folder, validation_split="validation"), tokenizer, 16, tmp_path / "cache"
    )
    assert len(data.train) == len(ROWS) and len(data.validation) == 8


def test_tokenization_is_cached_on_disk_and_reused(tmp_path: Path, tokenizer: Any) -> None:
    path = tmp_path / "data.csv"
    frame().to_csv(path, index=False)
    first = prepare_data(dataset_config(path), tokenizer, 32, tmp_path / "cache")
    written = (first.cache_path / "dataset_dict.json").stat().st_mtime_ns
    time.sleep(0.01)
    second = prepare_data(dataset_config(path), tokenizer, 32, tmp_path / "cache")
    assert second.cache_path == first.cache_path
    assert (
        second.cache_path / "dataset_dict.json"
    ).stat().st_mtime_ns == written  # loaded, not rewritten
    other_length = prepare_data(dataset_config(path), tokenizer, 16, tmp_path / "cache")
    assert other_length.cache_path != first.cache_path  # the key covers max length
    frame().head(20).to_csv(path, index=False)
    changed = prepare_data(dataset_config(path), tokenizer, 32, tmp_path / "cache")
    assert changed.cache_path != first.cache_path  # ... and the data itself


def write_csv(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("content", "fields", "message"),
    [
        pytest.param("", {}, r"bad\.csv' is empty; expected a header and rows", id="empty-file"),
        pytest.param("body,stars\n", {}, r"has no rows", id="header-only"),
        pytest.param(
            "review,stars\ngood,pos\n",
            {},
            r"dataset\.text_column='body' is not a column of .*bad\.csv \(train\); its columns are \['review', 'stars'\]",
            id="missing-text-column",
        ),
        pytest.param(
            "body,rating\ngood,pos\n",
            {},
            r"dataset\.label_column='stars' is not a column .* its columns are \['body', 'rating'\]",
            id="missing-label-column",
        ),
        pytest.param(
            "body,stars\ngood,pos\nbad,neg\nmeh,neutral\ngreat,pos\nawful,neg\n",
            {"label_names": ["neg", "pos"]},
            r"unknown label 'neutral' in row 2 .*expected one of \['neg', 'pos'\] as set by dataset\.label_names",
            id="unknown-label",
        ),
        pytest.param(
            "body,stars\ngood,1\nbad,0\nmeh,\nfine,1\nawful,0\n",
            {},
            r"row 2 of the train split has no label in column 'stars'; drop or fill the rows",
            id="missing-label",
        ),
        pytest.param(
            "body,stars\ngood,pos\n,neg\n",
            {},
            r"dataset\.text_column='body' has 1 empty or non-text value\(s\) .* row 1",
            id="empty-text",
        ),
        pytest.param(
            "body,stars\ngood,pos\nfine,pos\n",
            {},
            r"holds 1 distinct label\(s\) \(\['pos'\]\); a classifier needs at least 2",
            id="single-label",
        ),
        pytest.param(
            "body,stars\ngood,pos\nbad,neg\nfine,pos\n",
            {},
            r"labels \['neg'\] have fewer than 2 rows",
            id="too-rare-to-stratify",
        ),
        pytest.param(
            "body,stars\ngood,pos\nbad,neg\n",
            {"validation_split": "test"},
            r"dataset\.validation_split='test' is not a split of .*; its splits are \['train'\]",
            id="unknown-split",
        ),
    ],
)
def test_bad_data_names_the_problem(
    tmp_path: Path, tokenizer: Any, content: str, fields: dict[str, Any], message: str
) -> None:
    path = write_csv(tmp_path, content)
    with pytest.raises(DataError, match=message):
        prepare_data(dataset_config(path, **fields), tokenizer, 32, tmp_path / "cache")
    assert not (tmp_path / "cache").exists(), "a bad dataset must not leave a cache behind"


def test_missing_file_and_unsupported_format(tmp_path: Path, tokenizer: Any) -> None:
    with pytest.raises(DataError, match=r"dataset\.path='\./nope\.csv' does not exist"):
        prepare_data(dataset_config("./nope.csv"), tokenizer, 32, tmp_path / "cache")
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match=r"unsupported suffix '\.xlsx'"):
        prepare_data(dataset_config(path), tokenizer, 32, tmp_path / "cache")
    path = tmp_path / "data.xlsx.gz"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match=r"unsupported suffix '\.xlsx\.gz'.*may end in \.gz"):
        prepare_data(dataset_config(path), tokenizer, 32, tmp_path / "cache")


def test_hub_dataset_fails_fast_offline(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A closed port on loopback stands in for an unreachable hub: refused at once.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    started = time.perf_counter()
    with pytest.raises(
        DataError, match=r"dataset\.path='imdb' is not a local path.*Point dataset\.path at a local"
    ):
        prepare_data(dataset_config("imdb"), tokenizer, 32, tmp_path / "cache")
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize(
    ("rows", "shares", "test_size", "train_size", "seed"),
    [
        (100, (0.5, 0.5), 0.2, None, 42),  # a fraction: ceil, as datasets rounds it
        (101, (0.7, 0.3), 0.25, None, 7),
        (3179, (0.5, 0.5), 636, None, 42),  # a number of rows (the imdb study's test split)
        (500, (0.6, 0.3, 0.1), None, 64, 42),  # a cap: train_size rows kept
        (37, (0.8, 0.2), 0.3, None, 0),
    ],
)
def test_stratified_split_draws_what_train_test_split_draws(
    rows: int,
    shares: tuple[float, ...],
    test_size: float | int | None,
    train_size: int | None,
    seed: int,
) -> None:
    """sweeper's stratified split reads the labels at once but must keep every existing
    study's rows: the same rows, in the same order, as datasets' own train_test_split."""
    from datasets import ClassLabel

    from sweeper.trial.data import LABEL, stratified_split

    labels = [
        next(i for i, edge in enumerate(_edges(shares)) if n / rows < edge) for n in range(rows)
    ]
    split = Dataset.from_dict({"row": list(range(rows)), LABEL: labels}).cast_column(
        LABEL, ClassLabel(names=[f"c{i}" for i in range(len(shares))])
    )
    expected = split.train_test_split(
        test_size=test_size, train_size=train_size, seed=seed, stratify_by_column=LABEL
    )
    train, test = stratified_split(split, seed, test_size=test_size, train_size=train_size)
    assert train["row"][:] == expected["train"]["row"][:]
    assert test["row"][:] == expected["test"]["row"][:]


def _edges(shares: tuple[float, ...]) -> list[float]:
    total, edges = 0.0, []
    for share in shares:
        total += share
        edges.append(total)
    edges[-1] = 1.01
    return edges
