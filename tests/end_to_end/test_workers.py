"""Many workers, one study: the shared budget, SIGKILL and SIGTERM mid-trial, --gpus on a CPU.

Workers are real ``python -m sweeper worker`` processes on a real PostgreSQL (and SQLite),
training the tiny BERT for real.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState

from sweeper.errors import ConfigError
from sweeper.launch.cli import main
from sweeper.runtime.workers import (
    FAKE_GPU_COUNT_ENV,
    GPU_MEMORY_FRACTION_ENV,
    apply_gpu_memory_fraction,
    gpu_count,
    gpu_worker_environments,
    parse_gpus,
    spawn_gpu_workers,
)
from sweeper.study.sweep import load_existing_study
from tests.support.workers import LONG, QUICK, start_worker, wait_for_checkpoint


@pytest.mark.timeout(600)
def test_four_workers_on_postgresql_finish_exactly_the_budget(
    write_study: Callable[..., Path], postgres_url: str, study_name: str, tmp_path: Path
) -> None:
    storage_url, n_workers, n_trials = postgres_url, 4, 20
    path = write_study(study_name, **QUICK, budget={"n_trials": n_trials})
    logs = [tmp_path / f"worker-{index}.log" for index in range(n_workers)]
    workers = [start_worker(path, storage_url, log) for log in logs]
    codes = [worker.wait(timeout=600) for worker in workers]
    output = "\n".join(log.read_text() for log in logs)
    assert codes == [0] * n_workers, output
    assert "database is locked" not in output

    trials = load_existing_study(study_name, storage_url).get_trials()
    states = [trial.state for trial in trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == n_trials
    assert len(trials) == n_trials, [state.name for state in states]
    assert sorted(trial.number for trial in trials) == list(range(n_trials))
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    # The work was shared: more than one process ran trials.
    assert len({trial.user_attrs["worker"] for trial in trials}) >= 2


@pytest.mark.timeout(600)
def test_sigkilled_worker_trial_is_retried_from_its_checkpoint(
    write_study: Callable[..., Path], postgres_url: str, study_name: str, tmp_path: Path
) -> None:
    path = write_study(study_name, **LONG)
    runs = tmp_path / "runs" / study_name / "checkpoints"
    first = start_worker(path, postgres_url, tmp_path / "first.log")
    checkpoint = wait_for_checkpoint(runs / "trial-0", first, tmp_path / "first.log")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = int(checkpoint.name.removeprefix("checkpoint-"))

    second = start_worker(path, postgres_url, tmp_path / "second.log")
    assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()

    study = load_existing_study(study_name, postgres_url)
    original, retry = study.get_trials()
    assert original.state == TrialState.FAIL  # failed by the heartbeat check, not left RUNNING
    assert retry.state == TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == 0
    assert retry.params == original.params
    resumed = retry.user_attrs["resumed_from_step"]
    assert resumed >= killed_at > 0
    # The retry did not train from step 0: its curve continues the original's.
    steps = sorted(retry.intermediate_values)
    assert steps[0] == 10 and steps[-1] == retry.user_attrs["planned_steps"]
    history_steps = [row["step"] for row in retry.user_attrs["history"]]
    assert history_steps == steps
    assert retry.user_attrs["worker"] != original.user_attrs["worker"]


@pytest.mark.timeout(600)
def test_sigterm_saves_a_checkpoint_and_the_rerun_finishes(
    write_study: Callable[..., Path],
    study_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    storage_url = f"sqlite:///{tmp_path / 'study.db'}"
    path = write_study(study_name, **LONG)
    runs = tmp_path / "runs" / study_name / "checkpoints"
    log = tmp_path / "worker.log"
    worker = start_worker(path, storage_url, log)
    wait_for_checkpoint(runs / "trial-0", worker, log)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()
    assert "SIGTERM: stopping at the next training step" in log.read_text()

    study = load_existing_study(study_name, storage_url)
    interrupted, retry = study.get_trials()
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs["failure"].startswith("interrupted at step")
    stopped_at = int(interrupted.user_attrs["failure"].split()[3])
    assert (runs / "trial-0" / f"checkpoint-{stopped_at}" / "trainer_state.json").is_file()
    assert retry.state == TrialState.WAITING and retry.system_attrs["failed_trial"] == 0

    assert main(["sweep", str(path), "--storage", storage_url, "--no-progress"]) == 0
    retry = load_existing_study(study_name, storage_url).get_trials()[1]
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["resumed_from_step"] == stopped_at

    capsys.readouterr()
    assert main(["show", str(path), "--storage", storage_url]) == 0
    table = capsys.readouterr().out
    assert "retry of #0" in table and f"resumed at step {stopped_at}" in table


@pytest.mark.timeout(600)
def test_gpus_on_a_machine_without_one_runs_on_the_cpu(
    write_study: Callable[..., Path],
    study_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    storage_url = f"sqlite:///{tmp_path / 'study.db'}"
    path = write_study(study_name, **QUICK, budget={"n_trials": 2})
    args = ["worker", str(path), "--storage", storage_url, "--no-progress", "--gpus", "all"]
    assert main(args) == 0
    assert "no GPU found (CUDA is unavailable); running one worker on the CPU" in (
        capsys.readouterr().out
    )
    assert len(load_existing_study(study_name, storage_url).get_trials()) == 2


def gpu_of_each_worker(output: str) -> dict[str, str]:
    """The GPU of each worker process, by pid, from the parent's "worker PID on GPU N" lines."""
    return dict(re.findall(r"\[sweeper\] worker (\d+) on GPU (\d+)", output))


