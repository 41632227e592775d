"""The study is the one source of truth (sweeper.study.resolve): once created, every command runs
from the configuration it stored, on any machine, without its study file; the study file
and --set may change only the run and machine keys; and no password is stored, written,
printed or put on a command line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from optuna.trial import TrialState

from sweeper.attributes import CONFIG_ATTR
from sweeper.credentials import STORAGE_ENV, scrub_document, without_credentials
from sweeper.launch.cli import main
from sweeper.runtime.workers import FAKE_GPU_COUNT_ENV
from sweeper.settings.config import RUN_KEYS, is_run_key, run_keys_markdown
from sweeper.study.resolve import resolve_study
from sweeper.study.sweep import load_existing_study
from tests.support.studies import REPO_ROOT, tiny_bert


def finished(name: str, storage_url: str) -> int:
    study = load_existing_study(name, storage_url)
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


@pytest.fixture
def other_model(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """Another tiny BERT than the study files name (hidden 16, one layer)."""
    return tiny_bert(
        tmp_path / "other-model",
        hidden=16,
        layers=1,
        intermediate=32,
        tokenizer_source=tiny_model_dir,
    )


@pytest.mark.timeout(600)
def test_a_study_runs_from_its_stored_config_in_an_empty_directory(
    write_study: Callable[..., Path],
    small_csv: Path,
    other_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Created with --set (another data file, model and name), then worker, confirm, show
    and export from a directory with no study file, as on another machine."""
    other_data = tmp_path / "elsewhere" / "reviews-copy.csv"
    other_data.parent.mkdir()
    shutil.copy(small_csv, other_data)
    path = write_study("original", budget={"n_trials": 2})
    url = f"sqlite:///{tmp_path / 'shared' / 'study.db'}"
    created = [
        "sweep",
        str(path),
        "--storage",
        url,
        "--no-progress",
        "--set",
        "name=moved",
        "--set",
        f"dataset.path={other_data}",
        "--set",
        f"model.name={other_model}",
    ]
    assert main(created) == 0
    assert finished("moved", url) == 2

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    # The URL from the environment, as launchers pass it; --n-trials is a run key.
    monkeypatch.setenv(STORAGE_ENV, url)
    assert main(["worker", "moved", "--n-trials", "3", "--no-progress"]) == 0
    study = load_existing_study("moved", url)
    assert finished("moved", url) == 3
    stored = study.user_attrs[CONFIG_ATTR]
    assert stored["model"]["name"] == str(other_model)
    assert stored["dataset"]["path"] == str(other_data)
    assert stored["budget"]["n_trials"] == 2  # the stored config is not rewritten

    capsys.readouterr()
    assert main(["confirm", "moved", "--top", "1", "--seeds", "2", "--no-progress"]) == 0
    confirmed = capsys.readouterr().out
    assert "(winner)" in confirmed
    companion = load_existing_study("moved.confirm", url)
    reruns = companion.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(reruns) == 2
    # The re-runs trained the stored model on the stored schedule, not a study file's.
    assert {trial.params["num_train_epochs"] for trial in reruns} <= {1, 2}

    assert main(["show", "moved"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()]
    assert len(rows) == 3
    assert main(["export", "moved", "--to", str(empty / "model")]) == 0
    exported = json.loads((empty / "model" / "config.json").read_text())
    assert exported["hidden_size"] == 16  # the other model, as stored
    assert not (empty / "studies").exists()


@pytest.fixture
def created_study(write_study: Callable[..., Path], tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A study file and the storage of a tiny study created from it (one trial)."""
    path = write_study("truth", budget={"n_trials": 1})
    url = f"sqlite:///{tmp_path / 'truth.db'}"
    assert main(["sweep", str(path), "--storage", url, "--no-progress"]) == 0
    yield path, url


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (["--set", "model.max_length=32"], ["model.max_length: the study has 64, given 32"]),
        (
            ["--set", "objective.metric=accuracy", "--set", "search_space.seed=5"],
            [
                "objective.metric: the study has 'validation_loss', given 'accuracy'",
                "search_space.seed: the study has {'choices': [42, 7]}, given 5",
            ],
        ),
        (
            ["--set", "pruner.n_startup_trials=9"],
            ["pruner.n_startup_trials: the study has 2, given 9"],
        ),
    ],
)
def test_a_changed_study_key_is_refused_and_nothing_runs(
    created_study: tuple[Path, str],
    change: list[str],
    expected: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, url = created_study
    capsys.readouterr()
    argv = ["sweep", str(path), "--storage", url, "--n-trials", "3", "--no-progress", *change]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "already exists, and its stored configuration is its truth" in error
    for line in expected:
        assert line in error
    assert "nothing was run" in error
    assert finished("truth", url) == 1


def _file_notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "differs from the stored study" in line]


def test_a_changed_study_file_is_a_template_and_the_stored_values_run(
    created_study: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Edited after the study was created (evaluation.steps 3 -> 5, budget.n_trials 1 -> 7):
    one note names what differs and the stored values run; only the typed budget applies."""
    path, url = created_study
    document = yaml.safe_load(path.read_text())
    document["evaluation"]["steps"] = 5
    document["budget"]["n_trials"] = 7
    path.write_text(yaml.safe_dump(document))
    capsys.readouterr()
    assert main(["worker", str(path), "--storage", url, "--n-trials", "2", "--no-progress"]) == 0
    assert _file_notes(capsys.readouterr().err) == [
        f"[sweeper] note: {path} differs from the stored study 'truth' in 1 key "
        "(evaluation.steps): the stored values are used; --set KEY=VALUE changes a run key "
        "(the budget: --n-trials, or N_TRIALS= with make), --set name=NEW starts a new study "
        "from the file"
    ]
    study = load_existing_study("truth", url)
    second = study.get_trials(deepcopy=False)[-1]
    # Evaluated every 3 steps, as stored, not every 5 as the file now says.
    assert sorted(second.intermediate_values)[:2] == [3, 6]
    assert finished("truth", url) == 2
    # The file's budget of 7 is a note, not a request: the stored budget (1) is met.
    assert main(["worker", str(path), "--storage", url, "--no-progress"]) == 0
    assert "in 2 keys (budget.n_trials, evaluation.steps)" in capsys.readouterr().err
    assert finished("truth", url) == 2


@pytest.mark.timeout(600)
def test_every_command_beside_the_study_file_runs_the_study_created_with_set(
    write_study: Callable[..., Path],
    small_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Created with --set (another data file with other columns, another length), then
    sweep, worker, check and confirm beside the unchanged study file with nothing repeated:
    each notes the file's differences and runs the stored study (the file's data would fail
    the study's data check)."""
    import pandas as pd

    other_data = tmp_path / "renamed.csv"
    pd.read_csv(small_csv).rename(columns={"review": "text", "sentiment": "label"}).to_csv(
        other_data, index=False
    )
    path = write_study("templated", budget={"n_trials": 2})
    url = f"sqlite:///{tmp_path / 'templated.db'}"
    common = ["--storage", url, "--no-progress"]
    created = [
        *("--set", f"dataset.path={other_data}", "--set", "dataset.text_column=text"),
        *("--set", "dataset.label_column=label", "--set", "model.max_length=32"),
        *("--set", "keep_all_checkpoints=true"),
    ]
    assert main(["sweep", str(path), *common, *created]) == 0
    assert finished("templated", url) == 2
    note = (
        f"[sweeper] note: {path} differs from the stored study 'templated' in 4 keys "
        "(dataset.label_column, dataset.path, dataset.text_column, model.max_length): "
        "the stored values are used"
    )
    capsys.readouterr()
    # A typed run key applies (the budget); the stored keep_all_checkpoints stays true.
    assert main(["sweep", str(path), *common, "--n-trials", "3"]) == 0
    assert _file_notes(capsys.readouterr().err)[0].startswith(note)
    assert main(["worker", str(path), *common, "--n-trials", "4"]) == 0
    assert _file_notes(capsys.readouterr().err)[0].startswith(note)
    assert finished("templated", url) == 4
    resolved = resolve_study(path, {"storage": url})
    assert resolved.config.keep_all_checkpoints is True
    assert resolved.config.model.max_length == 32
    assert resolved.config.dataset.path == str(other_data)

    assert main(["check", str(path), "--storage", url]) == 0
    assert _file_notes(capsys.readouterr().err)[0].startswith(note)
    assert main(["confirm", str(path), *common, "--top", "1", "--seeds", "2"]) == 0
    captured = capsys.readouterr()
    assert _file_notes(captured.err)[0].startswith(note) and "(winner)" in captured.out
    reruns = load_existing_study("templated.confirm", url).get_trials(
        deepcopy=False, states=(TrialState.COMPLETE,)
    )
    assert len(reruns) == 2

    # Typed, a key that is not a run key is still refused when it differs.
    assert main(["check", str(path), "--storage", url, "--set", "model.max_length=64"]) == 2
    assert "model.max_length: the study has 32, given 64" in capsys.readouterr().err


def test_run_keys_may_change_and_the_model_is_checked(
    created_study: tuple[Path, str],
    tmp_path: Path,
    other_model: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, url = created_study
    run_changes = [
        "--set",
        "budget.n_trials=9",
        "--set",
        "workers.poll_seconds=1",
        "--set",
        "training.report_to=tensorboard",
        "--set",
        f"output_dir={tmp_path / 'elsewhere'}",
    ]
    assert main(["check", str(path), "--storage", url, *run_changes]) == 0
    # Another copy of the same model: a machine-local path, allowed.
    copy = tmp_path / "copy-of-model"
    shutil.copytree(tiny_model_dir, copy)
    assert main(["check", "truth", "--storage", url, "--set", f"model.name={copy}"]) == 0
    # Another model under the same key: its fingerprint differs.
    capsys.readouterr()
    assert main(["check", "truth", "--storage", url, "--set", f"model.name={other_model}"]) == 2
    error = capsys.readouterr().err
    assert (
        f"model.name={str(other_model)!r} is not the model study 'truth' was created with" in error
    )


def test_without_a_study_file_or_study_the_error_says_what_to_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert main(["worker", "nowhere", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "no study named 'nowhere'" in error and "no study file for it" in error
    assert not (tmp_path / "runs").exists()


def test_run_keys_are_documented_from_the_code() -> None:
    reference = (REPO_ROOT / "docs" / "reference" / "study-file.md").read_text()
    assert run_keys_markdown() in reference, "docs/reference/study-file.md is stale: make docs"
    assert is_run_key("budget.n_trials") and is_run_key("workers")
    assert not is_run_key("budget_x") and not is_run_key("model.max_length")
    assert set(RUN_KEYS) >= {"storage", "checkpoint_root", "output_dir", "training.report_to"}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://u:pw@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        (
            "postgresql+psycopg://u:p%40w@h/db?sslmode=require",
            "postgresql+psycopg://u@h/db?sslmode=require",
        ),
        ("postgresql://h/db?user=u&password=pw", "postgresql://h/db?user=u"),
        ("s3://KEY:SECRET@bucket/prefix", "s3://KEY@bucket/prefix"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("runs/checkpoints", "runs/checkpoints"),
        ("mysql://u@h/db", "mysql://u@h/db"),
        # A generated password may hold what urllib takes for a path, query or fragment.
        ("postgresql+psycopg://u:ab/cd@host/db", "postgresql+psycopg://u@host/db"),
        (
            "postgresql+psycopg://u:a?b#c@h:5432/db?sslmode=require",
            "postgresql+psycopg://u@h:5432/db?sslmode=require",
        ),
    ],
)
def test_without_credentials(url: str, expected: str) -> None:
    assert without_credentials(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://u:ab/cd@host/db",
        "postgresql://host/db?user=u&password=ab/cd",
        "postgresql+psycopg://u:a?b#c@host/db",
    ],
)
def test_log_lines_show_no_password(url: str) -> None:
    from sweeper.runtime.storage import redact

    shown = redact(url)
    assert "ab/cd" not in shown and "a?b#c" not in shown and "***" in shown


def test_scrub_document_drops_every_url_keys_password() -> None:
    document = {
        "name": "x",
        "storage": "postgresql://u:pw@h/db",
        "checkpoint_root": "s3://k:pw@b/p",
        "dataset": {"path": "s3://k:pw@b/d.csv", "text_column": "t"},
    }
    scrubbed = scrub_document(document)
    assert "pw" not in json.dumps(scrubbed)
    assert document["storage"] == "postgresql://u:pw@h/db"  # the input is not changed


# --- no password anywhere (PostgreSQL) ------------------------------------------------------------


@pytest.fixture
def password_url(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A role and database of this test's own whose password no other string holds:
    (URL with the password, the password)."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    suffix = uuid.uuid4().hex[:10]
    role, database, password = f"sw_role_{suffix}", f"sw_db_{suffix}", f"pw-{uuid.uuid4().hex}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        connection.exec_driver_sql(f"GRANT {role} TO CURRENT_USER")
        connection.exec_driver_sql(f"CREATE DATABASE {database} OWNER {role}")
    url = make_url(postgres_url).set(username=role, password=password, database=database)
    try:
        yield url.render_as_string(hide_password=False), password
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            connection.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        admin.dispose()


def _children_cmdlines(parent: int) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == parent:
                found[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                )
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.timeout(600)
def test_the_password_is_stored_written_and_shown_nowhere(
    write_study: Callable[..., Path],
    password_url: tuple[str, str],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    url, password = password_url
    path = write_study("secretive", budget={"n_trials": 1})
    runs = tmp_path / "runs"
    shown: list[str] = []

    def run(*argv: str) -> int:
        code = main(list(argv))
        out, err = capfd.readouterr()
        shown.append(out + err)
        return code

    assert run("sweep", str(path), "--storage", url, "--no-progress") == 0
    assert run("create", str(path), "--storage", url) == 0
    assert run("check", str(path), "--storage", url) == 0
    for view in ("show", "best"):
        assert run(view, "secretive", "--storage", url) == 0
    assert run("report", "secretive", "--storage", url, "--out", str(runs / "report.html")) == 0
    assert run("card", "secretive", "--storage", url, "--out", str(runs / "card")) == 0
    assert (
        run("slurm", str(path), "--storage", url, "--workers", "2", "--out", str(runs / "s.sbatch"))
        == 0
    )
    k8s = ["k8s", str(path), "--storage", url, "--image", "img:1", "--storage-secret", "db"]
    assert run(*k8s, "--workers", "2", "--study-path", "s.yaml", "--out", str(runs / "k8s")) == 0

    # `--gpus` workers (two fake GPUs): the parent was given --storage, its children get the
    # URL in their environment, never on their command lines.
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sweeper",
            "worker",
            str(path),
            "--storage",
            url,
            "--n-trials",
            "3",
            "--no-progress",
            "--gpus",
            "all",
        ],
        env={**os.environ, FAKE_GPU_COUNT_ENV: "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 120
        while worker.poll() is None and len(seen) < 2 and time.monotonic() < deadline:
            seen.update(_children_cmdlines(worker.pid))
            time.sleep(0.1)
        output, _ = worker.communicate(timeout=400)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
    assert worker.returncode == 0, output
    shown.append(output)
    assert len(seen) == 2, f"expected two worker processes, saw {seen}"
    for cmdline in seen.values():
        assert "sweeper worker" in cmdline
        assert password not in cmdline and "--storage" not in cmdline

    for text in shown:
        assert password not in text
    study = load_existing_study("secretive", url)
    assert finished("secretive", url) == 3
    attrs = [study.user_attrs, *(trial.user_attrs for trial in study.get_trials(deepcopy=False))]
    assert password not in json.dumps(attrs, default=str)
    assert study.user_attrs[CONFIG_ATTR]["storage"] == without_credentials(url)
    written = [file for file in runs.rglob("*") if file.is_file()]
    assert any(file.name == "config.resolved.yaml" for file in written)
    assert any(file.suffix == ".sbatch" for file in written)
    for file in written:
        assert password.encode() not in file.read_bytes(), file


def test_a_url_without_its_password_works_with_pgpass(
    write_study: Callable[..., Path],
    password_url: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """PostgreSQL's driver reads PGPASSFILE: the URL sweeper sees needs no password."""
    from sqlalchemy.engine import make_url

    url, password = password_url
    parsed = make_url(url)
    passfile = tmp_path / "pgpass"
    host = parsed.host or parsed.query.get("host") or "localhost"
    passfile.write_text(f"{host}:{parsed.port or 5432}:*:{parsed.username}:{password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    bare = without_credentials(url)
    path = write_study("passfile", budget={"n_trials": 1})
    assert main(["create", str(path), "--storage", bare]) == 0
    assert main(["show", "passfile", "--storage", bare]) == 0
    assert password not in capsys.readouterr().out


def test_a_password_an_earlier_version_stored_is_dropped_when_the_study_is_opened(
    finished_study: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    import optuna

    database = tmp_path / "old.db"
    # SQLite's own backup: the shared study's WAL holds recent writes a file copy would miss.
    source = sqlite3.connect(finished_study.storage_url.removeprefix("sqlite:///"))
    target = sqlite3.connect(database)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    url = f"sqlite:///{database}"
    study = optuna.load_study(study_name=finished_study.name, storage=url)
    old = dict(study.user_attrs[CONFIG_ATTR])
    old["storage"] = "postgresql+psycopg://sweeper:old-secret-42@db:5432/sweeper"
    study.set_user_attr(CONFIG_ATTR, old)

    assert (
        main(["report", finished_study.name, "--storage", url, "--out", str(tmp_path / "r.html")])
        == 0
    )
    assert "old-secret-42" not in (tmp_path / "r.html").read_text()
    study = optuna.load_study(study_name=finished_study.name, storage=url)
    assert (
        study.user_attrs[CONFIG_ATTR]["storage"] == "postgresql+psycopg://sweeper@db:5432/sweeper"
    )
    assert "old-secret-42" not in capsys.readouterr().out


def test_the_study_file_reference_is_generated_from_the_code() -> None:
    """docs/reference/study-file.md is what sweeper.settings.reference generates (make docs),
    and every key, hyperparameter, metric, pruner and sampler type has its line there."""
    from sweeper.settings.hyperparameters import HYPERPARAMETERS
    from sweeper.settings.metrics import METRICS
    from sweeper.settings.pruners import PRUNER_TYPES
    from sweeper.settings.reference import REFERENCE_PATH, SECTIONS, study_file_reference

    generated = study_file_reference()
    written = (REPO_ROOT / REFERENCE_PATH).read_text(encoding="utf-8")
    assert written == generated, "docs/reference/study-file.md is stale: run `make docs`"
    for section, model in SECTIONS.items():
        for name, field in model.model_fields.items():
            assert f"| `{section}.{name}` |" in generated
            assert field.description, f"{section}.{name} has no docstring to describe it"
    for entry in HYPERPARAMETERS:  # search_space.learning_rate, model.method, lora.r, ...
        assert f"| `{entry.study_key}` |" in generated and entry.description
    for objective in METRICS:
        assert f"| `{objective.name}` |" in generated
    for name in PRUNER_TYPES:
        assert f"### pruner.type: {name}" in generated


def test_a_run_key_left_out_keeps_its_stored_value(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    """Created keeping all checkpoints and with a poll interval: a worker started later from
    the same study file without them keeps the study's values, not the defaults; given
    again, they change (run keys)."""
    path = write_study("kept")
    url = f"sqlite:///{tmp_path / 'kept.db'}"
    created = ["create", str(path), "--storage", url, "--set", "keep_all_checkpoints=true"]
    assert main([*created, "--set", "workers.poll_seconds=1.5"]) == 0
    resolved = resolve_study(path, {"storage": url})
    assert resolved.exists and resolved.config.keep_all_checkpoints is True
    assert resolved.config.workers.poll_seconds == 1.5
    changed = resolve_study(path, {"storage": url, "keep_all_checkpoints": False})
    assert changed.config.keep_all_checkpoints is False
