"""The study database goes away: no worker dies, no trial runs twice, every error is one line.

Each test runs its own embedded PostgreSQL (sweeper.runtime.local_postgres), which it stops
and starts as a restart, an upgrade or a failover would; workers are real ``sweeper worker``
processes training the tiny BERT, or ``run_trials`` in this process where the test must
time the outage against a trial's heartbeats.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import psycopg
import pytest
import sqlalchemy
from optuna.trial import TrialState

from sweeper.errors import EXIT_STORAGE_OUTAGE, StorageError
from sweeper.runtime import outage
from sweeper.runtime.outage import DeferredReports, classify, short_reason
from sweeper.runtime.storage import (
    NoStudiesError,
    ResilientRDBStorage,
    check_reachable,
    open_lock,
    open_storage,
    retry_callback,
    storage_health,
)
from sweeper.runtime.workers import StopReason, run_trials
from sweeper.settings.config import WorkersConfig
from sweeper.study.sweep import load_existing_study
from tests.support.servers import Server

# Heartbeats every second, a trial stale after 3 s: an outage of 8 s outlasts the grace.
FAST_WORKERS = {"heartbeat_interval_seconds": 1, "grace_period_seconds": 3, "poll_seconds": 0.5}
TRAINING = {
    "dataset": {"max_train_rows": 96, "max_validation_rows": 24},
    "search_space": {"num_train_epochs": 10, "per_device_train_batch_size": 8},
    "evaluation": {"strategy": "steps", "steps": 10},
    "pruner": {"type": "none"},
}


def start_worker(study_file: Path, storage_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "sweeper", "worker", str(study_file), "--no-progress"],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SWEEPER_STORAGE": storage_url},
        )


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {seconds} s")


def reports_in_storage(server: Server) -> int:
    try:
        (count,) = server.sql("SELECT count(*) FROM trial_intermediate_values")[0]
        return int(str(count))
    except sqlalchemy.exc.ProgrammingError:
        return 0  # no tables yet


# --- what counts as an outage ------------------------------------------------------------------


def _driver_error(message: str) -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError(message))


@pytest.mark.parametrize(
    ("message", "failure", "reason"),
    [
        (
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: '
            "Connection refused\n\tIs the server running on that host?",
            "connection",
            "Connection refused",
        ),
        (
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: '
            "FATAL:  sorry, too many clients already",
            "too many clients",
            "sorry, too many clients already",
        ),
        (
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: '
            'FATAL:  too many connections for role "sweeper"',
            "too many clients",
            'too many connections for role "sweeper"',
        ),
        (
            'connection is bad: connection to server on socket "/run/pg/.s.PGSQL.5432" failed: '
            "Resource temporarily unavailable",
            "too many clients",
            "Resource temporarily unavailable",
        ),
        (
            "consuming input failed: server closed the connection unexpectedly",
            "connection",
            "server closed the connection unexpectedly",
        ),
        (
            "terminating connection due to administrator command",
            "connection",
            "terminating connection due to administrator command",
        ),
        (
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: '
            'FATAL:  password authentication failed for user "sweeper"',
            None,
            'password authentication failed for user "sweeper"',
        ),
        (
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: '
            'FATAL:  database "nodb" does not exist',
            None,
            'database "nodb" does not exist',
        ),
    ],
)
def test_which_failures_are_waited_out(message: str, failure: str | None, reason: str) -> None:
    error = _driver_error(message)
    # As Optuna raises them: wrapped in StorageInternalError, the driver's error as its cause.
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    wrapped.__cause__ = error
    for raised in (error, wrapped):
        assert classify(raised) == failure
        assert short_reason(raised) == reason
    assert classify(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate"))) is None


# --- riding out an outage ------------------------------------------------------------------


def test_only_time_the_server_does_not_answer_counts_towards_the_outage_limit() -> None:
    # The 1,000-worker scale run at cd1c11b: workers queued for minutes for a free connection
    # then met a one-minute restart, and 577 of them stopped at once, their queueing counted
    # as outage.
    lines: list[str] = []
    health = outage.StorageHealth(
        "postgresql+psycopg://u@db:5432/s", "db", limit_seconds=1.0, log=lines.append
    )
    full = _driver_error("connection failed: FATAL:  sorry, too many clients already")
    refused = _driver_error("connection failed: Connection refused")
    health.failed(full, "too many clients")
    time.sleep(1.3)
    assert health.down and health.down_seconds > 1.0 and not health.exceeded
    health.failed(refused, "connection")  # the server stops answering now
    assert health.unreachable_seconds < 1.0 and not health.exceeded
    time.sleep(0.6)
    health.failed(full, "too many clients")  # it answered (full): the clock starts afresh
    health.failed(refused, "connection")
    assert health.unreachable_seconds < 1.0 and not health.exceeded
    time.sleep(1.3)
    assert health.exceeded
    assert str(health.outage_error("starting a trial")).startswith(
        "storage='db' could not be reached for 1 s while starting a trial (Connection refused;"
    )
    health.succeeded()
    assert not health.down and health.unreachable_seconds == 0.0
    assert [line.split(" since ")[0] for line in lines] == [
        "[sweeper] the study database at db:5432 has no free connection",
        "[sweeper] the study database at db:5432 cannot be reached",
        "[sweeper] the study database at db:5432 is back after 3 s",
    ]


@pytest.mark.timeout(600)
def test_two_workers_ride_out_an_outage_longer_than_the_grace_period(
    server: Server, write_study: Callable[..., Path], study_name: str, tmp_path: Path
) -> None:
    path = write_study(study_name, **TRAINING, budget={"n_trials": 2}, workers=FAST_WORKERS)
    logs = [tmp_path / f"worker-{index}.log" for index in range(2)]
    workers = [start_worker(path, server.url, log) for log in logs]

    def both_training() -> bool:
        for worker, log in zip(workers, logs, strict=True):
            assert worker.poll() is None, log.read_text()
        if not reports_in_storage(server):
            return False
        query = "SELECT count(DISTINCT trial_id) FROM trial_intermediate_values"
        return server.sql(query) == [(2,)]

    wait_until(both_training, "both workers reporting")
    server.stop()
    time.sleep(8)  # > grace_period_seconds: every heartbeat is stale when it comes back
    server.start()
    back_at = datetime.datetime.now()
    codes = [worker.wait(timeout=500) for worker in workers]
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n".join(outputs)
    for output in outputs:
        assert "Traceback" not in output, output
        assert "cannot be reached since" in output and "training goes on, retrying" in output
        assert "is back after" in output

    study = load_existing_study(study_name, server.url)
    trials = study.get_trials()
    # Exactly the budget, no trial failed as stale, none retried, none run twice.
    assert sorted(trial.number for trial in trials) == [0, 1]
    assert [trial.state for trial in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    for trial in trials:
        # Each trial was training across the outage, not done before it.
        assert trial.datetime_complete is not None and trial.datetime_complete > back_at
        assert "failed_trial" not in trial.system_attrs
        assert "resumed_from_step" not in trial.user_attrs
        # Every evaluation reported once, in order: the queued ones were written when the
        # database came back (none lost, none doubled).
        history_steps = [row["step"] for row in trial.user_attrs["history"]]
        assert len(trial.intermediate_values) == len(history_steps) == 12


@pytest.mark.timeout(300)
def test_a_short_outage_when_a_heartbeat_is_due_leaves_the_heartbeat_thread_alive(
    server: Server,
) -> None:
    workers = WorkersConfig(**FAST_WORKERS)  # type: ignore[arg-type]
    storage = open_storage(server.url, workers=workers)
    study = optuna.create_study(storage=storage, study_name="heartbeat")
    reported: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        reports = DeferredReports(trial, storage_health(trial.study))
        for step in range(20):
            if step == 3:
                server.stop()
            if step == 8:  # 2.5 s down: at least two heartbeats fell inside it
                server.start()
            reports.report(step, float(step))
            reported.append(step)
            time.sleep(0.5)
        reports.flush()
        return 1.0

    # A judge that knows nothing of outages (Optuna's own check, grace 3 s), asked after
    # the database has been back for longer than the grace period.
    judge_verdicts: list[list[int]] = []

    def judge() -> None:
        wait_until(lambda: len(reported) >= 16, "the trial's 16th report", 120)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            plain = optuna.storages.RDBStorage(server.url, heartbeat_interval=1, grace_period=3)
        judge_verdicts.append(plain._get_stale_trial_ids(study._study_id))
        plain.engine.dispose()

    judging = threading.Thread(target=judge)
    judging.start()
    result = run_trials(
        study,
        objective,
        storage_url=server.url,
        workers=workers,
        n_trials=1,
        log=lambda line: None,
    )
    judging.join(timeout=120)
    assert result.reason is StopReason.BUDGET_MET and result.trials_run == 1
    assert judge_verdicts == [[]]  # the heartbeat went on after the outage: not stale
    (trial,) = study.get_trials()
    assert trial.state == TrialState.COMPLETE
    assert trial.intermediate_values == {step: float(step) for step in range(20)}


@pytest.mark.timeout(300)
def test_a_lost_reply_creates_no_orphan_and_fails_no_finished_trial(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server commits, the reply is lost (simulated where the storage makes the call):
    the retried creation finds its trial, the retried tell finds it told."""
    lost = {"creation": 0, "tell": 0}
    create_once = ResilientRDBStorage._create_trial_once
    set_state = optuna.storages.RDBStorage.set_trial_state_values

    def reply_lost() -> optuna.exceptions.StorageInternalError:
        error = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
        error.__cause__ = _driver_error("server closed the connection unexpectedly")
        return error

    def creation_loses_its_reply(self, study_id, template):  # type: ignore[no-untyped-def]
        created = create_once(self, study_id, template)
        if created.number == 1 and not lost["creation"]:
            lost["creation"] += 1
            raise reply_lost()
        return created

    def tell_loses_its_reply(self, trial_id, state, values=None):  # type: ignore[no-untyped-def]
        done = set_state(self, trial_id, state, values)
        if state == TrialState.COMPLETE and not lost["tell"]:
            lost["tell"] += 1
            raise reply_lost()
        return done

    monkeypatch.setattr(ResilientRDBStorage, "_create_trial_once", creation_loses_its_reply)
    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_state_values", tell_loses_its_reply)
    workers = WorkersConfig(**FAST_WORKERS)  # type: ignore[arg-type]
    study = optuna.create_study(
        storage=open_storage(server.url, workers=workers), study_name="in-doubt"
    )
    result = run_trials(
        study,
        lambda trial: trial.suggest_float("x", 0.0, 1.0),
        storage_url=server.url,
        workers=workers,
        n_trials=3,
        log=lambda line: None,
    )
    assert lost == {"creation": 1, "tell": 1}
    assert result.reason is StopReason.BUDGET_MET and result.trials_run == 3
    trials = study.get_trials()
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 3
    assert [trial.number for trial in trials] == [0, 1, 2]


