"""The Slurm task a worker runs in: what a trial records of it, and how a worker stopped by
the time-limit warning puts its own task back in the queue. ``sweeper slurm``
(sweeper.launch.cluster) writes the job array these workers run in."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable

from sweeper.attributes import (
    SLURM_ARRAY_TASK_ID_ATTR,
    SLURM_JOB_ID_ATTR,
    SLURM_RESTART_COUNT_ATTR,
)


def slurm_attrs() -> dict[str, str | int]:
    """``slurm_job_id`` (the array's job id), ``slurm_array_task_id`` and
    ``slurm_restart_count`` of the Slurm task this process runs in; empty outside Slurm."""
    environment = os.environ
    job = environment.get("SLURM_ARRAY_JOB_ID") or environment.get("SLURM_JOB_ID")
    if not job:
        return {}
    attrs: dict[str, str | int] = {SLURM_JOB_ID_ATTR: job}
    task = environment.get("SLURM_ARRAY_TASK_ID")
    if task:
        attrs[SLURM_ARRAY_TASK_ID_ATTR] = int(task) if task.isdigit() else task
    restarts = environment.get("SLURM_RESTART_COUNT", "0")
    attrs[SLURM_RESTART_COUNT_ATTR] = int(restarts) if restarts.isdigit() else restarts
    return attrs


def requeue_own_slurm_task(
    log: Callable[[str], None] = print, why: str = "time limit near"
) -> bool:
    """After a clean stop on the time-limit warning (SIGUSR1), or a study database gone for
    longer than workers.storage_outage_seconds: put this Slurm task back in the queue
    (``scontrol requeue $SLURM_JOB_ID``), so it carries on in a fresh allocation. True when
    it was requeued; False outside Slurm or when scontrol refused (said why)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        log(f"[sweeper] {why} under Slurm, but scontrol is not on PATH: the task is not requeued")
        return False
    # The requeue ends this task with a SIGTERM: the stop is done, nothing is left to save.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        result = subprocess.run(
            [scontrol, "requeue", job], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        log(f"[sweeper] `scontrol requeue {job}` did not answer within 60 s: not requeued")
        return False
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
        log(f"[sweeper] `scontrol requeue {job}` failed: {reason}")
        return False
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    shown = f"{os.environ.get('SLURM_ARRAY_JOB_ID')}_{task}" if task else job
    log(f"[sweeper] {why}: Slurm task {shown} requeued (`scontrol requeue {job}`)")
    return True
