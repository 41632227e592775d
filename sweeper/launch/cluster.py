"""Launchers for the schedulers teams already run: Slurm job arrays and Kubernetes Jobs.

sweeper's workers are stateless processes sharing one database, which is what both
schedulers run well. :func:`render_sbatch` writes the sbatch script of a Slurm job array
(``sweeper slurm``), :func:`render_k8s` the manifests of a study-creator Job and a worker
Job (``sweeper k8s``). Both first create the study in one step (``sweeper create``), both
rely on the workers' clean stop (:class:`sweeper.runtime.workers.StopRequest`) and on the exit
codes defined in :mod:`sweeper.launch.cli`:

====  ===========================================================  =========================
code  meaning                                                      what the scheduler does
====  ===========================================================  =========================
0     the budget is met, or nothing is left to do                  the task/pod is done
2     a user error (study file, data, model, storage): a restart   Kubernetes fails the Job;
      will not fix it                                              Slurm does not requeue
3     the study's last trials all raised (TrialsFailingError)      the same as 2
75    the study database was unreachable for longer than           Slurm: the worker has
      workers.storage_outage_seconds (StorageOutageError):         requeued its task itself;
      checkpoint saved, the trial is retried later                 Kubernetes restarts the
                                                                   pod without counting it
130   stopped by SIGINT, checkpoint saved, trial re-enqueued       retried
138   stopped by SIGUSR1 (Slurm's time-limit warning), checkpoint  the worker has requeued
      saved: the worker requeues its own task (scontrol requeue)   its task itself
143   stopped by SIGTERM (preemption, scancel, pod deletion),      Slurm requeues a preempted
      checkpoint saved, trial re-enqueued                          task, not a cancelled one;
                                                                   Kubernetes ignores a
                                                                   disruption
====  ===========================================================  =========================
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from sweeper.credentials import STORAGE_ENV
from sweeper.errors import (
    EXIT_STOPPED_SIGINT,
    EXIT_STOPPED_SIGTERM,
    EXIT_STOPPED_SIGUSR1,
    EXIT_STORAGE_OUTAGE,
    EXIT_TRIALS_FAILING,
    EXIT_USER_ERROR,
    ConfigError,
)
from sweeper.runtime.storage import redact
from sweeper.settings.config import check_trials_per_gpu_flag

# --- how long a stopped worker needs ---------------------------------------------------------

# Slurm's warning (--signal-seconds) and Kubernetes' grace (--grace-seconds) when not given:
# a training step and a local save fit in this; an object store adds the upload.
DEFAULT_STOP_SECONDS = 300
# A conservative upload rate to an object store from a GPU node (bytes/s); doubled below
# for a retry after a failed try.
UPLOAD_BYTES_PER_SECOND = 25e6


def stop_seconds(checkpoint_bytes: int | None, to_store: bool) -> tuple[int, str]:
    """The seconds a stopped worker needs to save and (with a store) upload its newest
    checkpoint before the scheduler kills it, and why."""
    if not to_store or not checkpoint_bytes:
        return DEFAULT_STOP_SECONDS, "a training step plus a local checkpoint save"
    upload = 2 * checkpoint_bytes / UPLOAD_BYTES_PER_SECOND
    needed = 60 + upload
    seconds = max(DEFAULT_STOP_SECONDS, int(-(-needed // 30) * 30))
    return seconds, (
        f"a {checkpoint_bytes / 1e9:.2f} GB checkpoint: a step and a local save (60 s) plus "
        f"twice its upload at {UPLOAD_BYTES_PER_SECOND / 1e6:.0f} MB/s ({upload:.0f} s)"
    )


# --- shared checks --------------------------------------------------------------------------------


def require_server_storage(url: str, flag: str = "--storage") -> None:
    """A cluster's workers run on many machines: the storage must be a database server."""
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        raise ConfigError(
            f"{flag}={redact(url)!r} is not a database URL; pass a PostgreSQL URL such as "
            "postgresql+psycopg://user:password@db-host:5432/sweeper"
        ) from None
    if backend == "sqlite":
        raise ConfigError(
            f"{flag}={redact(url)!r} is SQLite, which a cluster cannot share: its workers run "
            "on several machines, and SQLite's locking is not safe over a network filesystem "
            "(trials would be lost or the database corrupted). Pass a PostgreSQL URL reachable "
            "from every node, e.g. postgresql+psycopg://user:password@db-host:5432/sweeper "
            "(`make postgres` starts one)"
        )


