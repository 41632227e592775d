"""Datasets: load any text-classification data, check it, split it, tokenize it once.

:func:`prepare_data` is the entry point. It reads a hub dataset, a local file (CSV, TSV,
JSON lines, JSON, Parquet), a folder of such files named by split, or a folder written by
``datasets.save_to_disk``; checks the text and label columns; encodes labels with the
study's label names; carves a stratified, seeded test split when the study asks for one
(``dataset.test_fraction``), then a validation split when the data has none; and tokenizes
the splits once. Tokenized splits are cached on disk under a key made of the
data, the tokenizer and the max length, so later trials, later runs and other workers on
the same machine load them memory-mapped instead of tokenizing again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, load_dataset, load_from_disk
from datasets.utils.stratify import stratified_shuffle_split_generate_indices

from sweeper.attributes import (
    SPLIT_FINGERPRINTS_ATTR,
    SPLIT_SIZES_ATTR,
)
from sweeper.errors import DataError, ModelError
from sweeper.settings.config import DatasetConfig
from sweeper.trial.models import require_hub, resolve_local_path
from sweeper.trial.stores import fetch_data, is_store_url

# Text formats may also come compressed (train.csv.gz, reviews.jsonl.xz): pandas infers the
# codec from the last suffix.
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zip")
FILE_READERS = {
    ".csv": lambda path: pd.read_csv(path),
    ".tsv": lambda path: pd.read_csv(path, sep="\t"),
    ".tab": lambda path: pd.read_csv(path, sep="\t"),
    ".jsonl": lambda path: pd.read_json(path, lines=True),
    ".ndjson": lambda path: pd.read_json(path, lines=True),
    ".json": lambda path: _read_json(path),
    ".parquet": lambda path: pd.read_parquet(path),
    ".pq": lambda path: pd.read_parquet(path),
}
# Parquet compresses inside the file; the text formats may also come compressed as a whole.
READABLE_SUFFIXES = set(FILE_READERS) | {
    text + compression
    for text in FILE_READERS
    if text not in (".parquet", ".pq")
    for compression in COMPRESSION_SUFFIXES
}
LABEL = "label"
CACHE_FORMAT_VERSION = 3  # 2: capped splits keep the class balance; 3: label names 1.0 -> "1"


@dataclass
class PreparedData:
    """Tokenized splits ready for a Trainer: input_ids, attention_mask, label, length."""

    train: Dataset
    validation: Dataset
    label_names: list[str]
    cache_path: Path
    tokenizer: Any
    # The study's test split (None when it has none), tokenized and sorted as validation.
    # No trial of the sweep sees it: its Trainers get train and validation only.
    test: Dataset | None = None

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def column_values(split: Dataset, name: str) -> list[Any]:
    """A split's column as a list. datasets 4+ answers ``split[name]`` with a lazy Column
    that reads one row per item when iterated (about 35 us a row: a second for 30k rows);
    its slice converts the whole column at once."""
    return list(split[name][:])


def _read_json(path: Path) -> pd.DataFrame:
    """A JSON array of records, or one record per line."""
    if path.suffix.lower() in COMPRESSION_SUFFIXES:
        # No cheap peek inside a compressed file. A JSON-lines file of more than one record
        # is not valid JSON as a whole, so reading it as one document fails at once.
        try:
            return pd.read_json(path)
        except ValueError:
            return pd.read_json(path, lines=True)
    with path.open(encoding="utf-8") as handle:
        start = handle.read(4096).lstrip()[:1]
    return pd.read_json(path, lines=start != "[")


def data_suffix(path: Path) -> str:
    """A data file's suffix with its compression, if any: ``.csv``, ``.csv.gz``, ``.xlsx``."""
    compressed = path.suffix.lower() in COMPRESSION_SUFFIXES
    return "".join(path.suffixes[-2:] if compressed else path.suffixes[-1:]).lower()


