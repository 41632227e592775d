"""The Optuna RDB storage: SQLite by default, PostgreSQL for several machines.

:func:`open_storage` is the entry point. It fails within seconds with a clear message when
the database cannot be reached, never prints a URL's password, turns on heartbeats so a
trial whose worker died is retried with the same parameters, and sets SQLite up (WAL,
busy timeout) so a few local workers can share one file.

On a server a worker keeps a connection budget (:class:`_OneConnectionPool`): one connection
at most, shared by a burst of calls and closed once idle for ``CONNECTION_IDLE_SECONDS``;
none while it trains, waits for work or waits for a lock (:class:`_PostgresAdvisoryLock`
tries, backs off, and holds nothing in between). The trial budget is claimed in the
database, in the transaction that makes a trial RUNNING (:meth:`ResilientRDBStorage._claim`),
so no lock outlives one transaction.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import fcntl
import hashlib
import json
import os
import random
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import optuna
import sqlalchemy
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from sweeper.credentials import drop_secret_query
from sweeper.errors import StorageError
from sweeper.runtime.outage import MAX_RETRY_SECONDS, StorageHealth, classify, driver_message
from sweeper.runtime.queries import (
    ParamFilter,
    best_up_to_step,
    failed_since_finished,
    state_counts,
    values_at_step,
)
from sweeper.settings.config import WorkersConfig

T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 5
SQLITE_BUSY_TIMEOUT_SECONDS = 60
# A worker waiting for a lock another holds tries again after this long, doubling up to the
# cap, each wait shortened by a random share so that waiting workers spread out.
LOCK_FIRST_WAIT_SECONDS = 0.05
LOCK_MAX_WAIT_SECONDS = 2.0


class StorageLock(Protocol):
    def acquire(self) -> None: ...
    def release(self) -> None: ...
    def close(self) -> None: ...


class _PostgresAdvisoryLock:
    """A session-level advisory lock, taken with ``pg_try_advisory_lock``: a worker that waits
    for it holds no connection between its tries (jittered backoff from
    ``LOCK_FIRST_WAIT_SECONDS`` to ``LOCK_MAX_WAIT_SECONDS``), and holds one only while the
    lock is its own. The server frees the lock if the worker dies holding it.

    Connection failures are retried as ``health`` says (a started worker rides out an
    outage); a connection the server dropped while the lock was held freed the lock with it."""

    def __init__(self, url: str, key: int, health: StorageHealth):
        self._engine = sqlalchemy.create_engine(
            url,
            poolclass=sqlalchemy.pool.NullPool,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        )
        self._health = health
        self._key = key
        self._connection: sqlalchemy.Connection | None = None

    def _try_once(self) -> bool:
        connection = self._engine.connect()
        try:
            taken = connection.exec_driver_sql(f"SELECT pg_try_advisory_lock({self._key})").scalar()
        except BaseException:
            connection.invalidate()
            connection.close()
            raise
        if taken:
            self._connection = connection
            return True
        connection.close()  # no connection is held between tries
        return False

    def acquire(self) -> None:
        wait = LOCK_FIRST_WAIT_SECONDS
        try:
            while not self._health.call(self._try_once, "taking the study's lock"):
                time.sleep(wait * random.uniform(0.5, 1.0))
                wait = min(wait * 2, LOCK_MAX_WAIT_SECONDS)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise _unreachable(self._health.url, exc) from None

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({self._key})")
            connection.close()
        except sqlalchemy.exc.SQLAlchemyError:
            # The connection is gone, and the server freed the lock with it.
            connection.invalidate()
            connection.close()

    def close(self) -> None:
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
            self.release()
        self._engine.dispose()


# A heartbeat refused a connection first tries again after up to this long, then doubling.
HEARTBEAT_FIRST_RETRY_SECONDS = 1.0

# A worker's connection is closed once it has gone this long without a call: calls in quick
# succession (a trial start, a report and its pruning, a heartbeat) share one, and a worker
# training, waiting, backing off or computing (the sampler's arithmetic) holds none.
CONNECTION_IDLE_SECONDS = 0.05


class _IdleCloser:
    """One daemon thread per process that closes connections idle past their deadline."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._due: dict[_OneConnectionPool, float] = {}
        self._thread: threading.Thread | None = None

    def schedule(self, pool: _OneConnectionPool, deadline: float) -> None:
        with self._wake:
            self._due[pool] = deadline
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sweeper-idle-connections", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._due:
                    self._wake.wait()
                now = time.monotonic()
                due = [pool for pool, deadline in self._due.items() if deadline <= now]
                for pool in due:
                    del self._due[pool]
                if not due:
                    self._wake.wait(min(self._due.values()) - now)
                    continue
            for pool in due:
                pool.close_idle()


