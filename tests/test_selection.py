"""`make test` on a bare machine: the Slurm tests are deselected, and said to be, where no
Slurm is installed; where CI requires them they are selected and fail without Slurm."""

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
    result = pytest_run("tests/test_slurm.py", **requirement)
    # 5: no test ran (every one of them was deselected), and none failed.
    assert result.returncode == 5, result.stdout + result.stderr
    assert "Slurm test(s) did not run: Slurm is not installed here" in result.stdout
    assert "not run: tests/test_slurm.py::test_" in result.stdout
    assert "deselected" in result.stdout


@pytest.mark.parametrize("requirement", [{"CI": "true"}, {"SWEEPER_REQUIRE_SLURM": "1"}])
def test_where_slurm_is_required_its_tests_are_selected(requirement: dict[str, str]) -> None:
    result = pytest_run("tests/test_slurm.py", "--collect-only", "-q", **requirement)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tests/test_slurm.py::test_" in result.stdout
    assert "did not run" not in result.stdout and "deselected" not in result.stdout
