"""One clean stop however many signals arrive: Ctrl-C to the whole process group and SIGTERM
to every process of `sweeper worker --gpus` (GPUs faked on the CPU), a duplicate within the
window ignored, a second signal after it exiting at once, and a stop during tokenization.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import TrialState

import sweeper.study.sweep
from sweeper.errors import EXIT_STOPPED_SIGINT, EXIT_STOPPED_SIGTERM
from sweeper.launch.cli import main
from sweeper.runtime.workers import FAKE_GPU_COUNT_ENV, StopRequest
from sweeper.study.sweep import load_existing_study
from tests.support.mid_trial import held_mid_trial, newest_checkpoints

# Trials of 4 epochs x 12 steps with a checkpoint every 4 steps (at every evaluation, best or
# not: resume_checkpoint_minutes 0); the test holds them mid-trial (see held_mid_trial)
# whatever this machine's speed.
TRIALS = {
    "resume_checkpoint_minutes": 0,
    "dataset": {"max_train_rows": 96, "max_validation_rows": 24},
    "search_space": {"num_train_epochs": 4, "per_device_train_batch_size": 8},
    "evaluation": {"strategy": "steps", "steps": 4},
    "pruner": {"type": "none"},
    "budget": {"n_trials": 2},
    "workers": {"heartbeat_interval_seconds": 1, "grace_period_seconds": 10, "poll_seconds": 0.5},
}


def test_duplicates_within_the_window_are_one_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    stop = StopRequest(window_seconds=3.0)
    stop._handle(signal.SIGINT, None)
    assert stop.requested and stop.signal_number == signal.SIGINT
    clock[0] += 1.0
    stop._handle(signal.SIGINT, None)  # the process group's copy, or the parent's
    stop._handle(signal.SIGTERM, None)
    assert exits == [] and stop.signal_number == signal.SIGINT
    clock[0] += 5.0
    stop._handle(signal.SIGINT, None)  # a second Ctrl-C after the window: exit at once
    assert exits == [128 + signal.SIGINT]


def test_a_forwarding_parent_passes_each_stop_on_once(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    forwarded: list[int] = []
    stop = StopRequest(window_seconds=3.0, forward=forwarded.append)
    stop._handle(signal.SIGTERM, None)
    stop._handle(signal.SIGTERM, None)
    clock[0] = 10.0
    stop._handle(signal.SIGINT, None)
    assert forwarded == [signal.SIGTERM, signal.SIGINT]
    assert stop.signal_number == signal.SIGTERM


def test_handlers_are_restored_after_main(
    write_study: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop while the data is tokenized (handlers are installed as `sweeper` starts) is
    clean: no trial runs, nothing is left RUNNING, the exit status says which signal; and
    main leaves the caller's handlers as they were."""
    real_prepare = sweeper.study.sweep.prepare_data

    def prepare_and_get_stopped(*args: object, **kwargs: object) -> object:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-tokenization
        return real_prepare(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sweeper.study.sweep, "prepare_data", prepare_and_get_stopped)
    before = signal.getsignal(signal.SIGTERM)
    path = write_study("tokenizing", budget={"n_trials": 2})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["sweep", str(path), "--storage", storage, "--no-progress"]) == (
        EXIT_STOPPED_SIGTERM
    )
    assert signal.getsignal(signal.SIGTERM) is before
    states = [t.state for t in load_existing_study("tokenizing", storage).get_trials()]
    assert TrialState.RUNNING not in states and TrialState.COMPLETE not in states, states


def start_gpus_worker(study_file: Path, storage_url: str, log: Path) -> subprocess.Popen[bytes]:
    """`sweeper worker --gpus all` with two fake GPUs, in its own process group."""
    with log.open("wb") as output:
        command = [sys.executable, "-m", "sweeper", "worker", str(study_file)]
        return subprocess.Popen(
            [*command, "--storage", storage_url, "--no-progress", "--gpus", "all"],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, FAKE_GPU_COUNT_ENV: "2"},
            start_new_session=True,
        )


