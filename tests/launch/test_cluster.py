"""`sweeper create`, `sweeper slurm` (the script and its errors) and `sweeper k8s` (manifests
validated against the Kubernetes schema, strict). The real Slurm run is tests/end_to_end/test_slurm.py.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sweeper.attributes import STUDY_READY_ATTR
from sweeper.errors import (
    EXIT_STOPPED_SIGTERM,
    EXIT_STORAGE_OUTAGE,
    EXIT_TRIALS_FAILING,
    EXIT_USER_ERROR,
    ConfigError,
)
from sweeper.launch.cli import main
from sweeper.launch.cluster import (
    K8sOptions,
    SlurmOptions,
    k8s_name,
    render_k8s,
    render_sbatch,
    slurm_time_seconds,
    stop_seconds,
)
from sweeper.runtime.slurm import slurm_attrs
from sweeper.study.sweep import load_existing_study
from tests.support.studies import REPO_ROOT

PG = "postgresql+psycopg://sweeper:secret@db-host:5432/sweeper"
# The newest Kubernetes whose schemas kubernetes-validate bundles (validated offline).
K8S_VERSION = kubernetes_validate.latest_version()


def test_create_is_one_idempotent_step(
    write_study: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fixed = {"per_device_train_batch_size": 16, "num_train_epochs": 1, "seed": 42}
    path = write_study(
        "made",
        baselines=[
            {"name": "a", "params": {"learning_rate": 1e-3, **fixed}},
            {"name": "b", "params": {"learning_rate": 3e-3, **fixed}},
        ],
    )
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["create", str(path), "--storage", storage]) == 0
    assert "study 'made'" in capsys.readouterr().out
    study = load_existing_study("made", storage)
    assert [t.user_attrs["baseline"] for t in study.get_trials()] == ["a", "b"]
    assert study.user_attrs[STUDY_READY_ATTR] is True
    assert study.user_attrs["label_names"] == ["negative", "positive"]
    assert study.user_attrs["config"]["name"] == "made"

    # A creator stopped half-way (study created, nothing else): the next run completes it.
    study.set_user_attr(STUDY_READY_ATTR, False)
    assert main(["create", str(path), "--storage", storage]) == 0
    assert "now completed" in capsys.readouterr().out
    assert main(["create", str(path), "--storage", storage]) == 0
    assert "already exists and is ready" in capsys.readouterr().out
    assert len(load_existing_study("made", storage).get_trials()) == 2  # never enqueued twice


def test_create_runs_the_preflight_check_first(
    write_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study("too-long", model={"max_length": 4096})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["create", str(path), "--storage", storage]) == EXIT_USER_ERROR
    assert "model.max_length=4096 exceeds the 512 positions" in capsys.readouterr().err
    assert not (tmp_path / "study.db").exists()


def slurm_options(tmp_path: Path, **overrides: Any) -> SlurmOptions:
    values: dict[str, Any] = {
        "study_file": tmp_path / "s.yaml",
        "study_name": "s",
        "storage_url": PG,
        "workers": 4,
        "log_dir": tmp_path / "logs",
        "workdir": tmp_path,
        "python": "/opt/venv/bin/python",
        **overrides,
    }
    return SlurmOptions(**values)


def test_sbatch_script_runs_one_worker_per_gpu_task(tmp_path: Path) -> None:
    script = render_sbatch(
        slurm_options(
            tmp_path,
            partition="gpu",
            account="ml",
            max_concurrent=2,
            checkpoint_root="/shared/ckpt",
            overrides=["model.max_length=64"],
        )
    )
    for directive in (
        "--array=0-3%2",
        "--gres=gpu:1",
        "--requeue",
        "--signal=B:USR1@300",
        "--partition=gpu",
        "--account=ml",
        "--time=24:00:00",
        "--cpus-per-task=8",
        "--mem=32G",
        f"--output={tmp_path / 'logs'}/%x-%A_%a.log",
        "--open-mode=append",
    ):
        assert f"#SBATCH {directive}\n" in script
    assert (
        f"exec /opt/venv/bin/python -m sweeper worker {tmp_path / 's.yaml'} "
        "--no-progress --checkpoint-root /shared/ckpt --set model.max_length=64\n"
    ) in script
    # The URL (and its password) reaches the task through the environment sbatch passes on.
    assert "secret" not in script and "postgresql" not in script
    assert 'if [ -z "${SWEEPER_STORAGE:-}" ]; then' in script
    assert f"exit {EXIT_STOPPED_SIGTERM}" in script
    assert "#SBATCH --partition" not in render_sbatch(slurm_options(tmp_path))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"storage_url": "sqlite:///runs/s/study.db"}, r"is SQLite, which a cluster cannot share"),
        ({"workers": 0}, r"--workers must be at least 1, but got --workers=0"),
        ({"max_concurrent": 8}, r"--max-concurrent=8 exceeds --workers=4"),
        ({"time": "4h"}, r"--time='4h' is not a Slurm time limit"),
        ({"time": "5", "signal_seconds": 300}, r"--signal-seconds=300 conflicts with --time=5"),
        ({"signal_seconds": 10}, r"--signal-seconds=10 is too short"),
        ({"mem": "lots"}, r"--mem='lots' is not a Slurm memory size"),
    ],
)
def test_slurm_options_are_checked(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render_sbatch(slurm_options(tmp_path, **overrides))


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30", 1800), ("10:00", 600), ("04:00:00", 14400), ("1-00", 86400), ("2-01:30:05", 178205)],
)
def test_slurm_time_limits(value: str, seconds: int) -> None:
    assert slurm_time_seconds(value) == seconds


def test_slurm_command_refuses_sqlite_and_a_missing_sbatch(
    write_study: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_study("sl")
    out = tmp_path / "sl.sbatch"
    # The study file's default storage is SQLite: refused, naming the key and why.
    assert main(["slurm", str(path), "--workers", "2", "--out", str(out)]) == EXIT_USER_ERROR
    error = capsys.readouterr().err
    assert "storage='sqlite:///" in error
    assert "SQLite's locking is not safe over a network filesystem" in error
    assert not out.exists()

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    argv = ["slurm", str(path), "--storage", PG, "--workers", "2", "--out", str(out)]
    assert main([*argv, "--submit"]) == EXIT_USER_ERROR
    assert "--submit needs Slurm's sbatch, which is not on PATH" in capsys.readouterr().err
    assert not out.exists()  # refused before the study or the script was written

    assert main(argv) == 0  # writing the script needs no Slurm
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # the owner's alone, as a job script
    assert "#SBATCH --array=0-1\n" in out.read_text()
    assert "secret" not in out.read_text()  # the password reaches the tasks in their env


def test_slurm_attrs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SLURM_JOB_ID",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_RESTART_COUNT",
    ):
        monkeypatch.delenv(name, raising=False)
    assert slurm_attrs() == {}
    monkeypatch.setenv("SLURM_JOB_ID", "107")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "100")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert slurm_attrs() == {
        "slurm_job_id": "100",
        "slurm_array_task_id": 7,
        "slurm_restart_count": 0,
    }
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert slurm_attrs()["slurm_restart_count"] == 2


# --- Kubernetes -------------------------------------------------------------------------------


def k8s_options(**overrides: Any) -> K8sOptions:
    values: dict[str, Any] = {
        "study_name": "imdb_big",
        "study_path": "studies/imdb.yaml",
        "image": "registry.example.com/sweeper:1",
        "storage_secret": "sweeper-db",
        "workers": 4,
        "namespace": "ml",
        "cpu": "8",
        "memory": "32Gi",
        **overrides,
    }
    return K8sOptions(**values)


def validate(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_k8s_manifests_validate_strictly_against_the_schema() -> None:
    manifests = render_k8s(k8s_options())
    (creator,) = manifests["study-creator.yaml"]
    (workers,) = manifests["workers.yaml"]
    validate(creator)
    validate(workers)

    spec = workers["spec"]
    assert spec["parallelism"] == 4 and "completions" not in spec
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["terminationGracePeriodSeconds"] == 300
    (container,) = pod["containers"]
    assert container["command"][:3] == ["sweeper", "worker", "studies/imdb.yaml"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    (storage_env,) = [e for e in container["env"] if e["name"] == "SWEEPER_STORAGE"]
    assert storage_env["valueFrom"]["secretKeyRef"] == {"name": "sweeper-db", "key": "url"}
    assert "--storage" not in container["command"]  # sweeper reads SWEEPER_STORAGE itself
    assert "postgresql" not in yaml.safe_dump(manifests)  # the URL lives in the Secret only
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob"
    assert rules[0]["onExitCodes"]["values"] == [EXIT_USER_ERROR, EXIT_TRIALS_FAILING]
    # A database outage the worker waited out for workers.storage_outage_seconds: restart
    # the pod without counting it against the backoff limit.
    assert rules[1]["action"] == "Ignore"
    assert rules[1]["onExitCodes"]["values"] == [EXIT_STORAGE_OUTAGE]
    assert rules[2] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == "sweeper-checkpoints"
    assert creator["spec"]["template"]["spec"]["volumes"] == pod["volumes"]
    assert creator["spec"]["template"]["spec"]["containers"][0]["command"][:2] == [
        "sweeper",
        "create",
    ]
    assert workers["metadata"]["name"] == "sweeper-imdb-big-workers"


@pytest.mark.parametrize(
    ("path", "typo"),
    [
        (["spec"], ("parallelism", "paralelism")),
        (["spec", "template", "spec"], ("terminationGracePeriodSeconds", "terminationGracePeriod")),
        (["spec", "template", "spec", "containers", 0], ("volumeMounts", "volumeMount")),
    ],
)
def test_a_misspelled_field_fails_validation(path: list[Any], typo: tuple[str, str]) -> None:
    (workers,) = render_k8s(k8s_options())["workers.yaml"]
    node: Any = workers
    for key in path:
        node = node[key]
    right, wrong = typo
    node[wrong] = node.pop(right)
    with pytest.raises(kubernetes_validate.ValidationError, match=wrong):
        validate(workers)


def test_k8s_command_writes_the_manifests(
    write_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study("kube")
    out = tmp_path / "k8s"
    argv = ["k8s", str(path), "--image", "img:1", "--storage-secret", "db", "--workers", "3"]
    argv += ["--storage", PG, "--study-path", "studies/kube.yaml"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "kubectl wait --for=condition=complete" in capsys.readouterr().out
    for name in ("study-creator.yaml", "workers.yaml"):
        for document in yaml.safe_load_all((out / name).read_text()):
            validate(document)
    assert "sweeper:secret@" not in (out / "workers.yaml").read_text()  # no password there

    assert main([*argv, "--grace-seconds", "5"]) == EXIT_USER_ERROR
    assert "--grace-seconds=5 is too short" in capsys.readouterr().err
    assert main([*argv, "--storage", "sqlite:///x.db"]) == EXIT_USER_ERROR
    assert "--storage='sqlite:///x.db' is SQLite" in capsys.readouterr().err


def test_dockerfile_holds_the_project_and_runs_sweeper_in_exec_form() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    for line in ("COPY sweeper/ sweeper/", "COPY studies/ studies/", "HF_HUB_OFFLINE=1"):
        assert line in text
    assert 'ENTRYPOINT ["sweeper"]' not in text  # the manifests give the whole command
    assert os.path.exists(REPO_ROOT / ".dockerignore")


def test_several_trials_per_gpu_make_the_task_and_the_pod_a_gpus_parent(tmp_path: Path) -> None:
    """With N > 1 the task's (or pod's) process starts N workers on its one GPU, forwards a
    stop once to each and exits with the worst code (sweeper worker --gpus)."""
    script = render_sbatch(slurm_options(tmp_path, trials_per_gpu=3))
    assert " --no-progress --gpus all --trials-per-gpu 3\n" in script
    assert "--gpus" not in render_sbatch(slurm_options(tmp_path))
    (workers,) = render_k8s(k8s_options(trials_per_gpu=2))["workers.yaml"]
    validate(workers)
    command = workers["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[-5:] == ["--gpus", "all", "--trials-per-gpu", "2", "--no-progress"]
    with pytest.raises(ConfigError, match=r"--trials-per-gpu must be at least 1, but got"):
        render_sbatch(slurm_options(tmp_path, trials_per_gpu=0))


def test_k8s_pods_carry_the_study_label() -> None:
    """`kubectl get pods -l sweeper.study=<study>` (docs/how-to/kubernetes.md) finds them."""
    manifests = render_k8s(k8s_options())
    (workers,) = manifests["workers.yaml"]
    labels = workers["spec"]["template"]["metadata"]["labels"]
    assert labels["sweeper.study"] == k8s_name(k8s_options().study_name)


def test_k8s_with_an_object_store_needs_no_shared_volume() -> None:
    """checkpoint_root s3://...: an emptyDir cache per pod, the store's credentials from a
    Secret (never in the manifest), and the store as every pod's --checkpoint-root."""
    options = k8s_options(checkpoint_store="s3://bucket/sweeper", store_secret="s3-credentials")
    manifests = render_k8s(options)
    (workers,) = manifests["workers.yaml"]
    validate(workers)
    validate(manifests["study-creator.yaml"][0])
    pod = workers["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "cache", "emptyDir": {}}]
    (container,) = pod["containers"]
    assert container["volumeMounts"] == [{"name": "cache", "mountPath": "/cache"}]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    command = container["command"]
    assert command[command.index("--checkpoint-root") + 1] == "s3://bucket/sweeper"
    assert "output_dir=/cache" in command
    assert "persistentVolumeClaim" not in yaml.safe_dump(manifests)


@pytest.mark.parametrize(
    ("size", "to_store", "seconds"),
    [
        (None, True, 300),  # unknown size: the default
        (int(0.8e9), False, 300),  # a local save only
        (int(0.8e9), True, 300),  # distilbert with AdamW: 60 s + 64 s of upload fit in 300
        (int(4e9), True, 390),  # 60 s + 320 s of upload, rounded up to 30 s
    ],
)
def test_stop_seconds_grow_with_the_checkpoint_a_store_must_receive(
    size: int | None, to_store: bool, seconds: int
) -> None:
    assert stop_seconds(size, to_store)[0] == seconds
