"""The scale benchmark (``benchmarks/scale.py``) at its ``--quick`` size: 12 worker processes
against a PostgreSQL with ``max_connections=10``, then 32 thread-workers, and the lock hold
and sampling time as the study grows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.quick_benchmarks import QUICK_RUN_TEST_TIMEOUT, run_quick


@pytest.mark.timeout(QUICK_RUN_TEST_TIMEOUT)
def test_the_scale_benchmark_quick_12_workers_on_10_connections(tmp_path: Path) -> None:
    """12 worker processes against max_connections=10 (7 for the sweeper role), then 32
    thread-workers: each finishes exactly its budget with no error."""
    results = run_quick("scale", tmp_path).results("scale")
    assert results["max_connections"] == 10
    runs = {run["label"]: run for run in results["runs"]}
    assert set(runs) == {"12 processes", "32 threads"}
    for run in runs.values():
        assert run["exact_budget"] and run["finished"] == run["budget"], run
        assert run["errors"] == 0 and run["exit_codes"] == [0], run["first_errors"]
        assert 0 < run["peak_connections"] <= 10 - 3  # superuser_reserved_connections = 3
        assert run["workers"] > run["peak_connections"]
        assert run["lock_hold_ms"]["n"] >= run["budget"]
        assert run["per_start"]["queries"] > 0 and run["per_report"]["queries"] > 0
    at_scale = results["large_study"]["at_scale"]
    assert at_scale["lock_hold_ms"]["n"] == 20 and at_scale["start_ms"]["max"] > 0
    assert [row["finished"] for row in results["large_study"]["growth"]][-1] == 300