def _split_file_name(path: Path) -> str:
    """``validation.csv.gz`` holds the split ``validation``."""
    return path.name[: len(path.name) - len(data_suffix(path))]


def _read_file(path: Path) -> pd.DataFrame:
    suffix = data_suffix(path)
    if suffix not in READABLE_SUFFIXES:
        raise DataError(
            f"dataset.path={str(path)!r} has an unsupported suffix {suffix!r}; expected one of "
            f"{sorted(FILE_READERS)} (text formats may end in {', '.join(COMPRESSION_SUFFIXES)}) "
            f"or a directory"
        )
    try:
        frame = FILE_READERS["." + suffix.split(".")[1]](path)  # pandas infers the compression
    except pd.errors.EmptyDataError:
        raise DataError(
            f"dataset.path={str(path)!r} is empty; expected a header and rows"
        ) from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"dataset.path={str(path)!r} could not be read as {suffix}: {exc}") from exc
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"dataset.path={str(path)!r} does not hold a table of rows")
    return frame


def _file_digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _load_raw(config: DatasetConfig) -> tuple[DatasetDict, str]:
    """The dataset's splits and a fingerprint of their content."""
    local = (
        fetch_data(config.path) if is_store_url(config.path) else resolve_local_path(config.path)
    )
    if local is not None and local.is_file():
        frame = _read_file(local)
        return DatasetDict(
            {"train": Dataset.from_pandas(frame, preserve_index=False)}
        ), _file_digest([local])
    if local is not None and local.is_dir():
        if (local / "dataset_dict.json").exists() or (local / "state.json").exists():
            loaded = load_from_disk(str(local))
            splits = loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
            return splits, "|".join(split._fingerprint for split in splits.values())
        files = [p for p in sorted(local.iterdir()) if data_suffix(p) in READABLE_SUFFIXES]
        if not files:
            raise DataError(
                f"dataset.path={config.path!r} is a directory with neither a saved dataset nor "
                f"files named by split (train.csv, validation.csv, ...)"
            )
        splits = DatasetDict(
            {
                _split_file_name(p): Dataset.from_pandas(_read_file(p), preserve_index=False)
                for p in files
            }
        )
        return splits, _file_digest(files)
    if data_suffix(Path(config.path)) in READABLE_SUFFIXES or config.path.startswith(
        (".", "/", "~")
    ):
        raise DataError(
            f"dataset.path={config.path!r} does not exist; expected a file or directory"
        )
    try:
        require_hub("dataset.path", config.path)
    except ModelError as exc:
        raise DataError(str(exc)) from None
    try:
        loaded = load_dataset(config.path)
    except Exception as exc:  # datasets raises many types for a bad hub id
        raise DataError(
            f"dataset.path={config.path!r} could not be loaded from the hub: {exc}"
        ) from exc
    if not isinstance(loaded, DatasetDict):
        raise DataError(f"dataset.path={config.path!r} did not load as named splits")
    return loaded, "|".join(split._fingerprint for split in loaded.values())


def _pick_split(splits: DatasetDict, name: str, key: str, source: str) -> Dataset:
    if name not in splits:
        raise DataError(
            f"{key}={name!r} is not a split of {source}; its splits are {sorted(splits)}"
        )
    split = splits[name]
    if len(split) == 0:
        raise DataError(f"{key}={name!r} of {source} has no rows")
    return split


def _check_columns(split: Dataset, config: DatasetConfig, split_name: str) -> None:
    for key, column in (("text_column", config.text_column), ("label_column", config.label_column)):
        if column not in split.column_names:
            raise DataError(
                f"dataset.{key}={column!r} is not a column of {config.path} ({split_name}); "
                f"its columns are {split.column_names}"
            )
    texts = column_values(split, config.text_column)
    bad_rows = [
        index for index, text in enumerate(texts) if not isinstance(text, str) or not text.strip()
    ]
    if bad_rows:
        raise DataError(
            f"dataset.text_column={config.text_column!r} has {len(bad_rows)} empty or non-text "
            f"value(s) in the {split_name} split (first at row {bad_rows[0]}); clean or drop those rows"
        )