_IDLE_CLOSER = _IdleCloser()


class _OneConnectionPool(sqlalchemy.pool.NullPool):
    """A worker's connection budget on a database server: one connection at most, closed
    once it has been idle for ``CONNECTION_IDLE_SECONDS``.

    Optuna's main thread and its heartbeat thread take turns (a heartbeat waits for a call
    in flight, which takes milliseconds). The connection a call returns is kept for the next
    one, so a burst of calls (a trial start, a report) shares it, and is closed by a
    process-wide thread once no call came for ``CONNECTION_IDLE_SECONDS``: a worker
    training, waiting for work or backing off from a lock holds none between its bursts
    (docs/benchmarks/scale.md measures what that costs and saves). A thread that asks again
    while it holds the connection (a nested call) is let through rather than deadlocked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turn = threading.Condition()
        self._holder: int | None = None
        self._depth = 0
        self._kept: Any = None  # the open connection's record, between calls

    def _do_get(self) -> Any:
        me = threading.get_ident()
        with self._turn:
            while self._holder not in (None, me):
                self._turn.wait()
            self._holder = me
            self._depth += 1
            kept, self._kept = self._kept, None
        if kept is not None:
            return kept
        try:
            return super()._do_get()
        except BaseException:
            self._give_turn()
            raise

    def _do_return_conn(self, record: Any) -> None:
        try:
            with self._turn:
                if self._kept is None and record.dbapi_connection is not None:
                    self._kept = record
                    _IDLE_CLOSER.schedule(self, time.monotonic() + CONNECTION_IDLE_SECONDS)
                    return
            super()._do_return_conn(record)
        finally:
            self._give_turn()

    def _give_turn(self) -> None:
        with self._turn:
            self._depth = max(0, self._depth - 1)
            if self._depth == 0:
                self._holder = None
                self._turn.notify()

    def close_idle(self) -> None:
        """Close the kept connection unless a call took it since (the idle closer's call)."""
        with self._turn:
            kept, self._kept = self._kept, None
        if kept is not None:
            with contextlib.suppress(Exception):
                kept.close()

    def dispose(self) -> None:
        self.close_idle()


class _FileLock:
    """``flock`` on a file beside the SQLite database: the kernel frees it if we die."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a+")
        self._held = False

    def acquire(self) -> None:
        fcntl.flock(self._file, fcntl.LOCK_EX)
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            fcntl.flock(self._file, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        self._file.close()


class _ProcessLock:
    """For storages with no cross-process lock here (MySQL, in-memory SQLite): one worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self) -> None:
        self._lock.acquire()

    def release(self) -> None:
        if self._lock.locked():
            self._lock.release()

    def close(self) -> None:
        self.release()


def open_lock(storage_url: str, name: str, health: StorageHealth | None = None) -> StorageLock:
    """A lock every process using ``storage_url`` shares, named ``name``; a worker that dies
    holding it releases it (the server ends its session, the kernel closes its file).
    ``health`` (the storage's) decides which connection failures it waits out."""
    backend = make_url(storage_url).get_backend_name()
    if backend == "postgresql":
        digest = hashlib.blake2b(f"sweeper/{name}".encode(), digest_size=8).digest()
        return _PostgresAdvisoryLock(
            storage_url,
            int.from_bytes(digest, "big", signed=True),
            health or _storage_health_for(storage_url),
        )
    database = sqlite_path(storage_url)
    if database is not None:
        return _FileLock(database.with_name(f"{database.name}.{name.replace('/', '.')}.lock"))
    return _ProcessLock()