def _positive(flag: str, value: int, fix: str) -> None:
    if value < 1:
        raise ConfigError(f"{flag} must be at least 1, but got {flag}={value}; {fix}")


# --- Slurm ----------------------------------------------------------------------------------------

_SLURM_TIME = re.compile(
    r"^(?:(?P<days>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
    r"|(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)|(?P<mm>\d+):(?P<ss>\d+)|(?P<minutes>\d+))$"
)


def slurm_time_seconds(value: str) -> int:
    """Seconds in a Slurm time limit: ``minutes``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
    ``D-HH:MM`` or ``D-HH:MM:SS``."""
    match = _SLURM_TIME.match(value.strip())
    if match is None:
        raise ConfigError(
            f"--time={value!r} is not a Slurm time limit; use minutes, HH:MM:SS or D-HH:MM:SS, "
            "e.g. --time 1-00:00:00 for a day"
        )
    part = {key: int(number) for key, number in match.groupdict().items() if number is not None}
    if "days" in part:
        return part["days"] * 86400 + part["dh"] * 3600 + part.get("dm", 0) * 60 + part.get("ds", 0)
    if "h" in part:
        return part["h"] * 3600 + part["m"] * 60 + part["s"]
    if "mm" in part:
        return part["mm"] * 60 + part["ss"]
    return part["minutes"] * 60


_SLURM_MEMORY = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)


@dataclass
class SlurmOptions:
    """What ``sweeper slurm`` puts in the sbatch script; defaults suit one GPU per task."""

    study_file: Path
    study_name: str
    storage_url: str
    workers: int
    partition: str | None = None
    account: str | None = None
    time: str = "24:00:00"
    cpus_per_task: int = 8
    mem: str = "32G"
    max_concurrent: int | None = None
    gres: str = "gpu:1"
    signal_seconds: int = 300
    log_dir: Path = Path("runs/slurm")
    workdir: Path = field(default_factory=Path.cwd)
    python: str = sys.executable
    checkpoint_root: str | None = None
    overrides: Sequence[str] = ()
    sbatch_options: Sequence[str] = ()
    # Workers sharing the task's GPU (workers.trials_per_gpu): above 1 the task's process is
    # a `--gpus` parent that forwards a stop once to each and exits with the worst code.
    trials_per_gpu: int = 1

    def check(self) -> None:
        require_server_storage(self.storage_url)
        _positive("--workers", self.workers, "pass the number of array tasks (one per GPU)")
        _positive("--cpus-per-task", self.cpus_per_task, "pass the CPUs each worker may use")
        if self.max_concurrent is not None:
            _positive("--max-concurrent", self.max_concurrent, "or leave it out (no limit)")
            if self.max_concurrent > self.workers:
                raise ConfigError(
                    f"--max-concurrent={self.max_concurrent} exceeds --workers={self.workers}: "
                    "at most that many tasks can run at once anyway; lower --max-concurrent or "
                    "raise --workers"
                )
        if not _SLURM_MEMORY.match(self.mem):
            raise ConfigError(
                f"--mem={self.mem!r} is not a Slurm memory size; use e.g. 32G, 500M or 0 "
                "(all of a node's memory)"
            )
        limit = slurm_time_seconds(self.time)
        if self.signal_seconds < 60:
            raise ConfigError(
                f"--signal-seconds={self.signal_seconds} is too short: Slurm sends the "
                "time-limit warning up to 60 s late, and the worker needs a training step and "
                "a checkpoint after it; pass at least 60 (default 300)"
            )
        if self.signal_seconds >= limit:
            raise ConfigError(
                f"--signal-seconds={self.signal_seconds} conflicts with --time={self.time} "
                f"({limit} s): the time-limit warning would come before the task starts; "
                "raise --time or lower --signal-seconds"
            )

    @property
    def job_name(self) -> str:
        return f"sweeper-{self.study_name}"