def _label_names(splits: list[tuple[str, Dataset]], config: DatasetConfig) -> list[str]:
    """Names from the study file, else the dataset's ClassLabel, else the sorted values."""
    feature = splits[0][1].features[config.label_column]
    if config.label_names is not None:
        return list(config.label_names)
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    values: set[Any] = set()
    for _, split in splits:
        values.update(
            value for value in column_values(split, config.label_column) if not _missing(value)
        )
    names = sorted({_label_key(value) for value in values}, key=_natural_order)
    if len(names) < 2:
        raise DataError(
            f"dataset.label_column={config.label_column!r} holds {len(names)} distinct label(s) "
            f"({names}); a classifier needs at least 2"
        )
    return names


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _label_key(value: Any) -> str:
    """The name a label value stands for: 1, 1.0 and "1" all name the label "1"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _natural_order(name: str) -> tuple[int, float, str]:
    """Numeric names in numeric order (2 before 10), then the rest alphabetically."""
    try:
        number = float(name)
    except ValueError:
        return (1, 0.0, name)
    return (0, number, name) if math.isfinite(number) else (1, 0.0, name)


def _whole_number(value: Any) -> bool:
    if isinstance(value, bool):  # True is an int to Python, never a label id here
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _encode_labels(
    split: Dataset, split_name: str, config: DatasetConfig, names: list[str]
) -> Dataset:
    feature = split.features[config.label_column]
    values = column_values(split, config.label_column)
    if isinstance(feature, ClassLabel):
        values = [
            feature.names[value] if value is not None and value >= 0 else None for value in values
        ]
    index_of = {name: index for index, name in enumerate(names)}
    label_ids: list[int] = []
    for row, value in enumerate(values):
        if _missing(value):
            raise DataError(
                f"row {row} of the {split_name} split has no label in column "
                f"{config.label_column!r}; drop or fill the rows without one"
            )
        if _label_key(value) in index_of:
            label_ids.append(index_of[_label_key(value)])
        elif (
            config.label_names is not None and _whole_number(value) and 0 <= int(value) < len(names)
        ):
            # Ids with names given in the study file (a float 1.0 from a float column too).
            label_ids.append(int(value))
        else:
            raise DataError(
                f"unknown label {value!r} in row {row} of the {split_name} split "
                f"(column {config.label_column!r}); expected one of {names}"
                + ("" if config.label_names is None else " as set by dataset.label_names")
            )
    encoded = Dataset.from_dict(
        {"text": column_values(split, config.text_column), LABEL: label_ids},
    )
    return encoded.cast_column(LABEL, ClassLabel(names=names))


def stratified_split(
    split: Dataset,
    seed: int,
    *,
    test_size: float | int | None = None,
    train_size: int | None = None,
) -> tuple[Dataset, Dataset]:
    """``split.train_test_split(test_size=..., train_size=..., seed=seed,
    stratify_by_column="label")``: the same rows in the same order, without its cost.

    datasets reads the label column for stratification row by row (about 140 us a row:
    3.5 s for IMDb's 25,000, in every worker's start-up); here the column is read at once and
    the split drawn by datasets' own stratified sampler, with the sizes and generator
    train_test_split uses (a test in tests/trial/test_data.py compares the two). Raises
    ValueError where train_test_split does."""
    rows = len(split)
    if isinstance(test_size, float):
        n_test = math.ceil(test_size * rows)
    elif test_size is not None:
        n_test = int(test_size)
    n_train = rows - n_test if train_size is None else int(train_size)
    if test_size is None:
        n_test = rows - n_train
    if n_train <= 0 or n_test <= 0 or n_train + n_test > rows:
        raise ValueError(
            f"cannot split {rows} rows into {n_train} training and {n_test} held-out rows"
        )
    labels = np.asarray(column_values(split, LABEL))
    train_indices, test_indices = next(
        stratified_shuffle_split_generate_indices(
            labels, n_train, n_test, rng=np.random.default_rng(seed)
        )
    )
    return split.select(train_indices), split.select(test_indices)


def _cap(split: Dataset, limit: int | None, seed: int) -> Dataset:
    if limit is None or len(split) <= limit:
        return split
    # A stratified, seeded sample: a quick run on a capped split sees the classes in the
    # proportions of the whole split (a plain head would see one class of a sorted file).
    try:
        return stratified_split(split, seed, train_size=limit)[0].flatten_indices()
    except ValueError:  # a class too rare to stratify: fall back to a seeded shuffle
        return split.shuffle(seed=seed).select(range(limit)).flatten_indices()


def _carve(
    train: Dataset, size: float | int, key: str, value: float, names: list[str], seed: int
) -> tuple[Dataset, Dataset]:
    """A stratified, seeded share of ``train``: (the rest, the share). ``size`` is a
    fraction of ``train`` or a number of rows; ``key=value`` is the setting it comes from."""
    split_kind = key.removeprefix("dataset.").removesuffix("_fraction")
    counts = Counter(column_values(train, LABEL))
    rare = [names[label] for label, count in counts.items() if count < 2]
    if rare:
        raise DataError(
            f"labels {rare} have fewer than 2 rows, so no stratified {split_kind} split can hold "
            f"them; add rows or set dataset.{split_kind}_split to a named split"
        )
    try:
        return stratified_split(train, seed, test_size=size)
    except ValueError as exc:
        raise DataError(
            f"{key}={value} cannot split {len(train)} rows with {len(names)} labels: {exc}"
        ) from exc


def _validation_split(
    config: DatasetConfig,
    train: Dataset,
    named_validation: Dataset | None,
    names: list[str],
    rows: int,
) -> tuple[Dataset, Dataset]:
    """The validation split, named or carved from ``train``: (the rest of train, validation)."""
    if named_validation is not None:
        return train, _encode_labels(named_validation, "validation", config, names)
    size: float | int = config.validation_fraction
    if config.test_fraction is not None:
        # As many rows as without a test split (datasets rounds a fraction up).
        size = math.ceil(config.validation_fraction * rows)
        if size >= len(train):
            raise DataError(
                f"dataset.test_fraction={config.test_fraction} and "
                f"dataset.validation_fraction={config.validation_fraction} leave no "
                f"training rows of the {rows} in the {config.train_split} split; lower them"
            )
    return _carve(
        train,
        size,
        "dataset.validation_fraction",
        config.validation_fraction,
        names,
        config.split_seed,
    )


def _split(
    config: DatasetConfig, splits: DatasetDict
) -> tuple[Dataset, Dataset, Dataset | None, list[str]]:
    source = config.path
    train = _pick_split(splits, config.train_split, "dataset.train_split", source)
    named_validation = (
        _pick_split(splits, config.validation_split, "dataset.validation_split", source)
        if config.validation_split
        else None
    )
    named_test = (
        _pick_split(splits, config.test_split, "dataset.test_split", source)
        if config.test_split
        else None
    )
    present = [("train", train)] + ([("validation", named_validation)] if named_validation else [])
    for split_name, split in present + ([("test", named_test)] if named_test else []):
        _check_columns(split, config, split_name)
    # Label names come from train and validation only: a study with a test split has the
    # same labels as without one (a test label they lack is an unknown label).
    names = _label_names(present, config)
    train = _encode_labels(train, "train", config, names)
    test = _encode_labels(named_test, "test", config, names) if named_test is not None else None
    rows = len(train)
    if config.test_fraction is not None:
        # Carved first, so validation_fraction keeps meaning a share of the whole train split.
        train, test = _carve(
            train,
            config.test_fraction,
            "dataset.test_fraction",
            config.test_fraction,
            names,
            config.split_seed,
        )
    train, validation = _validation_split(config, train, named_validation, names, rows)
    train = _cap(train, config.max_train_rows, config.split_seed)
    validation = _cap(validation, config.max_validation_rows, config.split_seed)
    if test is not None:
        test = _cap(test, config.max_test_rows, config.split_seed)
    if len(set(column_values(train, LABEL))) < 2:
        raise DataError(
            f"the train split holds a single label ({names[train[0][LABEL]]!r}); "
            f"a classifier needs at least 2 (check dataset.max_train_rows and the label column)"
        )
    return train, validation, test, names


def _tokenizer_digest(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        # Calling the tokenizer with truncation/padding changes these fields in place; they
        # are per-call settings (max_length is in the key separately), not its identity.
        state.pop("truncation", None)
        state.pop("padding", None)
        identity = json.dumps(state, sort_keys=True)
    else:
        identity = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(f"{type(tokenizer).__name__}|{identity}".encode()).hexdigest()


# Settings that enter the cache key only when set: a study without a test split keeps the
# cache key it had before test splits existed.
_KEYED_WHEN_SET = ("test_split", "test_fraction", "max_test_rows")


def _cache_key(config: DatasetConfig, raw_digest: str, tokenizer: Any, max_length: int) -> str:
    unset = {key for key in _KEYED_WHEN_SET if getattr(config, key) is None}
    settings = config.model_dump(exclude={"path", *unset})
    parts = [
        str(CACHE_FORMAT_VERSION),
        raw_digest,
        json.dumps(settings, sort_keys=True),
        _tokenizer_digest(tokenizer),
        str(max_length),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def _tokenize(dataset: Dataset, tokenizer: Any, max_length: int) -> Dataset:
    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return dict(encoded)

    tokenized = dataset.map(encode, batched=True, batch_size=1000, remove_columns=["text"])
    return tokenized


def _sorted_longest_first(dataset: Dataset) -> Dataset:
    # datasets' sort passes pyarrow an option pyarrow 25 deprecates (a FutureWarning on every
    # run that no user can act on); the sort itself is unaffected.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"pyarrow(\.|$)")
        return dataset.sort("length", reverse=True)


@dataclass
class DataSplits:
    """The checked, label-encoded train, validation and test splits, before tokenization
    (``test`` is None when the study has no test split)."""

    train: Dataset
    validation: Dataset
    label_names: list[str]
    raw_digest: str
    test: Dataset | None = None

    def named(self) -> dict[str, Dataset]:
        """The study's splits by name: train, validation and, when it has one, test."""
        present = {"train": self.train, "validation": self.validation}
        return present | ({"test": self.test} if self.test is not None else {})


