"""`sweeper dashboard`: optuna-dashboard on the study's storage, on loopback, found through
its HTTP API, then stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import optuna
import pytest

from sweeper.errors import DashboardError
from sweeper.views.dashboard import Dashboard
from tests.support.studies import FinishedStudy

URL_LINE = re.compile(r"open (http://127\.0\.0\.1:(\d+)/dashboard/studies/(\d+))")
START_TIMEOUT_S = 60


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.load(response)


@contextmanager
def dashboard_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`sweeper dashboard ...` as a user starts it; yields once it printed its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sweeper.launch.cli", "dashboard", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # As from a terminal: a suite started in the background by a non-interactive shell
        # ignores SIGINT, and a child would inherit that and never see the Ctrl-C below.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        assert process.stdout is not None
        while not any(URL_LINE.search(line) for line in lines):
            line = process.stdout.readline()
            if not line:
                pytest.fail(f"the dashboard exited before printing its URL: {''.join(lines)}")
            lines.append(line)
            assert time.monotonic() < deadline, "no URL printed in time"
        yield process, lines
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C, as a user stops it
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_dashboard_serves_the_study_on_loopback(finished_study: FinishedStudy) -> None:
    with dashboard_process(str(finished_study.study_file), "--port", "0") as (process, lines):
        match = next(URL_LINE.search(line) for line in lines if URL_LINE.search(line))
        assert match is not None
        url, port, study_id = match.group(1), int(match.group(2)), int(match.group(3))
        summaries = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        by_name = {summary["study_name"]: summary for summary in summaries}
        assert "views" in by_name and by_name["views"]["study_id"] == study_id
        detail = get_json(f"http://127.0.0.1:{port}/api/studies/{study_id}")
        assert len(detail["trials"]) == 4
        with urllib.request.urlopen(url, timeout=10) as page:  # the SPA the URL opens
            assert page.status == 200 and b"<html" in page.read().lower()
        assert_listens_on_loopback_only(port)
    assert process.returncode == 0  # Ctrl-C is a normal way to stop it
    assert process.stdout is not None and "dashboard stopped" in process.stdout.read()


def assert_listens_on_loopback_only(port: int) -> None:
    """Bound to 127.0.0.1, not to a wildcard address (0.0.0.0 or ::), which would answer on
    every address of the machine. Checked twice: what the kernel lists as listening on the
    port (on Linux), and, never skipped, that other addresses of this machine refuse a
    connection there, where a wildcard-bound socket is shown to be reached (or the test
    fails: it cannot tell the two bindings apart there). 127.0.0.2 is one of them
    on any Linux machine, however few network interfaces it has (127.0.0.0/8 is all
    loopback), so the check does not depend on the machine having a network address."""
    if Path("/proc/net/tcp").exists():
        assert listening_addresses(port) == ["127.0.0.1"]
    others = ["127.0.0.2", *non_loopback_addresses()]
    with socket.socket() as wildcard:
        wildcard.bind(("0.0.0.0", 0))
        wildcard.listen()
        control_port = wildcard.getsockname()[1]
        for address in others:
            try:
                socket.create_connection((address, control_port), timeout=2).close()
            except OSError as exc:
                pytest.fail(
                    f"cannot check the dashboard's binding: a socket on 0.0.0.0 is not reached "
                    f"at {address} either ({exc})"
                )
    for address in others:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, port), timeout=2).close()


def listening_addresses(port: int) -> list[str]:
    """The local addresses of the sockets listening on ``port`` (Linux: /proc/net/tcp[6])."""
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text(encoding="ascii").splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address_hex, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address_hex)  # 32-bit words in host byte order
                if sys.byteorder == "little":
                    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.append(socket.inet_ntop(family, raw))
    return found


def non_loopback_addresses() -> list[str]:
    """This machine's IPv4 addresses outside 127.0.0.0/8: the one its default route leaves
    from, and those its host name resolves to."""
    found: set[str] = set()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))  # no packet is sent for UDP connect
        found.add(str(probe.getsockname()[0]))
    except OSError:
        pass  # no route: no network interface besides loopback
    finally:
        probe.close()
    with suppress(OSError):
        found.update(
            str(info[4][0])
            for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        )
    return sorted(address for address in found if not address.startswith(("127.", "0.")))


def test_dashboard_on_postgresql_never_prints_the_password(
    finished_study: FinishedStudy, postgres_url: str
) -> None:
    name = f"views-{uuid.uuid4().hex[:8]}"
    optuna.copy_study(
        from_study_name="views",
        from_storage=finished_study.storage_url,
        to_storage=postgres_url,
        to_study_name=name,
    )
    password = postgres_url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    try:
        with dashboard_process(name, "--storage", postgres_url, "--port", "0") as (_, lines):
            output = "".join(lines)
            assert f":{password}@" not in output and "***" in output
            port = int(next(m for line in lines if (m := URL_LINE.search(line))).group(2))
            names = [
                s["study_name"]
                for s in get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
            ]
            assert name in names
    finally:
        optuna.delete_study(study_name=name, storage=postgres_url)


def test_busy_port_and_unknown_study_are_clear_errors(finished_study: FinishedStudy) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DashboardError, match=rf"--port={port}: cannot listen there"):
            Dashboard(finished_study.storage_url, "views", host="127.0.0.1", port=port)
    with pytest.raises(DashboardError, match=r"no study named 'nope'.*\['views'\]"):
        Dashboard(finished_study.storage_url, "nope", host="127.0.0.1")
