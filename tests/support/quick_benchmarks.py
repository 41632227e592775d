"""A benchmark's ``--quick`` run, as the tests in ``tests/benchmarks/`` make it.

Its time limit is a hang guard, not a performance check (performance is measured by
``make bench``): the quick runs take one to six minutes on an idle 2-core machine and the
peers run once passed a 560 s limit on a loaded one, so the guard sits far above any time a
working run has taken. Only a run that stopped making progress should reach it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.studies import REPO_ROOT

# A quick run that has not finished in this long is hung; the pytest timeout of its test
# (QUICK_RUN_TEST_TIMEOUT) leaves time to collect the output after the subprocess is killed.
QUICK_RUN_HANG_SECONDS = 1800
QUICK_RUN_TEST_TIMEOUT = QUICK_RUN_HANG_SECONDS + 60


class QuickRun:
    """A finished quick run: its exit status, its output and the JSON it wrote."""

    def __init__(self, done: subprocess.CompletedProcess[str], results_dir: Path) -> None:
        self.returncode = done.returncode
        self.stdout = done.stdout
        self.stderr = done.stderr
        self.results_dir = results_dir

    def tail(self) -> str:
        """The end of both streams, for an assertion's message."""
        return self.stdout[-3000:] + self.stderr[-3000:]

    def results(self, name: str) -> dict[str, Any]:
        """The JSON file ``name`` the run wrote, after checking it exited 0."""
        assert self.returncode == 0, self.tail()
        loaded: dict[str, Any] = json.loads((self.results_dir / f"{name}.json").read_text())
        return loaded


def run_quick(benchmark: str, results_dir: Path, *options: str) -> QuickRun:
    """``python -m benchmarks BENCHMARK --quick OPTIONS`` from the repository root, writing
    its results into ``results_dir`` (never into the repository), offline."""
    env = {
        **os.environ,
        "BENCH_RESULTS_DIR": str(results_dir),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("OUT", None)  # the GPU machine's output folder: a local run writes no copy there
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", benchmark, "--quick", *options],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=QUICK_RUN_HANG_SECONDS,
    )
    return QuickRun(done, results_dir)