def load_splits(config: DatasetConfig) -> DataSplits:
    """Load, check and split the study's dataset; nothing is written."""
    splits, raw_digest = _load_raw(config)
    if all(len(split) == 0 for split in splits.values()):
        raise DataError(f"dataset.path={config.path!r} has no rows")
    train, validation, test, names = _split(config, splits)
    return DataSplits(train, validation, names, raw_digest, test)


# The study user attributes that record the data a study was created on (beside
# label_names): each split's rows, and a fingerprint of each split's content.


def _fingerprint(split: Dataset) -> str:
    """sha256 over the split's (label name, text) rows, whatever their order."""
    names = split.features[LABEL].names
    rows = sorted(
        hashlib.sha256(f"{names[label]}\x1f{text}".encode()).digest()
        for text, label in zip(
            column_values(split, "text"), column_values(split, LABEL), strict=True
        )
    )
    digest = hashlib.sha256()
    for row in rows:
        digest.update(row)
    return digest.hexdigest()


def split_sizes(splits: DataSplits) -> dict[str, int]:
    """Rows in each of the study's splits: ``{"train": ..., "validation": ..., "test": ...}``."""
    return {name: len(split) for name, split in splits.named().items()}


def split_fingerprints(splits: DataSplits) -> dict[str, str]:
    """A fingerprint of each split's rows (text and label, in any order): equal exactly
    when the split holds the same rows."""
    return {name: _fingerprint(split) for name, split in splits.named().items()}


