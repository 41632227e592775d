"""The Optuna RDB storage: SQLite by default, PostgreSQL for several machines.

:func:`open_storage` is the entry point. It fails within seconds with a clear message when
the database cannot be reached, never prints a URL's password, turns on heartbeats so a
trial whose worker died is retried with the same parameters, and sets SQLite up (WAL,
busy timeout) so a few local workers can share one file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Protocol

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from sweeper.credentials import drop_secret_query
from sweeper.errors import StorageError
from sweeper.settings.config import WorkersConfig

CONNECT_TIMEOUT_SECONDS = 5
SQLITE_BUSY_TIMEOUT_SECONDS = 60


class StorageLock(Protocol):
    def acquire(self) -> None: ...
    def release(self) -> None: ...
    def close(self) -> None: ...


class _PostgresAdvisoryLock:
    """A session-level advisory lock: freed by the server if the worker dies holding it."""

    def __init__(self, url: str, key: int):
        self._engine = sqlalchemy.create_engine(
            url, poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": 5}
        )
        try:
            self._connection = self._engine.connect()
        except sqlalchemy.exc.SQLAlchemyError as exc:
            self._engine.dispose()
            raise StorageError(
                f"storage={redact(url)!r} cannot be reached: {exc.__class__.__name__}: "
                f"{_first_line(exc)}. Check the host, port, database name and credentials"
            ) from None
        self._key = key
        self._held = False

    def acquire(self) -> None:
        try:
            self._connection.exec_driver_sql(f"SELECT pg_advisory_lock({self._key})")
        except sqlalchemy.exc.OperationalError:
            # The connection sat idle through a long trial and was dropped (a server
            # restart, a firewall's idle timeout): a lock on a fresh one is as good.
            self._connection.invalidate()
            self._connection = self._engine.connect()
            self._connection.exec_driver_sql(f"SELECT pg_advisory_lock({self._key})")
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._connection.exec_driver_sql(f"SELECT pg_advisory_unlock({self._key})")

    def close(self) -> None:
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
            self.release()
            self._connection.close()
        self._engine.dispose()


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


def open_lock(storage_url: str, name: str) -> StorageLock:
    """A lock every process using ``storage_url`` shares, named ``name``; a worker that dies
    holding it releases it (the server ends its session, the kernel closes its file)."""
    backend = make_url(storage_url).get_backend_name()
    if backend == "postgresql":
        digest = hashlib.blake2b(f"sweeper/{name}".encode(), digest_size=8).digest()
        return _PostgresAdvisoryLock(storage_url, int.from_bytes(digest, "big", signed=True))
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
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS}}
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


def retry_callback(workers: WorkersConfig) -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Re-enqueues a dead worker's trial with the same params and its reported values, so
    the retry resumes from the trial's last checkpoint and its curve continues."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=workers.max_retries, inherit_intermediate_values=True
        )


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


def check_reachable(url: str) -> None:
    """Fail now, with the reason, when the storage cannot be used; write nothing.

    A SQLite file that does not exist yet only needs a directory it can be created in; a
    server is connected to and asked ``select 1``.
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
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("select 1")
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StorageError(
            f"storage={shown!r} cannot be reached: {exc.__class__.__name__}: {_first_line(exc)}. "
            f"Check the host, port, database name and credentials"
        ) from None
    finally:
        engine.dispose()


def open_storage(
    url: str,
    heartbeat: bool = True,
    create: bool = True,
    workers: WorkersConfig | None = None,
) -> optuna.storages.RDBStorage:
    """An RDBStorage for ``url``, with heartbeats and a retry of stale trials when asked.

    With ``create=False`` a SQLite file that does not exist yet is an error instead of being
    created, so read-only commands (show, best, report) never leave empty databases around.
    """
    shown = _parsed_or_error(url)
    path = sqlite_path(url)
    if path is not None:
        if not create and not path.exists():
            raise StorageError(
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
        # Workers starting together on a new database would all create its tables; one does.
        schema_lock = open_lock(url, "schema") if create else _ProcessLock()
        try:
            schema_lock.acquire()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), **options)
        finally:
            schema_lock.close()
    except ModuleNotFoundError as exc:
        raise StorageError(
            f"storage={shown!r} needs the Python package {exc.name!r}; pip install it"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise StorageError(
            f"storage={shown!r} cannot be reached: {exc.__class__.__name__}: {_first_line(exc)}. "
            f"Check the host, port, database name and credentials"
        ) from None


def _first_line(exc: BaseException) -> str:
    """The driver's own message without the SQL echo and doc links SQLAlchemy appends,
    and with any password it might quote removed."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