def test_a_failed_trial_is_retried_once_however_often_it_is_reported(storage_url: str) -> None:
    study = optuna.create_study(
        storage=open_storage(storage_url, heartbeat=False),
        study_name=f"retry-{uuid.uuid4().hex[:8]}",
    )
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, state=TrialState.FAIL)
    failed = study.get_trials()[0]
    callback = retry_callback(WorkersConfig())
    callback(study, failed)
    callback(study, failed)  # a second worker, or the same write retried after a lost reply
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].system_attrs["failed_trial"] == 0


@pytest.mark.timeout(600)
def test_past_the_outage_limit_the_worker_exits_75_and_another_resumes_the_trial(
    server: Server, write_study: Callable[..., Path], study_name: str, tmp_path: Path
) -> None:
    path = write_study(
        study_name,
        **{**TRAINING, "search_space": {"num_train_epochs": 60, "per_device_train_batch_size": 8}},
        budget={"n_trials": 1},
        workers={**FAST_WORKERS, "storage_outage_seconds": 4},
    )
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = start_worker(path, server.url, first_log)
    wait_until(lambda: reports_in_storage(server) >= 2, "two reports")
    assert first.poll() is None, first_log.read_text()
    server.stop()
    assert first.wait(timeout=120) == EXIT_STORAGE_OUTAGE, first_log.read_text()
    output = first_log.read_text()
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("sweeper: error:")]
    assert len(errors) == 1, output
    assert "could not be reached for" in errors[0]
    assert "workers.storage_outage_seconds=4" in errors[0] and "sweeper:sweeper" not in errors[0]
    checkpoints = sorted(
        (tmp_path / "runs" / study_name / "checkpoints" / "trial-0").glob(
            "checkpoint-*/trainer_state.json"
        )
    )
    assert checkpoints, output
    saved_at = max(int(found.parent.name.removeprefix("checkpoint-")) for found in checkpoints)

    server.start()
    second = start_worker(path, server.url, second_log)
    assert second.wait(timeout=500) == 0, second_log.read_text()
    abandoned, retry = load_existing_study(study_name, server.url).get_trials()
    assert abandoned.state == TrialState.FAIL  # its heartbeat went stale: failed, retried
    assert retry.state == TrialState.COMPLETE and retry.system_attrs["failed_trial"] == 0
    assert retry.user_attrs["resumed_from_step"] == saved_at