def split_attrs(splits: DataSplits) -> dict[str, Any]:
    """The user attributes a study stores when it is created (see :func:`check_unchanged`)."""
    return {
        SPLIT_SIZES_ATTR: split_sizes(splits),
        SPLIT_FINGERPRINTS_ATTR: split_fingerprints(splits),
    }


def check_unchanged(
    study_attrs: Mapping[str, Any], splits: DataSplits, study_name: str | None = None
) -> None:
    """Raise :class:`DataError` when ``splits`` are not the data the study was created on
    (its ``split_fingerprints`` user attribute), naming each split that changed with its
    stored and current rows. A study created before sweeper recorded its splits has nothing
    to compare: it passes."""
    stored = study_attrs.get(SPLIT_FINGERPRINTS_ATTR)
    if not isinstance(stored, dict):
        return
    stored_sizes = study_attrs.get(SPLIT_SIZES_ATTR) or {}
    current, sizes = split_fingerprints(splits), split_sizes(splits)
    changed = []
    for name in [*stored, *(name for name in current if name not in stored)]:
        if stored.get(name) == current.get(name):
            continue
        before = (
            f"had {stored_sizes.get(name, '?')} rows (fingerprint {str(stored[name])[:12]})"
            if name in stored
            else "did not exist"
        )
        now = (
            f"{sizes[name]} rows (fingerprint {current[name][:12]})"
            if name in current
            else "no such split"
        )
        changed.append(f"its {name} split {before}, the data now gives {now}")
    if changed:
        study = f"study {study_name!r}" if study_name else "the study"
        raise DataError(
            f"the data changed under {study}: " + "; ".join(changed) + ". Restore the data "
            "(and dataset settings) the study was created with, or use a new study name "
            "(--set name=NEW_NAME)"
        )


