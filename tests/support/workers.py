"""Worker processes for the tests that start, kill and stop them: study settings for quick and
long trials, ``python -m sweeper`` started in the background, a first checkpoint waited for."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

# Quick trials for the budget test; long ones (hundreds of steps) for the kill tests.
QUICK = {
    "dataset": {"max_train_rows": 32, "max_validation_rows": 16},
    "search_space": {"num_train_epochs": 1},
    "evaluation": {"strategy": "epoch"},
    "workers": {"poll_seconds": 0.5},
}
LONG = {
    "dataset": {"max_train_rows": 96, "max_validation_rows": 24},
    "search_space": {"num_train_epochs": 10, "per_device_train_batch_size": 8},
    "evaluation": {"strategy": "steps", "steps": 10},
    "pruner": {"type": "none"},
    "budget": {"n_trials": 1},
    # A dead worker's trial is failed after 3 s without a heartbeat (not 2 minutes).
    "workers": {"heartbeat_interval_seconds": 1, "grace_period_seconds": 3, "poll_seconds": 0.5},
}


def start_worker(study_file: Path, storage_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sweeper",
                "worker",
                str(study_file),
                "--storage",
                storage_url,
                "--no-progress",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def wait_for_checkpoint(directory: Path, process: subprocess.Popen[bytes], log: Path) -> Path:
    """The first complete checkpoint the worker writes (the Trainer writes its state last)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        found = sorted(directory.glob("checkpoint-*/trainer_state.json"))
        if found:
            return found[0].parent
        assert process.poll() is None, f"worker exited early:\n{log.read_text()}"
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint in {directory} after 240 s:\n{log.read_text()}")


def start_sweeper(
    args: list[str], log: Path, *, cwd: Path | None = None, storage: str | None = None
) -> subprocess.Popen[bytes]:
    """`python -m sweeper ARGS` in ``cwd``, the storage URL in its environment."""
    environment = {**os.environ, **({"SWEEPER_STORAGE": storage} if storage else {})}
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "sweeper", *args, "--no-progress"],
            cwd=cwd,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
