"""What a study recorded, read back (sweeper.records.results): the summary every view shows,
against the trials Optuna stored."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from sweeper.records.results import steps_run, summarize
from sweeper.study.sweep import load_existing_study
from tests.support.studies import FinishedStudy


def test_summary_matches_the_stored_trials(finished_study: FinishedStudy) -> None:
    study = load_existing_study(finished_study.name, finished_study.storage_url)
    trials = study.get_trials()
    summary = summarize(study)
    states = [trial.state for trial in trials]
    assert summary.counts["complete"] == states.count(TrialState.COMPLETE) >= 2
    assert summary.counts["pruned"] == states.count(TrialState.PRUNED) >= 1
    assert summary.counts["failed"] == summary.counts["running"] == 0
    assert summary.best is not None and summary.best.number == study.best_trial.number
    assert [trial.user_attrs["baseline"] for trial in summary.baselines] == [
        "card A",
        "card B",
        "too high",
    ]
    assert summary.train_seconds == pytest.approx(
        sum(trial.user_attrs["train_seconds"] for trial in trials)
    )
    pruned = [trial for trial in trials if trial.state == TrialState.PRUNED]
    unrun = sum(trial.user_attrs["planned_steps"] - steps_run(trial) for trial in pruned)
    assert unrun > 0 and summary.saved_steps == unrun
    assert summary.planned_steps_stopped == sum(t.user_attrs["planned_steps"] for t in pruned)
    assert summary.saved_seconds > 0
