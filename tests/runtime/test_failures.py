"""A failing trial fails alone: its reason is stored, the worker goes on, and a study whose
last ``workers.max_consecutive_failures`` trials all raised stops every worker (exit 3).

Trials fail for a real reason: the tiny BERT's ``model.safetensors`` is overwritten with
garbage, so ``from_pretrained`` raises inside every trial (the pre-flight check reads only
the model's config and tokenizer).
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from sweeper.errors import EXIT_TRIALS_FAILING, ConfigError, TrialsFailingError
from sweeper.launch.cli import main
from sweeper.runtime.workers import check_failure_streak, failure_streak
from sweeper.settings.config import WorkersConfig
from sweeper.settings.study_file import load_study_config
from sweeper.study.sweep import load_existing_study, run_study
from sweeper.views.report import render_report

QUICK = {
    "dataset": {"max_train_rows": 32, "max_validation_rows": 16},
    "search_space": {"num_train_epochs": 1},
    "evaluation": {"strategy": "epoch"},
    "pruner": {"type": "none"},
}
GARBAGE = b"this is not a safetensors file" * 64
# What safetensors says of GARBAGE, stored as the trial's reason.
REASON = "SafetensorError: Error while deserializing header"


@pytest.fixture
def broken_model_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A copy of the tiny BERT whose weights file is garbage."""
    directory = tmp_path / "broken-bert"
    shutil.copytree(tiny_model_dir, directory)
    (directory / "model.safetensors").write_bytes(GARBAGE)
    return directory


@pytest.fixture
def crashing_study(
    write_study: Callable[..., Path], broken_model_dir: Path, study_name: str, tmp_path: Path
) -> Callable[..., tuple[Path, str]]:
    """Writes a quick study of the broken model (sections as for write_study) and returns
    its file and its SQLite storage URL."""

    def write(**sections: Any) -> tuple[Path, str]:
        model = {"name": str(broken_model_dir)}
        path = write_study(study_name, **QUICK, model=model, **sections)
        return path, sqlite_url(tmp_path)

    return write


def repair(broken: Path, tiny_model_dir: Path) -> None:
    shutil.copyfile(tiny_model_dir / "model.safetensors", broken / "model.safetensors")


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


def assert_crashed(trial: FrozenTrial) -> None:
    """FAIL with its reason and the last frames stored, and never re-enqueued as a retry."""
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["failure"].startswith(REASON), trial.user_attrs
    frames = trial.user_attrs["failure_traceback"]
    assert REASON in frames.rstrip().splitlines()[-1]  # e.g. safetensors._safetensors_rust.
    assert 1 <= frames.count('  File "') <= 5
    assert "failed_trial" not in trial.system_attrs