def redact(url: str) -> str:
    """The URL with its password replaced by ***, for logs and messages."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable storage URL>"
    return drop_secret_query(shown, replacement="***")  # libpq's ?password= too


def _engine_kwargs(url: str) -> dict[str, Any]:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}}
    if backend == "postgresql":
        return {
            "poolclass": _OneConnectionPool,
            "connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        }
    if backend == "mysql":
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS}}
    return {"pool_pre_ping": True}


def _enable_sqlite_wal(url: str) -> None:
    """WAL lets readers (the dashboard, other workers) run beside a writer; the setting
    sticks to the database file, so it is set once, before Optuna opens it."""
    engine = sqlalchemy.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    finally:
        engine.dispose()


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if (
        parsed.get_backend_name() != "sqlite"
        or not parsed.database
        or parsed.database == ":memory:"
    ):
        return None
    return Path(parsed.database)


class _RetryOnce(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a failed trial, done once however often it is asked: two workers
    that fail the same stale trial, or a retried write whose first try did land (the reply
    was lost), must not enqueue it twice. Optuna lists a retry's ancestors in
    ``retry_history``."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        for other in study.get_trials(deepcopy=False):
            if trial.number in other.system_attrs.get(RETRY_HISTORY_SYSTEM_ATTR, ()):
                return
        super().__call__(study, trial)


def retry_callback(workers: WorkersConfig) -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Re-enqueues a dead worker's trial with the same params and its reported values, so
    the retry resumes from the trial's last checkpoint and its curve continues."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _RetryOnce(max_retry=workers.max_retries, inherit_intermediate_values=True)


# Optuna's RetryHeartbeatStaleTrialCallback lists a retry's ancestors (trial numbers) here.
RETRY_HISTORY_SYSTEM_ATTR = "retry_history"
# Set on every trial this storage creates: a creation retried after a lost reply finds the
# trial its first try made instead of making a second (an orphan RUNNING trial).
CREATION_ID_SYSTEM_ATTR = "sweeper:creation_id"

# The storage calls a worker makes (through Optuna's _CachedStorage, and its own), each
# retried through an outage by ResilientRDBStorage. Writes here are idempotent in Optuna
# (upserts, duplicates ignored) or made so below (trial creation, state changes).
_RETRIED_CALLS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "_set_trial_param",
    "get_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "_get_trials",
    "_get_best_trial_id",
)


# Trials that used up budget. Failed trials do not: the heartbeat retries them.
BUDGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class TrialBudget:
    """What a worker may start in study ``study_id``: a trial while fewer than ``n_trials``
    are finished or running (None: no limit), or with ``queue_only`` only enqueued ones."""

    study_id: int
    n_trials: int | None
    queue_only: bool = False


class BudgetTaken(Exception):
    """A claim found no room: the budget is taken by finished and running trials, or (queue
    only) a new trial was asked for. The worker counts again and waits or ends."""

    def __init__(self, finished: int, running: int, waiting: int):
        super().__init__(f"{finished} finished, {running} running, {waiting} waiting")
        self.finished, self.running, self.waiting = finished, running, waiting


class ResilientRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage, riding out a database that goes away (sweeper.runtime.outage).

    Why a subclass: Optuna turns every SQLAlchemy error into ``StorageInternalError`` inside
    each method, and its studies reach the storage only through these methods, so retrying
    here covers sampling, reports, the pruner, tell, heartbeats and attributes alike, with
    the driver's error still in reach (the cause) to tell an outage from a bad write.

    - Every call in ``_RETRIED_CALLS`` is retried through ``health`` (a started worker rides
      an outage out; before, only a lack of free connections is waited for). A failure that
      is no outage is one line naming the database.
    - ``record_heartbeat`` never raises: Optuna's heartbeat thread would end for good.
      Refused for want of a free connection, it tries again (backoff, jitter) for up to
      half its interval, until the objective returns (``end_heartbeat``): a full server is
      queued for, and a live worker whose one try per beat is refused four times in a row
      would be judged dead (the 1,000-worker scale run at da0ee06 failed 2,133 trials as
      stale and ran 2,613 for a budget of 1,500).
    - ``_get_stale_trial_ids`` finds none until this worker has seen the database up for a
      full grace period: after an outage every heartbeat is old, and the live workers need
      a heartbeat interval to beat again. It also finds RUNNING trials that never had a
      heartbeat (a claim whose reply was lost), once they are older than the grace period.
    - A retried trial creation or state change checks what its lost first try did.
    """

    def __init__(self, url: str, health: StorageHealth, **options: Any) -> None:
        self.health = health
        # Set by the worker loop (sweeper.runtime.workers.run_trials): what it may start.
        self.budget: TrialBudget | None = None
        # How long each claim held the study's turn, in seconds (the scale benchmark reads it).
        self.claim_seconds: list[float] = []
        self._claim_started: float | None = None
        # On SQLite, claims take turns through a file lock beside the database, opened at
        # the first claim (a read-only command leaves no file behind).
        database = sqlite_path(url)
        self._claim_lock_path = (
            database.with_name(f"{database.name}.claims.lock") if database is not None else None
        )
        self._claim_lock: _FileLock | None = None
        # Set when a trial's objective has returned: its heartbeat stops waiting for a slot.
        self._heartbeats_ended: dict[int, threading.Event] = {}
        super().__init__(url, **options)

    def _call(self, name: str, attempt: Callable[[], T]) -> T:
        try:
            return self.health.call(attempt, f"calling {name.lstrip('_')}")
        except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as exc:
            raise StorageError(
                f"storage={self.health.url!r}: {name.lstrip('_')} failed: {driver_message(exc)}"
            ) from exc

    # --- heartbeats and staleness -------------------------------------------------------------

    def record_heartbeat(self, trial_id: int) -> None:
        ended = self._heartbeats_ended.setdefault(trial_id, threading.Event())
        deadline = time.monotonic() + (self.heartbeat_interval or 0) / 2
        delay = HEARTBEAT_FIRST_RETRY_SECONDS
        while True:
            try:
                super().record_heartbeat(trial_id)
            except Exception as error:  # never let the heartbeat thread die
                failure = classify(error)
                if failure is not None:
                    self.health.failed(error, failure)
                pause = delay * random.uniform(0.5, 1.0)
                if (
                    failure != "too many clients"
                    or time.monotonic() + pause > deadline
                    or ended.wait(pause)
                ):
                    return
                delay = min(2 * delay, MAX_RETRY_SECONDS)
                continue
            self.health.succeeded()
            return

    def end_heartbeat(self, trial_id: int) -> None:
        """The trial's objective has returned: a heartbeat queued for a connection stops
        waiting (Optuna joins the heartbeat thread next)."""
        self._heartbeats_ended.pop(trial_id, threading.Event()).set()

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        if self.health.seconds_up < grace:
            return []
        stale = self._call(
            "_get_stale_trial_ids",
            lambda: super(ResilientRDBStorage, self)._get_stale_trial_ids(study_id),
        )
        return stale + [
            trial_id
            for trial_id in self._call("_get_stale_trial_ids", lambda: self._orphans(study_id))
            if trial_id not in stale
        ]

    def _orphans(self, study_id: int) -> list[int]:
        grace = datetime.timedelta(seconds=self.grace_period or 2 * (self.heartbeat_interval or 0))
        with _create_scoped_session(self.scoped_session, True) as session:
            trials = (
                session.query(models.TrialModel)
                .outerjoin(
                    models.TrialHeartbeatModel,
                    models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id,
                )
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialModel.state == TrialState.RUNNING)
                .filter(models.TrialHeartbeatModel.trial_heartbeat_id.is_(None))
                .all()
            )
            started = [(trial.trial_id, trial.datetime_start) for trial in trials]
        # datetime_start is the creating worker's local time, as Optuna writes it.
        now = datetime.datetime.now()
        return [
            trial_id for trial_id, start in started if start is not None and now - start > grace
        ]

    # --- writes a lost reply must not repeat ----------------------------------------------------

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        token = uuid.uuid4().hex
        if template_trial is None:
            template = FrozenTrial(
                number=-1,
                state=TrialState.RUNNING,
                value=None,
                values=None,
                datetime_start=datetime.datetime.now(),
                datetime_complete=None,
                params={},
                distributions={},
                user_attrs={},
                system_attrs={},
                intermediate_values={},
                trial_id=-1,
            )
        else:
            template = copy.deepcopy(template_trial)
        # A retry's template carries its failed trial's id: each creation gets its own.
        template.system_attrs = {**template.system_attrs, CREATION_ID_SYSTEM_ATTR: token}
        tries = 0

        def attempt() -> FrozenTrial:
            nonlocal tries
            tries += 1
            if tries > 1:
                made = self._trial_with_creation_id(token)
                if made is not None:
                    return super(ResilientRDBStorage, self).get_trial(made)
            return self._create_trial_once(study_id, template)

        return self._call("_create_new_trial", attempt)

    def _create_trial_once(self, study_id: int, template: FrozenTrial) -> FrozenTrial:
        """One try of Optuna's trial creation (its own loop retries a failed commit blindly);
        a new RUNNING trial of the budgeted study is a claim (:meth:`_claim`)."""
        claim = template.state == TrialState.RUNNING and self._budgeted(study_id)
        with self._claim_turn(claim), _create_scoped_session(self.scoped_session) as session:
            # Locks the study row: trial numbers are counted, not drawn from a sequence, and
            # claims on the study take turns for as long as this transaction lasts.
            models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
            if claim:
                self._claim(session, study_id, new_trial=True)
            row = self._get_prepared_new_trial(study_id, template, session)
            frozen = copy.deepcopy(template)
            frozen.number = row.number
            frozen.datetime_start = row.datetime_start
            frozen._trial_id = row.trial_id
        self._claimed(claim)
        return frozen

    # --- the budget, claimed in the database ----------------------------------------------------

    def _budgeted(self, study_id: int) -> bool:
        return self.budget is not None and self.budget.study_id == study_id

    @contextlib.contextmanager
    def _claim_turn(self, claim: bool) -> Iterator[None]:
        """Around a claim's transaction: on SQLite the file lock that makes claims take
        turns (PostgreSQL's study row lock, taken in the transaction, does it there)."""
        self._claim_started = None
        if not claim or self._claim_lock_path is None:
            yield
            return
        if self._claim_lock is None:
            self._claim_lock = _FileLock(self._claim_lock_path)
        self._claim_lock.acquire()
        self._claim_started = time.monotonic()
        try:
            yield
        finally:
            self._claim_lock.release()

    def _claim(self, session: Any, study_id: int, new_trial: bool) -> None:
        """Under the study row lock: raise :class:`BudgetTaken` when the budget has no room
        for one more running trial (or, queue-only, when a new trial is asked for)."""
        if self._claim_started is None:
            self._claim_started = time.monotonic()
        budget = self.budget
        assert budget is not None  # only called for the budgeted study
        counts = state_counts(session, study_id)
        finished = sum(counts.get(state, 0) for state in BUDGET_STATES)
        running = counts.get(TrialState.RUNNING, 0)
        if budget.queue_only and new_trial:
            raise BudgetTaken(finished, running, counts.get(TrialState.WAITING, 0))
        if budget.n_trials is not None and finished + running >= budget.n_trials:
            raise BudgetTaken(finished, running, counts.get(TrialState.WAITING, 0))

    def _claimed(self, claim: bool) -> None:
        """Record how long the claim held the study's turn (until its commit)."""
        if claim and self._claim_started is not None:
            self.claim_seconds.append(time.monotonic() - self._claim_started)

    def _claim_waiting_once(self, trial_id: int) -> bool:
        """An enqueued (WAITING) trial of the budgeted study set RUNNING, if there is room:
        Optuna's state change with the budget checked under the study row lock."""
        assert self.budget is not None
        study_id = self.budget.study_id
        with self._claim_turn(True), _create_scoped_session(self.scoped_session) as session:
            models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
            if trial.study_id != study_id or trial.state != TrialState.WAITING:
                return False
            self._claim(session, study_id, new_trial=False)
            trial.state = TrialState.RUNNING
            trial.datetime_start = datetime.datetime.now()
        self._claimed(True)
        return True

    def _trial_with_creation_id(self, token: str) -> int | None:
        with _create_scoped_session(self.scoped_session) as session:
            row = (
                session.query(models.TrialSystemAttributeModel.trial_id)
                .filter(models.TrialSystemAttributeModel.key == CREATION_ID_SYSTEM_ATTR)
                .filter(models.TrialSystemAttributeModel.value_json == json.dumps(token))
                .first()
            )
        return None if row is None or row[0] is None else int(row[0])

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        tries = 0
        claim = state == TrialState.RUNNING and self.budget is not None

        def attempt() -> bool:
            nonlocal tries
            tries += 1
            if tries > 1 and state != TrialState.WAITING:
                current = super(ResilientRDBStorage, self).get_trial(trial_id)
                if state.is_finished() and current.state == state:
                    return True  # the first try landed; its reply was lost
                if state == TrialState.RUNNING and current.state == TrialState.RUNNING:
                    # Claimed by us or by another worker: not ours to run. Were it ours, it
                    # has no heartbeat and is retried once older than the grace period.
                    return False
            if claim:
                return self._claim_waiting_once(trial_id)
            return super(ResilientRDBStorage, self).set_trial_state_values(trial_id, state, values)

        return self._call("set_trial_state_values", attempt)

    # --- reads of what a decision needs (sweeper.runtime.queries) -------------------------------

    def _read(self, name: str, query: Callable[[Any], T]) -> T:
        def attempt() -> T:
            with _create_scoped_session(self.scoped_session) as session:
                return query(session)

        return self._call(name, attempt)

    def state_counts(self, study_id: int) -> dict[TrialState, int]:
        """Trials of the study in each state, counted in the database."""
        return self._read("state_counts", lambda session: state_counts(session, study_id))

    def failed_since_finished(self, study_id: int) -> list[int]:
        """Ids of the FAIL trials since the study's last finished trial, oldest first."""
        return self._read(
            "failed_since_finished", lambda session: failed_since_finished(session, study_id)
        )

    def values_at_step(
        self,
        study_id: int,
        step: int,
        states: tuple[TrialState, ...],
        same: ParamFilter | None = None,
    ) -> dict[int, tuple[TrialState, float | None]]:
        """Trial number -> (state, value at ``step``) of the study's trials in ``states``
        (and with parameter value ``same``)."""
        return self._read(
            "values_at_step",
            lambda session: values_at_step(session, study_id, step, states, same),
        )

    def best_up_to_step(
        self,
        study_id: int,
        step: int,
        states: tuple[TrialState, ...],
        maximize: bool,
        same: ParamFilter | None = None,
    ) -> dict[int, tuple[TrialState, float | None]]:
        """Trial number -> (state, best finite value up to ``step``) of the study's trials in
        ``states`` that reported at ``step`` (and with parameter value ``same``)."""
        return self._read(
            "best_up_to_step",
            lambda session: best_up_to_step(session, study_id, step, states, maximize, same),
        )