def _shared_gpu_args(trials_per_gpu: int) -> list[str]:
    """Worker arguments for ``trials_per_gpu`` trials sharing the one GPU a task or pod holds."""
    check_trials_per_gpu_flag(trials_per_gpu)
    if trials_per_gpu == 1:
        return []
    return ["--gpus", "all", "--trials-per-gpu", str(trials_per_gpu)]


def _sbatch_directives(options: SlurmOptions) -> list[str]:
    """The #SBATCH options of the job array: one GPU per task, requeue, the warning signal."""
    array = f"0-{options.workers - 1}"
    if options.max_concurrent is not None:
        array += f"%{options.max_concurrent}"
    log_dir = options.log_dir.absolute()
    return [
        f"--job-name={options.job_name}",
        f"--array={array}",
        "--ntasks=1",
        f"--gres={options.gres}",
        f"--cpus-per-task={options.cpus_per_task}",
        f"--mem={options.mem}",
        f"--time={options.time}",
        *([f"--partition={options.partition}"] if options.partition else []),
        *([f"--account={options.account}"] if options.account else []),
        "--requeue",
        f"--signal=B:USR1@{options.signal_seconds}",
        f"--output={log_dir}/%x-%A_%a.log",
        "--open-mode=append",
        f"--chdir={options.workdir.absolute()}",
        *options.sbatch_options,
    ]


def _worker_command(options: SlurmOptions) -> list[str]:
    """What each task execs: one worker (or a --gpus parent), no storage URL."""
    command = [
        options.python,
        "-m",
        "sweeper",
        "worker",
        str(options.study_file.absolute()),
        "--no-progress",
    ]
    if options.checkpoint_root:
        command += ["--checkpoint-root", options.checkpoint_root]
    command += _shared_gpu_args(options.trials_per_gpu)
    for override in options.overrides:
        command += ["--set", override]
    return command


def _sbatch_header(options: SlurmOptions) -> list[str]:
    """The script's opening comment: what it runs, each signal and exit code."""
    return [
        "#!/bin/bash",
        f"# Written by `sweeper slurm {options.study_name}`: one sweeper worker per array task",
        "# (one GPU each), all sharing the study through its database. Submit it with sbatch,",
        "# after `sweeper create` (or let `sweeper slurm --submit` do both).",
        "#",
        "# Signals, and what the worker does (sweeper.runtime.workers.StopRequest):",
        "#   SIGTERM  preemption: stop at the next step, save a checkpoint, re-enqueue the",
        f"#            trial, exit {EXIT_STOPPED_SIGTERM}; Slurm requeues the task (--requeue)",
        "#            and its retry resumes from the checkpoint.",
        "#   SIGTERM  scancel, or the time limit itself: the same clean stop; no requeue.",
        f"#   SIGUSR1  {options.signal_seconds} s before the time limit (--signal=B:USR1@...):",
        "#            the same clean stop, then the worker requeues its own task",
        f"#            (scontrol requeue), exit {EXIT_STOPPED_SIGUSR1}.",
        f"#   SIGINT   the same clean stop, exit {EXIT_STOPPED_SIGINT}.",
        "# Exit codes: 0 the budget is met (or nothing is left to do); "
        f"{EXIT_USER_ERROR} a user error",
        f"# (study file, data, model, storage), {EXIT_TRIALS_FAILING} the study's last trials "
        "all raised: neither",
        "# is requeued, since a restart would not fix it. "
        f"{EXIT_STORAGE_OUTAGE} the study database was gone for longer",
        "# than workers.storage_outage_seconds: the trial's checkpoint is saved and the worker",
        "# requeues its own task (scontrol requeue), which resumes once the database is back.",
        "# `sweeper show` lists each trial's",
        "# Slurm job, array task and restart count.",
        "#",
        f"# No storage URL in this file: the worker reads it from ${STORAGE_ENV}, which sbatch",
        "# passes on from the environment it was run in (a requeued task keeps it); export it",
        "# before sbatch (`sweeper slurm --submit` does), or leave its password out and keep it",
        "# in ~/.pgpass on the nodes.",
    ]