def test_every_trial_crashing_stops_the_sweep_with_exit_3_after_three_failures(
    crashing_study: Callable[..., tuple[Path, str]],
    study_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, storage_url = crashing_study(budget={"n_trials": 5})
    args = ["sweep", str(path), "--storage", storage_url, "--no-progress"]
    assert main(args) == EXIT_TRIALS_FAILING == 3
    captured = capsys.readouterr()
    error = captured.err.splitlines()[-1]
    assert error.startswith(
        f"sweeper: error: the last 3 trials of study {study_name!r} (#0, #1, #2) all failed, "
        f"reaching workers.max_consecutive_failures=3; trial #2 failed with {REASON}"
    ), error
    assert "--set workers.max_consecutive_failures=4 to try one more trial" in error
    # After each failure the worker said so and went on (the third then stopped it).
    assert captured.out.count(f"failed and is not retried: {REASON}") == 3

    trials = load_existing_study(study_name, storage_url).get_trials()
    # Exactly three trials, none re-enqueued (no WAITING retry): a crash is not retried.
    assert [trial.number for trial in trials] == [0, 1, 2]
    for trial in trials:
        assert_crashed(trial)

    # Run again with nothing fixed: it stops at once, before starting another trial.
    assert main(args) == EXIT_TRIALS_FAILING
    assert "(#0, #1, #2) all failed" in capsys.readouterr().err
    assert len(load_existing_study(study_name, storage_url).get_trials()) == 3


def test_after_the_fix_one_more_allowed_failure_lets_the_study_finish(
    crashing_study: Callable[..., tuple[Path, str]],
    broken_model_dir: Path,
    tiny_model_dir: Path,
    study_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, storage_url = crashing_study(
        workers={"max_consecutive_failures": 1}, budget={"n_trials": 2}
    )
    args = ["sweep", str(path), "--storage", storage_url, "--no-progress"]
    assert main(args) == EXIT_TRIALS_FAILING
    assert "--set workers.max_consecutive_failures=2 to try one more" in capsys.readouterr().err
    repair(broken_model_dir, tiny_model_dir)
    assert main([*args, "--set", "workers.max_consecutive_failures=2"]) == 0
    failed, *finished = load_existing_study(study_name, storage_url).get_trials()
    assert_crashed(failed)
    # The first trial to finish reset the count: a limit of 1 would otherwise stop trial 2.
    assert [trial.state for trial in finished] == [TrialState.COMPLETE] * 2


class BreakAndRepair:
    """An Optuna study callback (run after each trial): it restores the weights after a
    failed trial and breaks them again after trial 1, so trials 0 and 2 fail and 1 and 3
    complete: two failures, never two in a row."""

    def __init__(self, broken: Path, good: Path):
        self.broken, self.good = broken, good

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.FAIL:
            repair(self.broken, self.good)
        elif trial.number == 1:
            (self.broken / "model.safetensors").write_bytes(GARBAGE)


def test_a_failed_trial_fails_alone_and_the_worker_finishes_the_budget(
    crashing_study: Callable[..., tuple[Path, str]],
    broken_model_dir: Path,
    tiny_model_dir: Path,
    study_name: str,
    tmp_path: Path,
) -> None:
    path, storage_url = crashing_study(
        workers={"max_consecutive_failures": 2}, budget={"n_trials": 2}
    )
    config = load_study_config(path, {"storage": storage_url})
    study = run_study(
        config,
        show_progress=False,
        extra_callbacks=[BreakAndRepair(broken_model_dir, tiny_model_dir)],
    )
    trials = study.get_trials()
    assert [trial.state for trial in trials] == [
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]
    assert_crashed(trials[0])
    assert_crashed(trials[2])
    for trial in (trials[1], trials[3]):
        assert "failure" not in trial.user_attrs and trial.user_attrs["history"]
    # A crashed trial leaves no checkpoint behind: only the best trial's directory stays.
    checkpoints = tmp_path / "runs" / study_name / "checkpoints"
    assert [p.name for p in checkpoints.iterdir()] == [f"trial-{study.best_trial.number}"]


@pytest.mark.timeout(600)
def test_two_workers_on_crashing_trials_both_stop_with_exit_3(
    crashing_study: Callable[..., tuple[Path, str]],
    study_name: str,
    tmp_path: Path,
) -> None:
    n_workers, limit = 2, 3
    path, storage_url = crashing_study(
        workers={"poll_seconds": 0.5, "max_consecutive_failures": limit}, budget={"n_trials": 20}
    )
    logs = [tmp_path / f"worker-{index}.log" for index in range(n_workers)]
    workers = []
    for log in logs:
        with log.open("wb") as output:
            command = [sys.executable, "-m", "sweeper", "worker", str(path)]
            workers.append(
                subprocess.Popen(
                    [*command, "--storage", storage_url, "--no-progress"],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            )
    codes = [worker.wait(timeout=600) for worker in workers]
    outputs = [log.read_text() for log in logs]
    assert codes == [EXIT_TRIALS_FAILING] * n_workers, "\n".join(outputs)
    for text in outputs:
        assert f"reaching workers.max_consecutive_failures={limit}" in text, text

    trials = load_existing_study(study_name, storage_url).get_trials()
    # Each worker starts a trial only while fewer than `limit` have failed in a row, so at
    # most one trial per other worker can be under way when the limit is reached.
    assert limit <= len(trials) <= limit + n_workers - 1, [t.state.name for t in trials]
    for trial in trials:
        assert_crashed(trial)


def test_show_and_the_report_give_the_failure_reason(
    crashing_study: Callable[..., tuple[Path, str]],
    study_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, storage_url = crashing_study(workers={"max_consecutive_failures": 1})
    assert main(["sweep", str(path), "--storage", storage_url, "--no-progress"]) == 3
    capsys.readouterr()
    assert main(["show", str(path), "--storage", storage_url]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    assert row.startswith("0  FAIL") and REASON in row, row

    page = render_report(load_existing_study(study_name, storage_url))
    failures = page[page.index("<h2>Failed trials</h2>") :]
    assert "<td>#0</td>" in failures and REASON in failures
    assert "<summary>traceback</summary>" in failures and "not retried" in failures


def ended(
    number: int,
    state: TrialState,
    minute: int,
    **user_attrs: str,
) -> FrozenTrial:
    """A finished trial that ended at ``minute``, as Optuna stores it."""
    start = datetime.datetime(2026, 1, 1)
    return FrozenTrial(
        number=number,
        state=state,
        value=0.5 if state == TrialState.COMPLETE else None,
        datetime_start=start,
        datetime_complete=start + datetime.timedelta(minutes=minute),
        params={"learning_rate": 1e-3},
        distributions={"learning_rate": FloatDistribution(1e-4, 1e-2)},
        user_attrs=user_attrs,
        system_attrs={},
        intermediate_values={},
        trial_id=number,
    )


def crashed(number: int, minute: int) -> FrozenTrial:
    return ended(
        number,
        TrialState.FAIL,
        minute,
        failure=f"RuntimeError: boom {number}",
        failure_traceback='  File "x.py", line 1, in f\nRuntimeError: boom\n',
    )


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgresql"])
def test_the_streak_counts_raised_trials_in_the_order_they_ended(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Read from Optuna's trials (in memory) or counted in SQL (sweeper's RDB storage): the
    same streak."""
    from sweeper.runtime.storage import open_storage

    storage = None
    if backend == "sqlite":
        storage = open_storage(f"sqlite:///{tmp_path / 'streak.db'}")
    elif backend == "postgresql":
        storage = open_storage(request.getfixturevalue("postgres_url"))
    name = f"streak-{uuid.uuid4().hex[:8]}"  # PostgreSQL outlives the test
    study = optuna.create_study(study_name=name, storage=storage)
    for trial in [
        crashed(0, minute=1),
        ended(1, TrialState.COMPLETE, minute=5),  # ended after #2: #2 is not in the streak
        crashed(2, minute=3),
        ended(3, TrialState.FAIL, minute=6, failure="interrupted at step 3 (checkpoint saved)"),
        crashed(4, minute=7),
        ended(5, TrialState.FAIL, minute=8),  # a dead worker's trial: no reason stored
        crashed(6, minute=9),
    ]:
        study.add_trial(trial)
    study.ask()  # running: not counted either
    assert [trial.number for trial in failure_streak(study)] == [4, 6]

    check_failure_streak(study, WorkersConfig(max_consecutive_failures=3))
    with pytest.raises(
        TrialsFailingError,
        match=rf"the last 2 trials of study '{name}' \(#4, #6\) all failed, reaching "
        r"workers\.max_consecutive_failures=2; trial #6 failed with RuntimeError: boom 6\. ",
    ):
        check_failure_streak(study, WorkersConfig(max_consecutive_failures=2))

    study.add_trial(ended(8, TrialState.PRUNED, minute=10))
    assert failure_streak(study) == []


def test_max_consecutive_failures_must_be_at_least_one(
    write_study: Callable[..., Path],
) -> None:
    path = write_study(workers={"max_consecutive_failures": 0})
    with pytest.raises(ConfigError, match=r"workers\.max_consecutive_failures"):
        load_study_config(path)