def _retried(name: str) -> Callable[..., Any]:
    method = getattr(optuna.storages.RDBStorage, name)

    def call(self: ResilientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, lambda: method(self, *args, **kwargs))

    call.__name__ = name
    call.__doc__ = method.__doc__
    return call


for _name in _RETRIED_CALLS:
    setattr(ResilientRDBStorage, _name, _retried(_name))


def _storage_health_for(url: str, workers: WorkersConfig | None = None) -> StorageHealth:
    """A fresh view of the database at ``url``, with the outage limit of ``workers``."""
    limit = (workers or WorkersConfig()).storage_outage_seconds
    server = make_url(url).get_backend_name() != "sqlite"
    health = StorageHealth(url, redact(url), limit, retries=server)
    if not server:
        health.up_for_at_least(float("inf"))  # a file on this machine is never "down"
    return health


def _sweeper_storage(study: optuna.Study) -> ResilientRDBStorage | None:
    """The storage under a study's cache, when sweeper opened it (``open_storage``)."""
    storage = getattr(study._storage, "_backend", study._storage)
    return storage if isinstance(storage, ResilientRDBStorage) else None


def storage_health(study: optuna.Study) -> StorageHealth | None:
    """The health of a study's storage, when sweeper opened it (``open_storage``)."""
    storage = _sweeper_storage(study)
    return None if storage is None else storage.health