def render_sbatch(options: SlurmOptions) -> str:
    """The sbatch script of a job array with one worker (one GPU) per task."""
    options.check()
    lines = [
        *_sbatch_header(options),
        *[f"#SBATCH {directive}" for directive in _sbatch_directives(options)],
        "",
        "export PYTHONUNBUFFERED=1",
        f'if [ -z "${{{STORAGE_ENV}:-}}" ]; then',
        f'    echo "[sweeper] {STORAGE_ENV} is not set: export the storage URL, then sbatch'
        f' this script again" >&2',
        f"    exit {EXIT_USER_ERROR}",
        "fi",
        'echo "[sweeper] task ${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}_${SLURM_ARRAY_TASK_ID:-0}'
        ' run ${SLURM_RESTART_COUNT:-0} on $(hostname) GPUs ${CUDA_VISIBLE_DEVICES:-none}"',
        "# exec: the worker is the task's process, and gets Slurm's signals itself.",
        "exec " + shlex.join(_worker_command(options)),
        "",
    ]
    return "\n".join(lines)


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (it may hold a password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(0o600)
    return path


def sbatch_path() -> str:
    found = shutil.which("sbatch")
    if found is None:
        raise ConfigError(
            "--submit needs Slurm's sbatch, which is not on PATH here; run `sweeper slurm` "
            "without --submit to write the script only, then on a Slurm login node run "
            "`sweeper create` and `sbatch SCRIPT` (or install slurm-client)"
        )
    return found


def submit_sbatch(script: Path, storage_url: str) -> str:
    """``sbatch --parsable SCRIPT`` with ``SWEEPER_STORAGE`` in the environment it passes on
    to the job (never on a command line); returns the job id."""
    sbatch = sbatch_path()
    try:
        result = subprocess.run(
            [sbatch, "--parsable", str(script)],
            env={**os.environ, STORAGE_ENV: storage_url},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"sbatch {script} did not answer within 120 s; check that slurmctld is up (`sinfo`)"
        ) from None
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip()
        raise ConfigError(
            f"sbatch refused {script}: {reason}; fix the option it names (--partition, "
            "--account, --gres, --mem, --time) and run again"
        )
    return result.stdout.strip().split(";")[0]


def slurm_next_steps(job_id: str, options: SlurmOptions, script: Path) -> str:
    """What to run once the array is submitted: watch, scale, stop, report."""
    study = shlex.quote(str(options.study_file))
    storage = f"   (storage {redact(options.storage_url)}: export {STORAGE_ENV} first)"
    return "\n".join(
        [
            f"[sweeper] submitted job array {job_id} ({options.workers} tasks): {script}",
            f"  watch:   squeue -j {job_id}        "
            f"logs: {options.log_dir.absolute()}/{options.job_name}-{job_id}_<task>.log",
            f"           sweeper show {study}{storage}",
            f"  scale:   scontrol update JobId={job_id} ArrayTaskThrottle=N   (tasks at once), or",
            f"           sweeper slurm {study} --workers N --submit  "
            "(another array on the same study)",
            f"  stop:    scancel {job_id}   (each worker saves a checkpoint and re-enqueues its "
            "trial; nothing is requeued: submit again to carry on)",
            f"  report:  sweeper report {study}",
        ]
    )


# --- Kubernetes -----------------------------------------------------------------------------------


def k8s_name(text: str) -> str:
    """A DNS-1123 label made of ``text``: lowercase letters, digits and dashes."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:40].strip("-") or "study"


@dataclass
class K8sOptions:
    """What ``sweeper k8s`` puts in the manifests."""

    study_name: str
    study_path: str  # the study file inside the image, relative to its WORKDIR
    image: str
    storage_secret: str
    workers: int
    storage_secret_key: str = "url"
    namespace: str | None = None
    checkpoint_pvc: str = "sweeper-checkpoints"
    checkpoint_mount: str = "/checkpoints"
    grace_seconds: int = 300
    # Checkpoints in an object store (an s3:// or gs:// checkpoint_root): no shared volume,
    # an emptyDir cache per pod, and the store's credentials from this Secret (its keys
    # become the pod's environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...).
    checkpoint_store: str | None = None
    store_secret: str | None = None
    cache_mount: str = "/cache"
    backoff_limit: int | None = None
    gpus_per_pod: int = 1
    cpu: str | None = None
    memory: str | None = None
    overrides: Sequence[str] = ()
    trials_per_gpu: int = 1  # as for Slurm: above 1 the pod's process is a --gpus parent

    def check(self) -> None:
        _positive("--workers", self.workers, "pass the number of worker pods (one GPU each)")
        _positive(
            "--grace-seconds",
            self.grace_seconds,
            "pass the seconds a worker needs for a training step plus a checkpoint save",
        )
        if self.grace_seconds < 30:
            raise ConfigError(
                f"--grace-seconds={self.grace_seconds} is too short for a training step plus a "
                "checkpoint save: Kubernetes kills the pod after it; pass at least 30 "
                "(default 300)"
            )
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", self.storage_secret):
            raise ConfigError(
                f"--storage-secret={self.storage_secret!r} is not a Kubernetes Secret name "
                "(lowercase letters, digits, '-' and '.'); pass the name of the Secret that "
                "holds the storage URL"
            )
        if self.backoff_limit is not None and self.backoff_limit < 0:
            raise ConfigError(
                f"--backoff-limit must be 0 or more, but got --backoff-limit={self.backoff_limit}"
            )


def _pod_failure_policy(container: str, codes: Sequence[int]) -> dict[str, Any]:
    """Fail the Job at once on an exit code a restart will not fix; never count a
    disruption (preemption, eviction, node drain) or a study database outage (the worker
    waited workers.storage_outage_seconds first) against the backoff limit."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": container,
                    "operator": "In",
                    "values": list(codes),
                },
            },
            {
                "action": "Ignore",
                "onExitCodes": {
                    "containerName": container,
                    "operator": "In",
                    "values": [EXIT_STORAGE_OUTAGE],
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }


def _k8s_env(options: K8sOptions) -> list[dict[str, Any]]:
    return [
        {
            "name": STORAGE_ENV,
            "valueFrom": {
                "secretKeyRef": {"name": options.storage_secret, "key": options.storage_secret_key}
            },
        },
        # Nodes need no hub access: the model and data are in the image or on the volume.
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]


def _k8s_volume(options: K8sOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the volume, its mount): a ReadWriteMany claim every pod shares, or with an object
    store an emptyDir cache of the pod's own."""
    if options.checkpoint_store:
        return {"name": "cache", "emptyDir": {}}, {
            "name": "cache",
            "mountPath": options.cache_mount,
        }
    return (
        {"name": "checkpoints", "persistentVolumeClaim": {"claimName": options.checkpoint_pvc}},
        {"name": "checkpoints", "mountPath": options.checkpoint_mount},
    )


def _k8s_resources(options: K8sOptions) -> dict[str, Any]:
    resources: dict[str, Any] = {"limits": {"nvidia.com/gpu": options.gpus_per_pod}}
    requests = {
        key: value for key, value in (("cpu", options.cpu), ("memory", options.memory)) if value
    }
    if requests:
        resources["requests"] = requests
        if options.memory:
            resources["limits"]["memory"] = options.memory
    return resources


def _k8s_job(
    options: K8sOptions,
    name: str,
    job_spec: dict[str, Any],
    pod_spec: dict[str, Any],
    container: dict[str, Any],
) -> dict[str, Any]:
    """A batch/v1 Job of one container with the study's env and checkpoint volume."""
    labels = {
        "app.kubernetes.io/name": "sweeper",
        "sweeper.study": k8s_name(options.study_name),
    }
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if options.namespace:
        metadata["namespace"] = options.namespace
    container = {
        "name": container["name"],
        "image": options.image,
        "command": container["command"],
        "env": _k8s_env(options),
        **{key: value for key, value in container.items() if key not in {"name", "command"}},
        "volumeMounts": [_k8s_volume(options)[1]],
    }
    if options.store_secret:
        container["envFrom"] = [{"secretRef": {"name": options.store_secret}}]
    volumes = [_k8s_volume(options)[0]]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            **job_spec,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    **pod_spec,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def render_k8s(options: K8sOptions) -> dict[str, list[dict[str, Any]]]:
    """``{"study-creator.yaml": [Job], "workers.yaml": [Job]}``: the Optuna Kubernetes
    example's two Jobs, plus what preemption needs."""
    options.check()
    base = f"sweeper-{k8s_name(options.study_name)}"
    # The storage URL stays in the Secret: the container's environment has it as
    # SWEEPER_STORAGE, which sweeper reads; it is on no command line and in no manifest.
    study_args = [options.study_path, "--checkpoint-root", options.checkpoint_mount]
    if options.checkpoint_store:
        # The store is every pod's; the pod's own disk only caches (output_dir is a run key).
        study_args = [
            options.study_path,
            "--checkpoint-root",
            options.checkpoint_store,
            "--set",
            f"output_dir={options.cache_mount}",
        ]
    for override in options.overrides:
        study_args += ["--set", override]
    creator = _k8s_job(
        options,
        f"{base}-create",
        job_spec={
            "backoffLimit": 4,
            "podFailurePolicy": _pod_failure_policy("create", [EXIT_USER_ERROR]),
        },
        pod_spec={},
        container={"name": "create", "command": ["sweeper", "create", *study_args]},
    )
    workers = _k8s_job(
        options,
        f"{base}-workers",
        job_spec={
            # No completions: a work queue. Pods exit 0 once the shared budget is met; the
            # Job is complete when one has and the others have finished.
            "parallelism": options.workers,
            "backoffLimit": (
                options.backoff_limit if options.backoff_limit is not None else 3 * options.workers
            ),
            "podFailurePolicy": _pod_failure_policy(
                "worker", [EXIT_USER_ERROR, EXIT_TRIALS_FAILING]
            ),
        },
        # SIGTERM, then SIGKILL after this: a training step plus a checkpoint.
        pod_spec={"terminationGracePeriodSeconds": options.grace_seconds},
        container={
            "name": "worker",
            # Exec form: the worker is PID 1 and gets SIGTERM itself.
            "command": [
                "sweeper",
                "worker",
                *study_args,
                *_shared_gpu_args(options.trials_per_gpu),
                "--no-progress",
            ],
            "resources": _k8s_resources(options),
        },
    )
    return {"study-creator.yaml": [creator], "workers.yaml": [workers]}


def dump_manifests(documents: Sequence[dict[str, Any]]) -> str:
    """YAML documents as kubectl users write them: keys in order, no anchors or aliases."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return "---\n".join(
        yaml.dump(document, Dumper=_Dumper, sort_keys=False) for document in documents
    )
