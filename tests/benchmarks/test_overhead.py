"""The overhead benchmark (``benchmarks/overhead.py``): a worker's start-up and a trial's
fixed cost through the real ``sweeper sweep``, at its ``--quick`` size, and how it splits a
trial's time from the probe's events."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import available
from benchmarks.overhead import trial_costs
from tests.support.quick_benchmarks import QUICK_RUN_TEST_TIMEOUT, run_quick


@pytest.mark.timeout(QUICK_RUN_TEST_TIMEOUT)
def test_overhead_quick_times_the_start_and_every_trial(tmp_path: Path) -> None:
    assert "overhead" in available()
    payload = run_quick("overhead", tmp_path).results("overhead")
    (run,) = payload["runs"]
    startup = run["startup"]
    parts = ("imports_seconds", "open_study_seconds", "first_trial_setup_seconds")
    assert all(startup[part] > 0 for part in parts), startup
    # The parts add up to the whole, from the process start to the first training step.
    whole = startup["process_start_to_first_step_seconds"]
    assert sum(startup[part] for part in parts) == pytest.approx(whole, abs=0.01)
    assert run["trials"] == 2 and len(run["per_trial"]) == 2
    for trial in run["per_trial"]:
        # 64 training rows of batch 16, one epoch, an evaluation every 32 examples.
        assert trial["steps"] == 4 and trial["evaluations"] == 2, trial
        assert 1 <= trial["saves"] <= trial["evaluations"]  # the first evaluation is a best
        assert 0 < trial["fixed_seconds"] < trial["seconds"]
    assert payload["summary"]["startup_seconds"] == pytest.approx(whole)


def test_a_trial_splits_into_steps_evaluations_saves_and_the_rest() -> None:
    events = [
        {"t": 10.5, "event": "train_begin"},
        {"t": 11.0, "event": "step_begin"},
        {"t": 12.0, "event": "step_end"},
        {"t": 12.1, "event": "step_begin"},
        {"t": 13.1, "event": "step_end"},
        {"t": 14.1, "event": "evaluate", "runtime": 0.8},
        {"t": 14.6, "event": "save"},
        {"t": 14.7, "event": "train_end"},
        {"t": 30.0, "event": "step_begin"},  # another trial's
    ]
    costs = trial_costs(10.0, 15.0, events)
    assert costs["steps_seconds"] == pytest.approx(2.0)
    assert costs["evaluation_seconds"] == pytest.approx(0.8)
    assert costs["save_seconds"] == pytest.approx(0.5)
    assert costs["setup_seconds"] == pytest.approx(1.0)
    assert costs["between_steps_seconds"] == pytest.approx(0.1)
    assert costs["end_seconds"] == pytest.approx(0.3)
    assert costs["fixed_seconds"] == pytest.approx(5.0 - 2.0 - 0.8 - 0.5)
    assert (costs["steps"], costs["evaluations"], costs["saves"]) == (2, 1, 1)