def end_heartbeat(study: optuna.Study, trial_id: int) -> None:
    """A trial's objective has returned (:meth:`ResilientRDBStorage.end_heartbeat`)."""
    storage = _sweeper_storage(study)
    if storage is not None:
        storage.end_heartbeat(trial_id)


def _parsed_or_error(url: str) -> str:
    """The URL as shown in messages (password hidden); a clear error when it is no URL."""
    shown = redact(url)
    try:
        make_url(url)
    except ArgumentError:
        raise StorageError(
            f"storage={shown!r} is not a database URL; expected e.g. sqlite:///runs/imdb/study.db "
            f"or postgresql+psycopg://user:password@host:5432/db"
        ) from None
    return shown


def check_reachable(url: str, workers: WorkersConfig | None = None) -> None:
    """Fail now, with the reason, when the storage cannot be used; write nothing.

    A SQLite file that does not exist yet only needs a directory it can be created in; a
    server is connected to and asked ``select 1`` (a server with no free connection is
    waited for, up to ``workers.storage_outage_seconds``; anything else fails at once).
    """
    shown = _parsed_or_error(url)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        ancestor = path.absolute().parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            raise StorageError(
                f"storage={shown!r}: the SQLite file cannot be created under {str(ancestor)!r} "
                "(not a writable directory); pass --storage with a writable path"
            )
        return
    try:
        engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
    except ModuleNotFoundError as exc:
        raise StorageError(
            f"storage={shown!r} needs the Python package {exc.name!r}; pip install it"
        ) from None
    health = _storage_health_for(url, workers)

    def select_one() -> None:
        with engine.connect() as connection:
            connection.exec_driver_sql("select 1")

    try:
        health.call(select_one, "connecting")
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise _unreachable(shown, exc) from None
    finally:
        engine.dispose()


