"""A real Slurm: `sweeper slurm --submit` runs a job array of workers on one PostgreSQL study,
a job in a higher-priority partition preempts them mid-trial, Slurm requeues the tasks, and
the retries resume from the checkpoints the stopped workers saved; then the time-limit
warning (SIGUSR1 to a task's batch step, as `--signal=B:USR1@...` sends it) stops a worker
cleanly and it requeues its own task.

Slurm is the single-node one scripts/slurm.sh installs and starts (CI's .ci/run runs it):
two fake GPUs as generic resources, partitions `batch` (default, preemptable, REQUEUE) and
`urgent`. Where Slurm must be tested (CI=true or SWEEPER_REQUIRE_SLURM=1, as .ci/run sets),
missing Slurm fails these tests; elsewhere a machine without Slurm deselects them and the
summary lists them as not run (tests/conftest.py). They never pass by being skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

from sweeper.launch.cli import main
from sweeper.study.sweep import load_existing_study
from tests.support.mid_trial import held_mid_trial, newest_checkpoints

# Deselected (and listed as not run) where no Slurm is installed, unless CI requires it.
pytestmark = pytest.mark.slurm

SETUP_HINT = (
    "start the single-node Slurm the tests use, as root: `bash scripts/slurm.sh` "
    "(or `make slurm`; CI's .ci/run does it)"
)


def slurm(*argv: str, timeout: float = 30) -> str:
    result = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr or result.stdout}"
    return result.stdout


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The node of a running single-node Slurm with the `urgent` partition; fails (never
    skips) when there is none."""
    missing = [
        command
        for command in ("sbatch", "squeue", "scontrol", "sinfo")
        if not shutil.which(command)
    ]
    if missing:
        pytest.fail(f"Slurm is not installed here ({', '.join(missing)} missing): {SETUP_HINT}")
    try:
        nodes = subprocess.run(
            ["sinfo", "-h", "-p", "urgent", "-o", "%n %T %G"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"sinfo did not answer within 15 s (is slurmctld up?): {SETUP_HINT}")
    line = nodes.stdout.strip().splitlines()[0] if nodes.stdout.strip() else ""
    if nodes.returncode != 0 or not re.search(r"\b(idle|mixed|allocated)\b", line):
        pytest.fail(
            f"no Slurm node is up in partition urgent ({(nodes.stderr or line).strip()!r}): "
            f"{SETUP_HINT}"
        )
    assert "gpu:2" in line, f"the node declares no fake GPUs ({line!r}): {SETUP_HINT}"
    return line.split()[0]


def array_tasks(job_id: str) -> dict[str, str]:
    """{task id: state} of the job array's tasks still in the queue."""
    out = slurm("squeue", "-h", "-r", "-j", job_id, "-o", "%i %T")
    return dict(line.split() for line in out.strip().splitlines() if line.strip())


def wait_until(
    condition: Callable[[], bool], seconds: float, what: Callable[[], str], step: float = 1.0
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what()}")


@pytest.fixture
def submitted() -> Iterator[list[str]]:
    """Job ids to cancel whatever the test's outcome."""
    jobs: list[str] = []
    yield jobs
    for job in jobs:
        subprocess.run(["scancel", job], capture_output=True, timeout=30, check=False)


@pytest.mark.timeout(600)
def test_slurm_array_survives_preemption_and_the_time_limit(
    slurm_cluster: str,
    write_study: Callable[..., Path],
    postgres_url: str,
    study_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    submitted: list[str],
) -> None:
    n_trials = 2
    path = write_study(
        study_name,
        dataset={"max_train_rows": 96, "max_validation_rows": 24},
        search_space={"num_train_epochs": 6, "per_device_train_batch_size": 8},
        evaluation={"strategy": "steps", "steps": 6},
        # A checkpoint at every evaluation: what held_mid_trial waits for.
        resume_checkpoint_minutes=0,
        pruner={"type": "none"},
        budget={"n_trials": n_trials},
        workers={"heartbeat_interval_seconds": 2, "grace_period_seconds": 20, "poll_seconds": 1},
    )
    logs = tmp_path / "slurm-logs"
    argv = ["slurm", str(path), "--storage", postgres_url, "--workers", "2"]
    argv += ["--cpus-per-task", "1", "--mem", "1G", "--time", "20", "--signal-seconds", "60"]
    argv += ["--partition", "batch", "--log-dir", str(logs), "--out", str(tmp_path / "w.sbatch")]
    assert main([*argv, "--submit"]) == 0
    out = capsys.readouterr().out
    found = re.search(r"submitted job array (\d+) \(2 tasks\)", out)
    assert found, out
    job = found.group(1)
    submitted.append(job)
    assert f"scancel {job}" in out and f"squeue -j {job}" in out
    # The study was created before the workers started (sweeper create's step).
    assert load_existing_study(study_name, postgres_url).user_attrs["sweeper_ready"] is True

    def log_text() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(logs.glob("*.log")))

    def describe() -> str:
        return f"tasks {array_tasks(job)}\n{log_text()}"

    # Both tasks are training, each on its own fake GPU, and each trial has a checkpoint.
    # Slurm preempts a task only once the preempting job has waited about a minute, longer
    # than a tiny trial takes: to stop them mid-trial whatever this machine's speed, the test
    # holds the workers in their next report (held_mid_trial) until the signal is in.
    checkpoints = tmp_path / "runs" / study_name / "checkpoints"
    with held_mid_trial(postgres_url, checkpoints, {}, describe, timeout_seconds=240):
        # Preemption: a job in the high-priority partition needs every CPU of the node.
        cpus = os.cpu_count() or 2
        urgent = slurm(
            "sbatch", "--parsable", "-p", "urgent", "-c", str(cpus), "--output=/dev/null",
            "--wrap", "sleep 1",
        )  # fmt: skip
        submitted.append(urgent.strip().split(";")[0])
        wait_until(
            lambda: log_text().count("DUE TO PREEMPTION") == 2,
            180,
            lambda: f"both tasks preempted; tasks {array_tasks(job)}\n{log_text()}",
        )
    # Slurm requeues the preempted tasks; a requeued task waits ~2 minutes (its BeginTime)
    # before it may start again: make it now.
    wait_until(
        lambda: (tasks := array_tasks(job)) != {} and all(s == "PENDING" for s in tasks.values()),
        120,
        lambda: f"both tasks requeued; tasks {array_tasks(job)}\n{log_text()}",
    )
    preempted_at = newest_checkpoints(checkpoints)
    time.sleep(2)  # as below: not within the second the preemption requeued them
    for task in array_tasks(job):
        slurm("scontrol", "update", f"JobId={task}", "StartTime=now")

    # The time-limit warning, as `--signal=B:USR1@...` sends it, to task 0 once the retries
    # have checkpointed again: it stops cleanly and requeues itself (scontrol requeue).
    with held_mid_trial(postgres_url, checkpoints, preempted_at, describe, timeout_seconds=240):
        slurm("scancel", "--signal=USR1", "--batch", f"{job}_0")
    wait_until(
        lambda: (
            f"Slurm task {job}_0 requeued" in log_text()
            and array_tasks(job).get(f"{job}_0") == "PENDING"
        ),
        120,
        lambda: f"task 0 to requeue itself; tasks {array_tasks(job)}\n{log_text()}",
    )
    # Not within the second of the requeue: slurmd refuses a credential issued in the second
    # its predecessor was revoked ("Killing non-startable batch JobId=...: Job credential
    # revoked", seen here once), and the task fails with exit code 1.
    time.sleep(2)
    slurm("scontrol", "update", f"JobId={job}_0", "StartTime=now")
    wait_until(
        lambda: array_tasks(job) == {},
        300,
        lambda: f"the array to finish; tasks {array_tasks(job)}\n{log_text()}",
        step=2,
    )
    text = log_text()
    for index, restarts in ((0, 2), (1, 1)):
        show = slurm("scontrol", "show", "job", f"{job}_{index}")
        assert "JobState=COMPLETED" in show and "ExitCode=0:0" in show, show + text
        assert f"Restarts={restarts}" in show, show + text
    assert text.count("SIGTERM: stopping at the next training step") == 2, text
    assert text.count("SIGUSR1: stopping at the next training step") == 1, text
    assert "second SIG" not in text, text

    trials = load_existing_study(study_name, postgres_url).get_trials()
    states = [trial.state for trial in trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == n_trials, states
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, states
    stopped = {t.number: t for t in trials if t.state == TrialState.FAIL}
    for trial in stopped.values():
        assert trial.user_attrs["failure"].startswith("interrupted at step"), trial.user_attrs
        assert trial.user_attrs["slurm_job_id"] == job
    # Two preempted in the first run, one stopped by the time-limit warning in the second.
    assert sorted(t.user_attrs["slurm_restart_count"] for t in stopped.values()) == [0, 0, 1]
    (timed_out,) = [t for t in stopped.values() if t.user_attrs["slurm_restart_count"] == 1]
    assert timed_out.user_attrs["slurm_array_task_id"] == 0
    for retry in (t for t in trials if "failed_trial" in t.system_attrs):
        # It resumed from the checkpoint its predecessor in the chain stopped at.
        chain = retry.system_attrs["failed_trial"]
        predecessor = max(
            (
                t
                for t in stopped.values()
                if t.number < retry.number and t.system_attrs.get("failed_trial", t.number) == chain
            ),
            key=lambda t: t.number,
        )
        stopped_at = int(predecessor.user_attrs["failure"].split()[3])
        assert retry.user_attrs["resumed_from_step"] == stopped_at > 0, retry.user_attrs
    # Task 0 came back (run 2) after requeuing itself; its trial's retry was taken by
    # whichever task was free first.
    assert f"task {job}_0 run 2 on" in text, text
    assert {t.user_attrs["slurm_array_task_id"] for t in trials} == {0, 1}
    assert {t.user_attrs["cuda_visible_devices"] for t in trials} == {"0", "1"}

    capsys.readouterr()
    assert main(["show", str(path), "--storage", postgres_url]) == 0
    table = capsys.readouterr().out
    assert f"slurm {job}_0 run 0" in table and f"slurm {job}_0 run 1" in table, table
    assert f"interrupted at step {timed_out.user_attrs['failure'].split()[3]}" in table, table