# --- start-up: one schema, one line ------------------------------------------------------------


@pytest.mark.timeout(300)
def test_workers_started_together_on_an_empty_database(server: Server) -> None:
    readers = [
        subprocess.Popen(
            [sys.executable, "-m", "sweeper", "show", "nothing-here"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SWEEPER_STORAGE": server.url},
        )
        for _ in range(3)
    ]
    for reader in readers:
        out, err = reader.communicate(timeout=240)
        assert reader.returncode == 2, out + err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert "no study named 'nothing-here'" in err and "studies there: none" in err
    # The readers created nothing.
    assert server.sql("SELECT to_regclass('studies') IS NULL") == [(True,)]

    creators = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from sweeper.runtime.storage import open_storage; "
                "open_storage(sys.argv[1]).engine.dispose()",
                server.url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    for creator in creators:
        out, _ = creator.communicate(timeout=240)
        assert creator.returncode == 0, out
    assert server.sql("SELECT count(*) FROM alembic_version") == [(1,)]
    assert server.sql("SELECT count(*) FROM version_info") == [(1,)]


@pytest.mark.timeout(120)
def test_a_reader_of_a_new_sqlite_database_waits_for_its_creator_and_creates_nothing(
    tmp_path: Path,
) -> None:
    """A worker resolving its study (or `show`) opens the storage read-only while another
    worker creates the tables: it waits for the schema lock, then finds no study and creates
    nothing. (Before, it stamped Optuna's versions beside the creator: UNIQUE constraint
    failed on alembic_version, one worker out of two starting together.)"""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    (tmp_path / "study.db").touch()  # the file exists, as a creator's first step leaves it
    creator_lock = open_lock(url, "schema")
    creator_lock.acquire()
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            open_storage(url, heartbeat=False, create=False).engine.dispose()
            outcome.append(None)
        except NoStudiesError as error:
            outcome.append(error)

    reader = threading.Thread(target=read)
    try:
        reader.start()
        reader.join(2.0)
        assert reader.is_alive() and not outcome  # waiting for the creator
    finally:
        creator_lock.close()
    reader.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], NoStudiesError), outcome
    assert "holds no study yet" in str(outcome[0])
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            assert sqlalchemy.inspect(connection).get_table_names() == []
    finally:
        engine.dispose()


