"""Riding out a study database that goes away: a restart, a failover, no free connection.

Everything a worker shares goes through one database, and databases restart. A started
worker (``StorageHealth.armed``, set by :func:`sweeper.runtime.workers.run_trials`) retries
every storage call that failed for want of a connection, with backoff and jitter, for up to
``workers.storage_outage_seconds``; past that it raises :class:`StorageOutageError` (exit
status 75) so the trial is retried later, elsewhere or by the restarted worker.

Which failures are worth waiting for is decided here, once (:func:`classify`): the driver's
connection errors (refused, reset, the server shutting down or starting up, a dropped
connection, a pool with no free connection, no free slot on the server), found anywhere in
the exception's chain (Optuna wraps them in ``StorageInternalError``). A wrong password or
database name is not: it fails at once, in one line. A command that has not started its
trials yet waits only for a free connection (``too many clients``): a database that cannot be
reached at start-up is an error within seconds, as before. A full server is not an outage:
it answers, and serves the workers it has, so a worker queued for a free connection waits
for one without the outage limit (saying so every ``STILL_WAITING_SECONDS``), as it would
queue for a GPU; the limit counts only time the server cannot be reached, since it last
answered (a refusal for want of a connection is an answer).

:class:`StorageHealth` is the one view a worker has of its database: whether it is down and
since when, whether the outage outlasted the limit, and for how long it has been up (no
trial is judged stale until the worker has seen the database up for a full grace period,
see :class:`sweeper.runtime.storage.ResilientRDBStorage`). It says once that the database
went away and once that it came back.
"""

from __future__ import annotations

import contextlib
import datetime
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal, TypeVar

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from sweeper.errors import StorageError, StorageOutageError

T = TypeVar("T")

# Waits between tries: doubling from the first, capped, each shortened by a random share
# (jitter) so workers that lost the database together do not come back in lockstep.
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 10.0
# A worker queued for a free connection says it still waits this often.
STILL_WAITING_SECONDS = 300.0

Failure = Literal["too many clients", "connection"]

# Words of the driver's message that mean the database was reached and said no: waiting
# would not help (a wrong password, database or role; pg_hba.conf refusing this host).
_PERMANENT_MARKERS = ("authentication", "does not exist", "pg_hba.conf", "permission denied")
# The server's max_connections, a role's CONNECTION LIMIT (a guard the how-to suggests), and
# a listen queue full of connection attempts (EAGAIN on a Unix socket: a thousand workers
# connecting at once): all say "no free connection now", which waiting fixes.
_TOO_MANY_CLIENTS_MARKERS = (
    "too many clients",
    "remaining connection slots are reserved",
    "too many connections for role",
    "resource temporarily unavailable",
)
_TOO_MANY_CLIENTS_SQLSTATE = "53300"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, its causes and contexts, and each SQLAlchemy error's driver error."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        original = getattr(current, "orig", None)
        pending += [
            current.__cause__,
            current.__context__,
            original if isinstance(original, BaseException) else None,
        ]


def driver_message(error: BaseException) -> str:
    """The first line of the database driver's own message, else of ``error``'s."""
    for link in _chain(error):
        if isinstance(link, sqlalchemy.exc.DBAPIError) and link.orig is not None:
            lines = str(link.orig).strip().splitlines()
            return lines[0] if lines else type(link.orig).__name__
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def short_reason(error: BaseException) -> str:
    """What went wrong, in a few words: ``Connection refused``, ``sorry, too many clients
    already``, ``server closed the connection unexpectedly``."""
    message = driver_message(error)
    if "failed: " in message:  # libpq: 'connection to server at "h", port 5432 failed: ...'
        message = message.rsplit("failed: ", 1)[1]
    return message.removeprefix("FATAL:").strip() or type(error).__name__


def classify(error: BaseException) -> Failure | None:
    """``"too many clients"``, ``"connection"`` (worth waiting for), or None (not a
    connection failure: raise it)."""
    transient = False
    for link in _chain(error):
        text = str(getattr(link, "orig", None) or link).lower()
        if getattr(getattr(link, "orig", None), "sqlstate", None) == _TOO_MANY_CLIENTS_SQLSTATE:
            return "too many clients"
        if any(marker in text for marker in _TOO_MANY_CLIENTS_MARKERS):
            return "too many clients"
        if isinstance(
            link,
            sqlalchemy.exc.OperationalError
            | sqlalchemy.exc.InterfaceError
            | sqlalchemy.exc.DisconnectionError
            | sqlalchemy.exc.TimeoutError,
        ) or getattr(link, "connection_invalidated", False):
            if any(marker in text for marker in _PERMANENT_MARKERS):
                return None
            transient = True
    return "connection" if transient else None


