"""Warm start end to end: a tiny sweep, confirmed; a new study on another task starts from it,
its confirmed winner enqueued first; a worker joins from an empty directory with the source
gone; show, the report and the card mark the warm-start trials."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import TrialState

from sweeper.attributes import WARM_START_SOURCE_ATTR
from sweeper.launch.cli import main
from sweeper.records.confirmation import load_confirmation
from sweeper.study.sweep import load_existing_study


@pytest.mark.timeout(900)
def test_a_new_task_starts_from_a_confirmed_study(
    write_study: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = write_study("before", budget={"n_trials": 3})
    assert main(["sweep", str(source), "--no-progress"]) == 0
    assert main(["confirm", str(source), "--top", "1", "--seeds", "2", "--no-progress"]) == 0
    runs = tmp_path / "runs"
    source_url = f"sqlite:///{runs / 'before' / 'study.db'}"
    before = load_existing_study("before", source_url)
    confirmation = load_confirmation(before)
    assert confirmation is not None
    winner_trials = set(confirmation.winning.source_trials)

    # Another task: shorter texts, and its own storage; the source named with its storage.
    target = write_study(
        "after",
        model={"max_length": 32},
        budget={"n_trials": 3},
        warm_start={"sources": [f"before@{source_url}"], "top": 1},
    )
    capsys.readouterr()
    assert main(["sweep", str(target), "--no-progress", "--n-trials", "2"]) == 0
    out = capsys.readouterr().out
    assert "task differs: model.max_length: 64 -> 32" in out
    target_url = f"sqlite:///{runs / 'after' / 'study.db'}"
    after = load_existing_study("after", target_url)
    first = after.get_trials(deepcopy=False)[0]
    origin = first.user_attrs[WARM_START_SOURCE_ATTR]
    assert origin.startswith("before #") and int(origin.split("#")[1]) in winner_trials
    assert "(confirmed winner)" in out

    # The source is gone; a worker in an empty directory finishes the study without it.
    shutil.rmtree(runs / "before")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert (
        main(["worker", "after", "--storage", target_url, "--n-trials", "3", "--no-progress"]) == 0
    )
    after = load_existing_study("after", target_url)
    trials = after.get_trials(deepcopy=False)
    assert len(trials) == 3 and all(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials
    )

    capsys.readouterr()
    assert main(["show", "after", "--storage", target_url]) == 0
    assert f"warm start from {origin}" in capsys.readouterr().out
    assert (
        main(["report", "after", "--storage", target_url, "--out", str(tmp_path / "r.html")]) == 0
    )
    report = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<h2>Warm start</h2>" in report and f"warm start from {origin}" in report
    assert "model.max_length: 64 -&gt; 32" in report
    if any(t.state == TrialState.COMPLETE for t in trials):
        assert main(["card", "after", "--storage", target_url, "--out", str(tmp_path / "c")]) == 0
        card = (tmp_path / "c" / "README.md").read_text(encoding="utf-8")
        assert "- Warm start: from `before` (model.max_length: 64 -> 32" in card
        assert "1 of their best configurations enqueued after the baselines (#0)" in card