def prepare_data(
    config: DatasetConfig,
    tokenizer: Any,
    max_length: int,
    cache_root: Path,
    *,
    splits: DataSplits | None = None,
) -> PreparedData:
    """Load, check, split and tokenize the study's dataset (from the on-disk cache when it
    can). ``splits`` are the already loaded splits of :func:`load_splits`, if any."""
    splits = splits or load_splits(config)
    train, validation, test, names, raw_digest = (
        splits.train,
        splits.validation,
        splits.test,
        splits.label_names,
        splits.raw_digest,
    )
    key = _cache_key(config, raw_digest, tokenizer, max_length)
    cache_path = cache_root / key
    if not (cache_path / "dataset_dict.json").exists():
        tokenized = DatasetDict(
            {
                "train": _tokenize(train, tokenizer, max_length),
                # Sorted by length, evaluation batches pad to similar lengths; order does not
                # change a metric.
                "validation": _sorted_longest_first(_tokenize(validation, tokenizer, max_length)),
            }
        )
        if test is not None:
            tokenized["test"] = _sorted_longest_first(_tokenize(test, tokenizer, max_length))
        staging = cache_root / f".{key}.{os.getpid()}.tmp"
        tokenized.save_to_disk(str(staging))
        try:
            staging.rename(cache_path)  # atomic: a concurrent worker sees all or nothing
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another worker won the race
    cached = load_from_disk(str(cache_path))
    assert isinstance(cached, DatasetDict)  # we wrote a DatasetDict above
    return PreparedData(
        train=cached["train"],
        validation=cached["validation"],
        label_names=names,
        cache_path=cache_path,
        tokenizer=tokenizer,
        test=cached.get("test"),
    )
