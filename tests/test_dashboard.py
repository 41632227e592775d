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
from contextlib import contextmanager
from typing import Any

import optuna
import pytest
from conftest import FinishedStudy

from sweeper.dashboard import Dashboard, DashboardError

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
        [sys.executable, "-m", "sweeper.cli", "dashboard", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
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
        # Bound to loopback only: no other local address answers.
        outside = _non_loopback_address()
        if outside is not None:
            with pytest.raises(OSError):
                socket.create_connection((outside, port), timeout=2).close()
    assert process.returncode == 0  # Ctrl-C is a normal way to stop it
    assert process.stdout is not None and "dashboard stopped" in process.stdout.read()


def _non_loopback_address() -> str | None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))  # no packet is sent for UDP connect
        address = str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


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
            Dashboard(finished_study.storage_url, "views", port=port)
    with pytest.raises(DashboardError, match=r"no study named 'nope'.*\['views'\]"):
        Dashboard(finished_study.storage_url, "nope")