def _database_host(url: str) -> str:
    """``host:port`` of a server URL (a Unix socket's directory for a local server)."""
    parsed = make_url(url)
    host = parsed.host or parsed.query.get("host") or "localhost"
    if isinstance(host, tuple):
        host = host[0]
    return f"{host}:{parsed.port}" if parsed.port else str(host)


class StorageUnavailable(Exception):
    """Raised by a storage call made with :meth:`StorageHealth.no_wait` while the database
    is down: the caller goes on without it (a report is queued, the pruner says go on)."""


class StorageHealth:
    """What a worker knows of its study database, shared by its threads.

    ``call`` runs one storage operation, retrying connection failures (all of them once
    ``armed``, only ``too many clients`` before) until ``limit_seconds`` of outage. The
    heartbeat thread reports its tries with ``succeeded``/``failed`` itself: it never waits.
    """

    def __init__(
        self,
        url: str,
        shown_url: str,
        limit_seconds: float,
        *,
        retries: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.url = shown_url
        self.host = _database_host(url) if retries else shown_url
        self.limit_seconds = limit_seconds
        # SQLite is a file on this machine: nothing to ride out, nothing to wait for.
        self.retries = retries
        self.armed = False
        self.outages = 0
        self._log = log or (lambda line: print(line, flush=True))
        self._lock = threading.Lock()
        # Down: since the first failed call (queued for a connection, or no answer at all).
        self._down_since: float | None = None
        # Unreachable: since the server last answered. Only this counts towards the limit: a
        # worker queued for a free connection for an hour that then meets a one-minute restart
        # has been out of reach for a minute (the 1,000-worker scale run at cd1c11b lost 577
        # workers to counting their queueing as outage).
        self._unreachable_since: float | None = None
        self._said_unreachable = False
        self._reason = ""
        self._up_since = time.monotonic()
        self._local = threading.local()

    # --- what the worker knows ---------------------------------------------------------------

    @property
    def down(self) -> bool:
        return self._down_since is not None

    @property
    def down_seconds(self) -> float:
        since = self._down_since
        return 0.0 if since is None else time.monotonic() - since

    @property
    def unreachable_seconds(self) -> float:
        """How long the server has not answered at all (0 while it answers, even "full")."""
        since = self._unreachable_since
        return 0.0 if since is None else time.monotonic() - since

    @property
    def exceeded(self) -> bool:
        """Unreachable for longer than the limit: time to save the checkpoint and leave (a
        server refusing for want of a free connection is up: that is waited out)."""
        return self.unreachable_seconds > self.limit_seconds

    @property
    def seconds_up(self) -> float:
        """How long this worker has seen the database up (0 while it is down)."""
        return 0.0 if self.down else time.monotonic() - self._up_since

    def up_for_at_least(self, seconds: float) -> None:
        """The server says it has been up this long (at first contact): a worker that starts
        beside a database up for hours need not wait a grace period to judge staleness."""
        with self._lock:
            if not self.down:
                self._up_since = min(self._up_since, time.monotonic() - max(0.0, seconds))

    # --- what happened -------------------------------------------------------------------------

    def succeeded(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            seconds = time.monotonic() - self._down_since
            self._down_since = None
            self._unreachable_since = None
            self._said_unreachable = False
            self._up_since = time.monotonic()
        self._log(f"[sweeper] the study database at {self.host} is back after {seconds:.0f} s")

    def failed(self, error: BaseException, failure: Failure) -> None:
        with self._lock:
            now = time.monotonic()
            self._reason = short_reason(error)
            if failure == "too many clients":
                self._unreachable_since = None  # it answered: the outage clock starts afresh
            elif self._unreachable_since is None:
                self._unreachable_since = now
            first = self._down_since is None
            if first:
                self._down_since = now
                self.outages += 1
            say_unreachable = failure == "connection" and not self._said_unreachable
            self._said_unreachable = self._said_unreachable or say_unreachable
            since = datetime.datetime.now().strftime("%H:%M:%S")
        # One line as the server stops answering, one as it is found full (once a down spell).
        limit = f"{self.limit_seconds:g} s (workers.storage_outage_seconds)"
        if say_unreachable:
            going_on = "training goes on, " if self.armed else ""
            self._log(
                f"[sweeper] the study database at {self.host} cannot be reached since {since} "
                f"({self._reason}); {going_on}retrying for up to {limit}"
            )
        elif first:
            self._log(
                f"[sweeper] the study database at {self.host} has no free connection since "
                f"{since} ({self._reason}); waiting for one (a full server is queued for, "
                "not an outage)"
            )

    def still_waiting(self) -> None:
        """One line while queued for a free connection: how long, and what would help."""
        self._log(
            f"[sweeper] still no free connection at {self.host} after {self.down_seconds:.0f} s "
            f"({self._reason}): its max_connections is taken; waiting on. Raise max_connections "
            "(or the role's CONNECTION LIMIT) or run fewer workers"
        )

    def outage_error(self, doing: str) -> StorageError:
        """The one-line error past the limit of an outage."""
        seconds = self.unreachable_seconds
        limit = f"workers.storage_outage_seconds={self.limit_seconds:g}"
        return StorageOutageError(
            f"storage={self.url!r} could not be reached for {seconds:.0f} s while {doing} "
            f"({self._reason}; {limit}): this worker stops and its trial is retried later "
            "from its checkpoint. Restart the worker once the database is back (Slurm and "
            "Kubernetes restart it), or raise workers.storage_outage_seconds"
        )

    # --- running a storage call ------------------------------------------------------------------

    @contextlib.contextmanager
    def no_wait(self) -> Iterator[None]:
        """Storage calls in this block try once and raise :class:`StorageUnavailable` on a
        connection failure (at once while the database is known to be down)."""
        previous = getattr(self._local, "no_wait", False)
        self._local.no_wait = True
        try:
            yield
        finally:
            self._local.no_wait = previous

    def call(self, attempt: Callable[[], T], doing: str) -> T:
        """``attempt()``, retried on connection failures as the class docstring says."""
        if getattr(self._local, "depth", 0):
            return attempt()  # a storage call inside one: the outer call retries
        no_wait = getattr(self._local, "no_wait", False)
        if no_wait and self.down:
            raise StorageUnavailable(self._reason)
        delay = FIRST_RETRY_SECONDS
        queued = False  # refused for want of a free connection: waiting, whatever comes next
        said_at = time.monotonic()
        while True:
            self._local.depth = 1
            try:
                result = attempt()
            except Exception as error:
                failure = classify(error) if self.retries else None
                queued = queued or failure == "too many clients"
                if failure is None or not (self.armed or queued):
                    raise
                self.failed(error, failure)
                if no_wait:
                    raise StorageUnavailable(self._reason) from None
                if self.exceeded:
                    raise self.outage_error(doing) from None
                if failure == "too many clients":
                    remaining = MAX_RETRY_SECONDS
                    if time.monotonic() - said_at >= STILL_WAITING_SECONDS:
                        said_at = time.monotonic()
                        self.still_waiting()
                else:
                    remaining = self.limit_seconds - self.unreachable_seconds
                time.sleep(max(0.05, min(delay, remaining + 0.1) * random.uniform(0.5, 1.0)))
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            finally:
                self._local.depth = 0
            self.succeeded()
            return result


class DeferredReports:
    """A trial's reports to Optuna, queued while the database is down.

    ``report`` queues the evaluation, writes every queued one in order when the database
    can be reached, and only then asks the pruner; while it cannot, the pruner's answer is
    "go on": pruning during an outage is deferred, not skipped (the trial is judged at its
    first report after it). ``flush`` writes what is left, waiting for the database as any
    storage call of a started worker does.
    """

    def __init__(self, trial: optuna.Trial, health: StorageHealth | None):
        self.trial = trial
        self.health = health
        self.pending: list[tuple[int, float]] = []

    def report(self, step: int, value: float) -> bool:
        """Queue ``value`` at ``step``; whether the trial should be pruned now."""
        self.pending.append((step, value))
        if self.health is None:
            self.flush()
            return self.trial.should_prune()
        try:
            with self.health.no_wait():
                self.flush()
                return self.trial.should_prune()
        except StorageUnavailable:
            return False

    def flush(self) -> None:
        while self.pending:
            step, value = self.pending[0]
            self.trial.report(value, step)
            self.pending.pop(0)
