"""sweeper.runtime.local_postgres: the embedded PostgreSQL that the tests fall back on and that
`make postgres-embedded` starts for local studies."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import sqlalchemy

from sweeper.runtime.local_postgres import socket_url
from sweeper.runtime.storage import redact


@pytest.mark.parametrize("directory", ["/tmp/pg", "/tmp/a dir+x/pg data", "/tmp/ü/%41"])
def test_socket_url_round_trips_the_directory_and_hides_the_password(directory: str) -> None:
    url = socket_url(Path(directory), "sweeper", "pa:ss@word", "sweeper")
    parsed = sqlalchemy.engine.make_url(url)
    assert parsed.query["host"] == directory and parsed.host is None
    assert (parsed.username, parsed.password, parsed.database) == (
        "sweeper",
        "pa:ss@word",
        "sweeper",
    )
    assert "pa:ss@word" not in redact(url) and "***" in redact(url)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sweeper.runtime.local_postgres", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.timeout(300)
@pytest.mark.postgres
def test_cli_starts_a_server_that_outlives_it_checks_the_password_and_stops() -> None:
    with tempfile.TemporaryDirectory(prefix="sweeper-local-postgres-") as directory:
        pgdata = str(Path(directory) / "pgdata")
        started = run_cli("start", "--pgdata", pgdata)
        try:
            assert started.returncode == 0, started.stderr
            url = started.stdout.strip()
            assert url.startswith("postgresql+psycopg://sweeper:sweeper@/sweeper?host=")
            assert len(started.stdout.splitlines()) == 1  # stdout is the URL alone
            again = run_cli("start", "--pgdata", pgdata)  # idempotent: the same server
            assert again.returncode == 0 and again.stdout.strip() == url, again.stderr

            engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
            wrong = sqlalchemy.create_engine(
                url.replace(":sweeper@", ":wrong@"), poolclass=sqlalchemy.pool.NullPool
            )
            try:
                with engine.connect() as connection:
                    assert connection.exec_driver_sql("select current_user").scalar() == "sweeper"
                with pytest.raises(sqlalchemy.exc.OperationalError, match="password"):
                    wrong.connect()
            finally:
                engine.dispose()
                wrong.dispose()
        finally:
            stopped = run_cli("stop", "--pgdata", pgdata)
        assert stopped.returncode == 0 and "stopped" in stopped.stderr, stopped.stderr
        assert "no server running" in run_cli("stop", "--pgdata", pgdata).stderr
