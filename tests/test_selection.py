"""`make test` on a bare machine: the Slurm tests are deselected, and said to be, where no
Slurm is installed; where CI requires them they are selected and fail without Slurm.
`make test-fast` leaves out tests/end_to_end and tests/benchmarks by their folder's marker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_run(*argv: str, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"CI", "SWEEPER_REQUIRE_SLURM", "PYTEST_ADDOPTS"}
    }
    # No sinfo on this PATH: a machine without Slurm.
    env.update(PATH=str(REPO_ROOT / "no-such-bin"), **environment)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


@pytest.mark.parametrize("requirement", [{}, {"CI": "false"}, {"SWEEPER_REQUIRE_SLURM": "0"}])
def test_without_slurm_its_tests_are_deselected_and_listed(requirement: dict[str, str]) -> None:
    result = pytest_run("tests/end_to_end/test_slurm.py", **requirement)
    # 5: no test ran (every one of them was deselected), and none failed.
    assert result.returncode == 5, result.stdout + result.stderr
    assert "Slurm test(s) did not run: Slurm is not installed here" in result.stdout
    assert "not run: tests/end_to_end/test_slurm.py::test_" in result.stdout
    assert "deselected" in result.stdout


@pytest.mark.parametrize("requirement", [{"CI": "true"}, {"SWEEPER_REQUIRE_SLURM": "1"}])
def test_where_slurm_is_required_its_tests_are_selected(requirement: dict[str, str]) -> None:
    result = pytest_run("tests/end_to_end/test_slurm.py", "--collect-only", "-q", **requirement)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tests/end_to_end/test_slurm.py::test_" in result.stdout
    assert "did not run" not in result.stdout and "deselected" not in result.stdout


def test_the_fast_suite_leaves_out_end_to_end_and_benchmark_folders() -> None:
    files = (
        "tests/end_to_end/test_sweep.py",
        "tests/benchmarks/test_scale.py",
        "tests/records/test_results.py",
    )
    fast = pytest_run(
        *files, "--collect-only", "-q", "-m", "not slow and not end_to_end and not benchmark"
    )
    assert fast.returncode == 0, fast.stdout + fast.stderr
    collected = [line for line in fast.stdout.splitlines() if "::test_" in line]
    assert collected and all(line.startswith("tests/records/") for line in collected), collected
    whole = pytest_run(*files, "--collect-only", "-q")
    assert {line.split("/")[1] for line in whole.stdout.splitlines() if "::test_" in line} == {
        "end_to_end",
        "benchmarks",
        "records",
    }