def _unreachable(shown: str, exc: BaseException) -> StorageError:
    return StorageError(
        f"storage={shown!r} cannot be reached: {exc.__class__.__name__}: {_first_line(exc)}. "
        f"Check the host, port, database name and credentials"
    )


def _has_optuna_schema(url: str, health: StorageHealth) -> bool:
    """Whether Optuna's tables are in the database (a new database has none)."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, **_connect_args(url))
    try:

        def inspect() -> bool:
            with engine.connect() as connection:
                return sqlalchemy.inspect(connection).has_table(models.StudyModel.__tablename__)

        return health.call(inspect, "reading the schema")
    finally:
        engine.dispose()


def _connect_args(url: str) -> dict[str, Any]:
    return {key: value for key, value in _engine_kwargs(url).items() if key == "connect_args"}


def _server_uptime_seconds(storage: optuna.storages.RDBStorage) -> float:
    """How long the PostgreSQL server has been up (0 for other servers, or if unknown)."""
    if storage.engine.dialect.name != "postgresql":
        return 0.0
    with (
        contextlib.suppress(sqlalchemy.exc.SQLAlchemyError),
        storage.engine.connect() as connection,
    ):
        uptime = connection.exec_driver_sql(
            "SELECT EXTRACT(EPOCH FROM now() - pg_postmaster_start_time())"
        ).scalar()
        return float(uptime or 0.0)
    return 0.0


def _schema_complete(url: str, health: StorageHealth) -> bool:
    """Whether Optuna's tables are there with their versions stamped: a worker joining a
    study on a server then opens the storage without the schema lock (a thousand workers
    starting together do not queue for it)."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, **_connect_args(url))
    try:

        def inspect() -> bool:
            with engine.connect() as connection:
                tables = sqlalchemy.inspect(connection)
                stamps = ("version_info", "alembic_version")
                if not all(tables.has_table(name) for name in stamps):
                    return False
                return all(
                    connection.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar()
                    for name in stamps
                )

        return health.call(inspect, "reading the schema")
    finally:
        engine.dispose()