def stop_and_check(
    how: str, postgres_url: str, study_name: str, path: Path, runs: Path, log: Path
) -> dict[int, int]:
    """Start `sweeper worker --gpus all` (2 fake GPUs), stop it ``how`` mid-trial; check
    each worker stopped once and saved its checkpoint; return {stopped trial: its step}."""
    before = newest_checkpoints(runs)
    parent = start_gpus_worker(path, postgres_url, log)
    with held_mid_trial(
        postgres_url, runs, before, log.read_text, alive=lambda: parent.poll() is None
    ):
        children = [int(pid) for pid in re.findall(r"worker (\d+) on GPU", log.read_text())]
        assert len(children) == 2, log.read_text()
        if how == "SIGINT":  # Ctrl-C in a terminal: the whole foreground process group
            os.killpg(parent.pid, signal.SIGINT)
        else:  # Slurm's preemption with proctrack/linuxproc: every process of the task
            for pid in [parent.pid, *children]:
                os.kill(pid, signal.SIGTERM)
    expected = EXIT_STOPPED_SIGINT if how == "SIGINT" else EXIT_STOPPED_SIGTERM
    assert parent.wait(timeout=180) == expected, log.read_text()
    text = log.read_text()
    assert text.count(f"{how}: stopping at the next training step") == 2, text
    assert text.count(f"{how}: stopping every worker cleanly") == 1, text  # forwarded once
    assert f"second {how}" not in text and "Traceback" not in text, text
    assert text.count("stopped with a checkpoint and was re-enqueued") == 2, text
    stopped_at: dict[int, int] = {}
    for trial in load_existing_study(study_name, postgres_url).get_trials():
        failure = str(trial.user_attrs.get("failure") or "")
        if trial.state == TrialState.FAIL and trial.user_attrs["worker"].endswith(
            tuple(f":{pid}" for pid in re.findall(r"worker (\d+) on GPU", text))
        ):
            assert failure.startswith("interrupted at step"), failure
            stopped_at[trial.number] = int(failure.split()[3])
            directory = runs / Path(trial.user_attrs["checkpoint_dir"]).name
            # Saved once, at the step it stopped: the checkpoint its retry resumes from.
            assert (directory / f"checkpoint-{stopped_at[trial.number]}").is_dir()
    assert len(stopped_at) == 2, text
    return stopped_at


@pytest.mark.timeout(600)
def test_gpus_workers_stop_once_however_the_signal_arrives_and_resume(
    write_study: Callable[..., Path], postgres_url: str, study_name: str, tmp_path: Path
) -> None:
    """Ctrl-C to the process group, then (on the retries) SIGTERM to every process: each
    time every worker stops once with its checkpoint, and each retry resumes from it."""
    path = write_study(study_name, **TRIALS)
    runs = tmp_path / "runs" / study_name / "checkpoints"
    first = stop_and_check("SIGINT", postgres_url, study_name, path, runs, tmp_path / "1.log")
    second = stop_and_check("SIGTERM", postgres_url, study_name, path, runs, tmp_path / "2.log")
    trials = {t.number: t for t in load_existing_study(study_name, postgres_url).get_trials()}
    for number, step in second.items():  # the retries of the first stop, resumed and stopped
        origin = trials[number].system_attrs["failed_trial"]
        assert trials[number].user_attrs["resumed_from_step"] == first[origin]
        assert step > first[origin]

    assert main(["sweep", str(path), "--storage", postgres_url, "--no-progress"]) == 0
    study = load_existing_study(study_name, postgres_url)
    finished = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(finished) == 2
    for retry in finished:
        previous = next(
            n
            for n in second
            if trials[n].system_attrs["failed_trial"] == retry.system_attrs["failed_trial"]
        )
        assert retry.user_attrs["resumed_from_step"] == second[previous]