@pytest.mark.timeout(120)
def test_a_database_down_at_start_up_still_fails_at_once(server: Server) -> None:
    server.stop()
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"cannot be reached: OperationalError: .*Check the"):
        open_storage(server.url, workers=WorkersConfig(storage_outage_seconds=600))
    with pytest.raises(StorageError, match="cannot be reached"):
        check_reachable(server.url, WorkersConfig(storage_outage_seconds=600))
    # Not the outage limit: start-up is not ridden out (a generous bound, not a benchmark).
    assert time.monotonic() - started < 60


@pytest.mark.timeout(300)
def test_no_free_connection_is_waited_for_past_the_outage_limit(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server.sql("ALTER SYSTEM SET max_connections = 6", admin=True)
    server.sql("ALTER SYSTEM SET superuser_reserved_connections = 0", admin=True)
    server.stop()
    server.start()
    engine = sqlalchemy.create_engine(server.url, poolclass=sqlalchemy.pool.NullPool)
    held = []
    try:
        while True:  # take every connection the server has left
            try:
                held.append(engine.connect())
            except sqlalchemy.exc.OperationalError as exc:
                assert classify(exc) == "too many clients"
                break
        # A worker starting now waits, and joins as soon as a connection frees up.
        releaser = threading.Timer(2.0, lambda: held.pop().close())
        releaser.start()
        check_reachable(server.url, WorkersConfig(storage_outage_seconds=60))
        releaser.join()
        assert "has no free connection since" in capsys.readouterr().out

        # Full again, for longer than the outage limit: a full server is up, so the worker
        # waits on past workers.storage_outage_seconds and joins when a connection frees up.
        monkeypatch.setattr(outage, "STILL_WAITING_SECONDS", 1.0)
        held.append(engine.connect())
        releaser = threading.Timer(4.0, lambda: held.pop().close())
        releaser.start()
        waited = time.monotonic()
        check_reachable(server.url, WorkersConfig(storage_outage_seconds=1))
        releaser.join()
        assert time.monotonic() - waited >= 3.5
        out = capsys.readouterr().out
        assert "has no free connection since" in out and "not an outage" in out
        assert "still no free connection" in out and "max_connections" in out

        # Queued past the limit, then the server restarts (which frees every connection): the
        # outage is the restart's few seconds, not the queueing before it, so the worker joins.
        monkeypatch.setattr(outage, "MAX_RETRY_SECONDS", 0.5)  # it tries while the server is down
        held.append(engine.connect())

        def restart() -> None:
            server.stop()
            time.sleep(1.5)
            server.start()

        restarter = threading.Timer(8.0, restart)
        restarter.start()
        check_reachable(server.url, WorkersConfig(storage_outage_seconds=6))
        restarter.join()
        out = capsys.readouterr().out
        assert "has no free connection since" in out and "cannot be reached since" in out
    finally:
        for connection in held:
            connection.close()
        engine.dispose()