def _open_rdb_storage(
    url: str, shown: str, create: bool, health: StorageHealth, options: dict[str, Any]
) -> ResilientRDBStorage:
    server = make_url(url).get_backend_name() != "sqlite"

    def opened(skip_table_creation: bool) -> ResilientRDBStorage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return health.call(
                lambda: ResilientRDBStorage(
                    url,
                    health,
                    engine_kwargs=_engine_kwargs(url),
                    skip_table_creation=skip_table_creation,
                    **options,
                ),
                "opening the storage",
            )

    if server and _schema_complete(url, health):
        storage = opened(skip_table_creation=True)
    else:
        # Workers starting together on a new database would all create its tables and stamp
        # their versions; one does, under this lock, and the others find them. Readers take
        # it too: Optuna's RDBStorage stamps the versions even when it creates no table, so
        # a reader beside a creator would race it (on SQLite: UNIQUE constraint failed on
        # alembic_version), and a reader must find the schema whole or not at all.
        schema_lock = open_lock(url, "schema", health)
        try:
            schema_lock.acquire()
            has_schema = _has_optuna_schema(url, health)
            if not create and not has_schema:
                raise NoStudiesError(
                    f"storage={shown!r} holds no study yet (no Optuna tables); create one with "
                    "`sweeper create STUDY_FILE` or `sweeper sweep STUDY_FILE`"
                )
            storage = opened(skip_table_creation=server and has_schema)
        finally:
            schema_lock.close()
    health.up_for_at_least(_server_uptime_seconds(storage))
    return storage


