"""End-to-end sweeps of a tiny BERT, trained for real, on SQLite and on PostgreSQL."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.launch.cli import main
from sweeper.study.sweep import load_existing_study

# The cards' columns, and where each row lies on the evaluation grid (examples, grid).
HISTORY_KEYS = {
    "step",
    "epoch",
    "examples",
    "grid",
    "training_loss",
    "validation_loss",
    "accuracy",
    "f1",
}


def sweep(study_file: Path, *args: str) -> int:
    return main(["sweep", str(study_file), "--no-progress", *args])


def test_end_to_end_sweep(
    write_study: Callable[..., Path], storage_url: str, study_name: str
) -> None:
    path = write_study(study_name, budget={"n_trials": 3})
    assert sweep(path, "--storage", storage_url) == 0

    study = load_existing_study(study_name, storage_url)
    trials = study.get_trials()
    assert len(trials) == 3
    assert all(trial.state in (TrialState.COMPLETE, TrialState.PRUNED) for trial in trials)
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    assert complete, "at least one trial must complete"
    for trial in complete:
        history = trial.user_attrs["history"]
        assert history and all(set(row) == HISTORY_KEYS for row in history)
        losses = [row["validation_loss"] for row in history]
        # The objective is the best evaluation, not the last one.
        assert trial.value == pytest.approx(min(losses))
        assert trial.user_attrs["best_step"] == history[losses.index(min(losses))]["step"]
        steps = [row["step"] for row in history]
        assert steps == sorted(set(steps)), "each step is evaluated once"
        assert set(trial.intermediate_values) == set(steps)
        assert trial.user_attrs["train_seconds"] > 0 and trial.user_attrs["eval_seconds"] > 0
    # Disk stays bounded: only the study's best trial keeps a checkpoint, and only its best.
    best = study.best_trial
    checkpoint = Path(best.user_attrs["best_checkpoint"])
    assert (checkpoint / "model.safetensors").is_file()
    assert (checkpoint / "tokenizer.json").is_file()
    assert [p.name for p in checkpoint.parent.glob("checkpoint-*")] == [checkpoint.name]
    checkpoint_root = checkpoint.parent.parent
    assert sorted(p.name for p in checkpoint_root.iterdir()) == [f"trial-{best.number}"]
    runs = Path(study.user_attrs["config"]["output_dir"])
    assert (runs / study_name / "config.resolved.yaml").is_file()
    assert study.user_attrs["label_names"] == ["negative", "positive"]


def test_baselines_run_first_with_their_names(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    baselines = [
        {
            "name": "card A",
            "params": {
                "learning_rate": 1e-3,
                "per_device_train_batch_size": 32,
                "num_train_epochs": 1,
                "seed": 42,
            },
        },
        {
            "name": "card B",
            "params": {
                "learning_rate": 3e-3,
                "per_device_train_batch_size": 32,
                "num_train_epochs": 200,
                "seed": 42,
            },
        },
    ]
    path = write_study(baselines=baselines, budget={"n_trials": 2}, pruner={"type": "none"})
    assert sweep(path) == 0
    study = load_existing_study("tiny", f"sqlite:///{tmp_path / 'runs' / 'tiny' / 'study.db'}")
    first, second = study.get_trials()
    assert first.user_attrs["baseline"] == "card A" and first.params["learning_rate"] == 1e-3
    assert (
        second.user_attrs["baseline"] == "card B" and second.params["num_train_epochs"] == 2
    )  # capped


def test_absurd_learning_rate_is_stopped_with_its_reason(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    sane = {"per_device_train_batch_size": 16, "num_train_epochs": 1, "seed": 42}
    baselines = [
        {"name": "sane 1", "params": {"learning_rate": 1e-3, **sane}},
        {"name": "sane 2", "params": {"learning_rate": 2e-3, **sane}},
        {"name": "absurd", "params": {"learning_rate": 500.0, **sane}},
    ]
    path = write_study(
        baselines=baselines,
        budget={"n_trials": 3},
        search_space={"learning_rate": {"low": 1e-4, "high": 1000.0, "log": True}},
    )
    assert sweep(path) == 0
    study = load_existing_study("tiny", f"sqlite:///{tmp_path / 'runs' / 'tiny' / 'study.db'}")
    by_name = {trial.user_attrs["baseline"]: trial for trial in study.get_trials()}
    assert by_name["sane 1"].state == TrialState.COMPLETE
    assert by_name["sane 2"].state == TrialState.COMPLETE
    absurd = by_name["absurd"]
    assert absurd.state == TrialState.PRUNED
    assert absurd.user_attrs["stop_reason"].startswith(("pruned at step", "diverged:"))
    steps_run = max(absurd.intermediate_values, default=0)
    assert steps_run < absurd.user_attrs["planned_steps"], "a stopped trial must not run to the end"


def test_nan_loss_ends_the_trial_with_a_reason_and_the_study_continues(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # No pruner: only the divergence check can stop a trial whose loss is not finite.
    sane = {"per_device_train_batch_size": 16, "num_train_epochs": 1, "seed": 42}
    baselines = [
        {"name": "nan", "params": {"learning_rate": 1e30, **sane}},
        {"name": "sane", "params": {"learning_rate": 1e-3, **sane}},
    ]
    path = write_study(
        baselines=baselines,
        budget={"n_trials": 2},
        pruner={"type": "none"},
        search_space={"learning_rate": {"low": 1e-4, "high": 1e30, "log": True}},
    )
    assert sweep(path) == 0
    study = load_existing_study("tiny", f"sqlite:///{tmp_path / 'runs' / 'tiny' / 'study.db'}")
    nan_trial, sane_trial = study.get_trials()
    assert nan_trial.state == TrialState.PRUNED
    assert nan_trial.user_attrs["stop_reason"].startswith("diverged:")
    assert (
        "nan" in nan_trial.user_attrs["stop_reason"] or "inf" in nan_trial.user_attrs["stop_reason"]
    )
    assert sane_trial.state == TrialState.COMPLETE and math.isfinite(sane_trial.value or math.nan)


def test_running_twice_grows_one_study(
    write_study: Callable[..., Path], storage_url: str, study_name: str
) -> None:
    path = write_study(study_name, budget={"n_trials": 2})
    assert sweep(path, "--storage", storage_url) == 0
    assert sweep(path, "--storage", storage_url, "--n-trials", "3") == 0
    study = load_existing_study(study_name, storage_url)
    assert len(study.get_trials()) == 3
    names = [summary.study_name for summary in optuna.get_all_study_summaries(storage_url)]
    assert names.count(study_name) == 1
    # The budget counts what storage holds: a third run with the same budget adds nothing.
    assert sweep(path, "--storage", storage_url, "--n-trials", "3") == 0
    assert len(load_existing_study(study_name, storage_url).get_trials()) == 3


def test_overrides_reach_the_trials(write_study: Callable[..., Path], tmp_path: Path) -> None:
    path = write_study(budget={"n_trials": 5})
    assert (
        sweep(
            path,
            "--n-trials",
            "1",
            "--set",
            "search_space.num_train_epochs=2",
            "--set",
            "model.max_length=16",
        )
        == 0
    )
    study = load_existing_study("tiny", f"sqlite:///{tmp_path / 'runs' / 'tiny' / 'study.db'}")
    (trial,) = study.get_trials()
    assert "num_train_epochs" not in trial.params  # fixed by the override, not searched
    assert study.user_attrs["config"]["model"]["max_length"] == 16
    assert trial.user_attrs["history"][-1]["epoch"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"search_space": {"learning_rate": {"low": 1e-2, "high": 1e-4}}},
            "low must be below high",
        ),
        ({"dataset": {"text_column": "body"}}, r"dataset\.text_column='body' is not a column"),
        ({"dataset": {"label_names": ["good", "bad"]}}, r"unknown label 'negative'"),
    ],
)
def test_bad_input_exits_non_zero_and_writes_nothing(
    write_study: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, object],
    message: str,
) -> None:
    path = write_study(**change)
    assert sweep(path) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


def test_empty_dataset_exits_non_zero_and_writes_nothing(
    write_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    assert sweep(write_study(data_path=empty)) == 2
    assert "is empty; expected a header and rows" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_unreachable_database_fails_fast_and_hides_the_password(
    write_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.perf_counter()
    url = "postgresql+psycopg://sweeper:s3cret-pw@127.0.0.1:1/nowhere"
    assert sweep(write_study(), "--storage", url) == 2
    assert time.perf_counter() - started < 10
    err = capsys.readouterr().err
    assert "cannot be reached" in err and "127.0.0.1:1/nowhere" in err
    assert "s3cret-pw" not in err


def test_show_and_best(
    write_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study(budget={"n_trials": 2})
    assert sweep(path) == 0
    capsys.readouterr()
    assert main(["show", str(path)]) == 0
    table = capsys.readouterr().out
    assert (
        "state" in table
        and "best step" in table
        and table.count("COMPLETE") + table.count("PRUNED") == 2
    )
    assert main(["best", str(path)]) == 0
    best = capsys.readouterr().out
    assert (
        "best trial: #" in best
        and "checkpoint: " + str(tmp_path / "runs" / "tiny" / "checkpoints") in best
    )


def test_trials_release_their_models_and_trainers(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    """Memory does not grow with the number of trials: once a trial ends nothing holds its
    model, optimizer or Trainer (a 30-trial study would otherwise keep 30 models)."""
    import gc

    import torch
    from transformers import PreTrainedModel, Trainer

    path = write_study("leaks", budget={"n_trials": 3})
    assert sweep(path, "--storage", f"sqlite:///{tmp_path / 'study.db'}") == 0
    # The worker froze its start-up heap for the trials (run_trials) and unfroze it after.
    assert gc.get_freeze_count() == 0
    gc.collect()
    alive = [
        type(obj).__name__
        for obj in gc.get_objects()
        if isinstance(obj, (PreTrainedModel, Trainer, torch.optim.Optimizer))
    ]
    assert alive == []


def test_a_trial_near_chance_at_its_share_of_the_plan_is_pruned(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # margin 0.99: every accuracy is "near chance", so the rule must stop the trial at the
    # first evaluation at or past half of its planned steps, and no earlier.
    params = {"learning_rate": 1e-3, "per_device_train_batch_size": 16, "num_train_epochs": 2}
    path = write_study(
        baselines=[{"name": "dead", "params": {**params, "seed": 42}}],
        budget={"n_trials": 1},
        pruner={"type": "none"},
        near_chance={"at_fraction": 0.5, "margin": 0.99},
    )
    assert sweep(path) == 0
    study = load_existing_study("tiny", f"sqlite:///{tmp_path / 'runs' / 'tiny' / 'study.db'}")
    (trial,) = study.get_trials()
    assert trial.state == TrialState.PRUNED
    reason = trial.user_attrs["stop_reason"]
    assert re.match(r"near chance at step \d+.* of \d+ planned steps: best accuracy", reason)
    planned = trial.user_attrs["planned_steps"]
    steps = [row["step"] for row in trial.user_attrs["history"]]
    assert steps[-1] >= planned / 2 and all(step < planned / 2 for step in steps[:-1])
    assert steps[-1] < planned