def worker_pid(trial: FrozenTrial) -> str:
    """The pid of the worker that ran ``trial`` (its ``worker`` attribute is host:pid)."""
    return str(trial.user_attrs["worker"]).rsplit(":", 1)[-1]


@pytest.mark.timeout(600)
def test_one_worker_per_gpu_each_pinned_to_its_device(
    write_study: Callable[..., Path],
    study_name: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """What `--gpus 0,1` does on a GPU machine, run on the CPU: two worker processes, each
    with its own CUDA_VISIBLE_DEVICES, share the study's budget on one SQLite file. Which
    worker runs which trial is the scheduler's race (a worker that starts late may find the
    budget taken), so every trial is checked against the GPU of the worker that ran it."""
    storage_url = f"sqlite:///{tmp_path / 'study.db'}"
    path = write_study(study_name, **QUICK, budget={"n_trials": 6})
    argv = ["worker", str(path), "--storage", storage_url, "--no-progress"]
    assert spawn_gpu_workers(argv, [0, 1]) == 0
    output = capfd.readouterr()
    assert "database is locked" not in output.out + output.err
    gpus = gpu_of_each_worker(output.out)
    assert sorted(gpus.values()) == ["0", "1"], output.out
    trials = load_existing_study(study_name, storage_url).get_trials()
    assert len(trials) == 6
    for trial in trials:
        assert trial.user_attrs["cuda_visible_devices"] == gpus[worker_pid(trial)]


@pytest.mark.parametrize(
    ("value", "available", "expected"),
    [
        ("all", 4, [0, 1, 2, 3]),
        ("0,2", 4, [0, 2]),
        ("1, 1", 2, [1]),
    ],
)
def test_parse_gpus(value: str, available: int, expected: list[int]) -> None:
    assert parse_gpus(value, available) == expected


@pytest.mark.parametrize(
    ("value", "available", "message"),
    [
        (
            "0,x",
            4,
            r"--gpus must be 'all' or comma-separated GPU indices like 0,1, but got --gpus='0,x'",
        ),
        ("4", 4, r"--gpus='4' names GPU 4, but this machine has 4 \(indices 0..3\)"),
        (",", 2, r"--gpus names no GPU, but got --gpus=','"),
    ],
)
def test_parse_gpus_errors(value: str, available: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_gpus(value, available)


def test_keep_all_checkpoints_keeps_every_trial(
    write_study: Callable[..., Path], study_name: str, tmp_path: Path
) -> None:
    # No pruner: a pruned trial stops without saving, and every trial here must complete.
    path = write_study(study_name, **QUICK, budget={"n_trials": 3}, pruner={"type": "none"})
    storage_url = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["sweep", str(path), "--storage", storage_url, "--no-progress"]
    assert main([*args, "--keep-all-checkpoints"]) == 0
    runs = tmp_path / "runs" / study_name / "checkpoints"
    assert sorted(p.name for p in runs.iterdir()) == ["trial-0", "trial-1", "trial-2"]
    for trial in load_existing_study(study_name, storage_url).get_trials():
        # Per-epoch evaluation: one evaluation (and one checkpoint) per epoch, none repeated.
        steps = [row["step"] for row in trial.user_attrs["history"]]
        assert len(steps) == 1 and [p.name for p in (runs / f"trial-{trial.number}").iterdir()] == [
            f"checkpoint-{steps[0]}"
        ]


@pytest.mark.timeout(600)
def test_trials_per_gpu_share_one_gpu_and_the_budget(
    write_study: Callable[..., Path],
    study_name: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--gpus all --trials-per-gpu 2` on a machine with one (fake) GPU: two worker processes,
    both pinned to GPU 0 and told their half of its memory, share the study's budget, and
    sample with their own seeds (the same seed would give both the same random trials)."""
    monkeypatch.setenv(FAKE_GPU_COUNT_ENV, "1")
    storage_url = f"sqlite:///{tmp_path / 'study.db'}"
    path = write_study(study_name, **QUICK, budget={"n_trials": 6})
    argv = ["worker", str(path), "--storage", storage_url, "--no-progress", "--gpus", "all"]
    assert main([*argv, "--trials-per-gpu", "2"]) == 0
    output = capfd.readouterr()
    assert output.out.count("on GPU 0 (1/2 of its memory)") == 2, output.out
    assert "sampler seed 0" in output.out and "sampler seed 1" in output.out
    assert "database is locked" not in output.out + output.err
    assert "applies with --gpus only" not in output.out + output.err
    trials = load_existing_study(study_name, storage_url).get_trials()
    states = [trial.state for trial in trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 6, states
    assert len(trials) == 6
    assert {trial.user_attrs["cuda_visible_devices"] for trial in trials} == {"0"}
    # Both workers' trials, whichever ran how many (a late starter may find none left).
    assert {worker_pid(trial) for trial in trials} <= set(gpu_of_each_worker(output.out))
    assert len({tuple(sorted(trial.params.items())) for trial in trials}) == 6


@pytest.mark.timeout(600)
def test_sigterm_to_the_parent_checkpoints_every_trial_sharing_a_gpu(
    write_study: Callable[..., Path], study_name: str, tmp_path: Path
) -> None:
    """SIGTERM to `sweeper worker --gpus all --trials-per-gpu 2` reaches both workers: each
    saves a checkpoint and re-enqueues its trial, and the next run resumes both."""
    storage_url = f"sqlite:///{tmp_path / 'study.db'}"
    path = write_study(study_name, **{**LONG, "budget": {"n_trials": 2}})
    runs = tmp_path / "runs" / study_name / "checkpoints"
    log = tmp_path / "parent.log"
    with log.open("wb") as output:
        parent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sweeper",
                "worker",
                str(path),
                "--storage",
                storage_url,
                "--no-progress",
                "--gpus",
                "all",
                "--trials-per-gpu",
                "2",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, FAKE_GPU_COUNT_ENV: "1"},
        )
    wait_for_checkpoint(runs / "trial-0", parent, log)
    wait_for_checkpoint(runs / "trial-1", parent, log)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()
    assert log.read_text().count("SIGTERM: stopping at the next training step") == 2

    trials = load_existing_study(study_name, storage_url).get_trials()
    interrupted = [trial for trial in trials if trial.state == TrialState.FAIL]
    retries = [trial for trial in trials if trial.state == TrialState.WAITING]
    assert len(interrupted) == 2 and len(retries) == 2, [t.state.name for t in trials]
    assert len({trial.user_attrs["worker"] for trial in interrupted}) == 2
    stopped_at = {}
    for trial in interrupted:
        assert trial.user_attrs["failure"].startswith("interrupted at step")
        stopped_at[trial.number] = int(trial.user_attrs["failure"].split()[3])
        checkpoint = runs / f"trial-{trial.number}" / f"checkpoint-{stopped_at[trial.number]}"
        assert (checkpoint / "trainer_state.json").is_file()
    assert sorted(retry.system_attrs["failed_trial"] for retry in retries) == [0, 1]

    assert main(["sweep", str(path), "--storage", storage_url, "--no-progress"]) == 0
    trials = load_existing_study(study_name, storage_url).get_trials()
    finished = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    assert len(finished) == 2
    for retry in finished:
        origin = retry.system_attrs["failed_trial"]
        assert retry.user_attrs["resumed_from_step"] == stopped_at[origin]


def test_trials_per_gpu_zero_is_refused_naming_the_flag_and_the_key(
    write_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study("zero")
    argv = ["worker", str(path), "--no-progress", "--gpus", "all"]
    assert main([*argv, "--trials-per-gpu", "0"]) == 2
    error = capsys.readouterr().err
    assert "--trials-per-gpu must be at least 1, but got --trials-per-gpu=0; pass 1" in error
    path = write_study("zero-in-file", workers={"trials_per_gpu": 0})
    assert main(["worker", str(path), "--no-progress", "--gpus", "all"]) == 2
    error = capsys.readouterr().err
    assert "workers.trials_per_gpu: must be at least 1" in error and "but got 0" in error
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_gpu_worker_environments_pin_and_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_worker_environments([0, 2]) == [
        (0, {"CUDA_VISIBLE_DEVICES": "0"}),
        (2, {"CUDA_VISIBLE_DEVICES": "2"}),
    ]
    shared = gpu_worker_environments([1], trials_per_gpu=4)
    assert [gpu for gpu, _ in shared] == [1, 1, 1, 1]
    assert {extra[GPU_MEMORY_FRACTION_ENV] for _, extra in shared} == {"0.250000"}
    # Index i is the i-th GPU this process sees: a Slurm task given GPU 5 runs its workers
    # there, not on the machine's GPU 0.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert gpu_worker_environments([0, 1]) == [
        (0, {"CUDA_VISIBLE_DEVICES": "5"}),
        (1, {"CUDA_VISIBLE_DEVICES": "7"}),
    ]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            GPU_MEMORY_FRACTION_ENV,
            "2",
            r"SWEEPER_GPU_MEMORY_FRACTION must be a fraction in \(0, 1\]",
        ),
        (GPU_MEMORY_FRACTION_ENV, "half", r"but got SWEEPER_GPU_MEMORY_FRACTION='half'"),
        (FAKE_GPU_COUNT_ENV, "two", r"SWEEPER_FAKE_GPU_COUNT must be a whole number"),
    ],
)
def test_gpu_environment_variables_are_checked(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        apply_gpu_memory_fraction() if variable == GPU_MEMORY_FRACTION_ENV else gpu_count()


def test_memory_fraction_is_a_no_op_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv(GPU_MEMORY_FRACTION_ENV, "0.5")
    expected = 0.5 if torch.cuda.is_available() else None
    assert apply_gpu_memory_fraction() == expected
    monkeypatch.setenv(FAKE_GPU_COUNT_ENV, "3")
    assert gpu_count() == 3