class NoStudiesError(StorageError):
    """The database holds no Optuna tables yet: no study has been created in it."""


def open_storage(
    url: str,
    heartbeat: bool = True,
    create: bool = True,
    workers: WorkersConfig | None = None,
) -> ResilientRDBStorage:
    """An RDBStorage for ``url``, with heartbeats and a retry of stale trials when asked,
    that rides out a database that goes away once its worker has started
    (:class:`ResilientRDBStorage`).

    With ``create=False`` nothing is created: a SQLite file that does not exist yet, or a
    database with no Optuna tables yet, is :class:`NoStudiesError`, so read-only commands
    (show, best, report) never leave empty databases around. With ``create=True`` the
    tables are created under a lock, so workers starting together on a new database create
    them once.
    """
    shown = _parsed_or_error(url)
    path = sqlite_path(url)
    if path is not None:
        if not create and not path.exists():
            raise NoStudiesError(
                f"storage={shown!r}: no such SQLite file; run the sweep first or pass --storage"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            _enable_sqlite_wal(url)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise StorageError(
                f"storage={shown!r} cannot be opened: {exc.__class__.__name__}: {_first_line(exc)}"
            ) from None
    options: dict[str, Any] = {}
    if heartbeat:
        workers = workers or WorkersConfig()
        options = {
            "heartbeat_interval": workers.heartbeat_interval_seconds,
            "grace_period": workers.grace_period_seconds,
            "heartbeat_stale_trial_callback": retry_callback(workers),
        }
    try:
        return _open_rdb_storage(url, shown, create, _storage_health_for(url, workers), options)
    except ModuleNotFoundError as exc:
        raise StorageError(
            f"storage={shown!r} needs the Python package {exc.name!r}; pip install it"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, OSError) as exc:
        raise _unreachable(shown, exc) from None


@contextlib.contextmanager
def reading_storage(url: str) -> Iterator[ResilientRDBStorage | None]:
    """The storage at ``url`` for a short read that creates nothing: None when it holds no
    study yet (no such SQLite file, no Optuna tables); its connections closed afterwards, so
    the command that reads goes on without holding one. Unreachable: StorageError."""
    try:
        storage: ResilientRDBStorage | None = open_storage(url, heartbeat=False, create=False)
    except NoStudiesError:
        storage = None
    try:
        yield storage
    finally:
        if storage is not None:
            storage.engine.dispose()


def _first_line(exc: BaseException) -> str:
    """The driver's own message without the SQL echo and doc links SQLAlchemy appends."""
    return driver_message(exc)
