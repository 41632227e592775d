"""Pre-flight: what would fail every trial is found before anything is written."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transformers import (
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    RobertaConfig,
)

from sweeper.launch.cli import main
from sweeper.settings.study_file import load_study_config
from sweeper.study.preflight import (
    CHECKPOINT_BYTES_PER_PARAMETER,
    check_directory,
    checkpoint_bytes,
)
from sweeper.trial.models import load_classifier, position_limit
from tests.support.studies import REPO_ROOT


@pytest.mark.parametrize(
    ("model_config", "expected"),
    [
        pytest.param(BertConfig(max_position_embeddings=512), 512, id="bert"),
        pytest.param(DistilBertConfig(max_position_embeddings=512), 512, id="distilbert"),
        # RoBERTa's table starts after its padding index 1: 514 rows fit 512 tokens.
        pytest.param(RobertaConfig(max_position_embeddings=514, pad_token_id=1), 512, id="roberta"),
        # DeBERTa-v3 adds no absolute position embedding: no fixed limit.
        pytest.param(DebertaV2Config(position_biased_input=False), None, id="deberta-v3"),
        pytest.param(DebertaV2Config(position_biased_input=True), 512, id="deberta-absolute"),
    ],
)
def test_position_limit_allows_for_offsets_and_relative_positions(
    model_config: Any, expected: int | None
) -> None:
    assert position_limit(model_config) == expected


def check(study: Path | str, *extra: str) -> int:
    return main(["check", str(study), *extra])


def runs_dir(study: Path) -> Path:
    return study.parent / "runs"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param(
            ["model.max_length=1024"],
            r"model\.max_length=1024 exceeds the 512 positions of .* \(bert\); set "
            r"model\.max_length to at most 512",
            id="max-length-over-positions",
        ),
        pytest.param(
            ["storage=postgresql+psycopg://sweeper:secret@127.0.0.1:1/nowhere"],
            r"storage='postgresql\+psycopg://sweeper:\*\*\*@127\.0\.0\.1:1/nowhere' cannot be "
            r"reached: OperationalError",
            id="storage-unreachable",
        ),
        pytest.param(
            ["search_space.per_device_train_batch_size={choices: [16, 512]}"],
            r"search_space\.per_device_train_batch_size: \[512\] exceed the 180 training rows, "
            r"so such a trial would not make one full step; keep the choices \[16\]",
            id="batch-larger-than-training-rows",
        ),
        pytest.param(
            ["training.gradient_accumulation_steps=16"],
            r"\[16, 32\] x training\.gradient_accumulation_steps=16 exceed the 180 training rows",
            id="accumulated-batch-larger-than-training-rows",
        ),
    ],
)
def test_check_fails_with_one_line_per_problem_and_writes_nothing(
    write_study: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    overrides: list[str],
    message: str,
) -> None:
    study = write_study()
    set_args = [item for pair in overrides for item in ("--set", pair)]
    assert check(study, *set_args) == 2
    error = capsys.readouterr().err
    assert "would fail every trial; nothing was written" in error
    assert len([line for line in error.splitlines() if line.startswith("  ")]) == 1
    assert re.search(message, error), error
    assert not runs_dir(study).exists()


def test_sweep_stops_before_the_storage_is_written(
    write_study: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    study = write_study()
    assert main(["sweep", str(study), "--set", "model.max_length=1024", "--no-progress"]) == 2
    assert "model.max_length=1024 exceeds the 512 positions" in capsys.readouterr().err
    assert not runs_dir(study).exists(), "no database, cache or checkpoint may be written"


def test_check_passes_a_good_study(
    write_study: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    study = write_study()
    assert check(study) == 0
    out = capsys.readouterr().out
    assert "passed the pre-flight check" in out and "180 training and 60 validation rows" in out
    assert not runs_dir(study).exists()


def test_output_dir_under_a_file_is_refused(
    write_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x", encoding="utf-8")
    study = write_study(output_dir=str(blocker / "runs"))
    assert check(study) == 2
    assert re.search(
        r"output_dir='.*not-a-dir/runs/tiny' cannot be created: .* is a file",
        capsys.readouterr().err,
    )


def test_free_space_is_checked_against_one_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model_config = AutoConfig.from_pretrained(str(tiny_model_dir))
    parameters = AutoModelForSequenceClassification.from_config(model_config).num_parameters()
    needed = checkpoint_bytes(model_config)
    assert needed == parameters * CHECKPOINT_BYTES_PER_PARAMETER
    free = shutil.disk_usage(tmp_path).free
    assert check_directory("checkpoint_root", tmp_path / "new" / "checkpoints", needed) == []
    [problem] = check_directory("checkpoint_root", tmp_path / "checkpoints", free * 2)
    assert problem.startswith(f"checkpoint_root='{tmp_path / 'checkpoints'}' has ")
    assert "free, but one checkpoint of this model takes about" in problem


def test_a_head_for_other_labels_is_reinitialised_and_said(
    write_study: Callable[..., Path],
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 3-label sentiment checkpoint on 2-label data: a fresh head, not a traceback."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    three_labels = tmp_path / "three-label-model"
    model = AutoModelForSequenceClassification.from_pretrained(
        str(tiny_model_dir), num_labels=3, ignore_mismatched_sizes=True
    )
    model.save_pretrained(three_labels)
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(three_labels)

    study = write_study(model={"name": str(three_labels), "max_length": 64})
    assert check(study) == 0
    assert (
        "has a classification head for 3 labels, the data has 2 (negative, positive): the head "
        "is re-initialised (ignore_mismatched_sizes)" in capsys.readouterr().out
    )
    classifier = load_classifier(str(three_labels), ["negative", "positive"])
    assert classifier.classifier.out_features == 2
    assert classifier.config.id2label == {0: "negative", 1: "positive"}


def test_full_size_study_fails_offline_naming_the_keys_to_change(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """HF_HUB_OFFLINE is set for the suite (conftest): the hub ids cannot be fetched."""
    study = REPO_ROOT / "studies" / "imdb-distilbert.yaml"
    load_study_config(study)  # valid as a file
    assert check(study, "--set", f"output_dir={tmp_path / 'runs'}") == 2
    error = capsys.readouterr().err
    assert "model.name='distilbert-base-uncased' is not a local path" in error
    assert "Point model.name at a local directory or file instead" in error
    assert "dataset.path='imdb' is not a local path" in error
    assert not (tmp_path / "runs").exists()
