"""``sweeper confirm``: the sweep's best configurations and its baselines re-trained with fresh
seeds in the companion study, on real tiny sweeps (tiny random BERT, 2 seeds).

The shared ``confirmed`` study is a real 2-trial sweep (one baseline, one sampled trial)
with a test split, confirmed with ``--seeds 2`` (and the default ``--top 3``): only one
configuration besides the baseline exists, so 2 configurations x 2 seeds = 4 re-runs.
"""

from __future__ import annotations

import contextlib
import io
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from sweeper.attributes import CANDIDATES_ATTR, CONFIRM_CONFIG_ATTR, CONFIRM_SEED_ATTR
from sweeper.launch.cli import main
from sweeper.records.confirmation import companion_name, load_confirmation
from sweeper.study.confirm import SEED_HIGH, derive_seeds
from sweeper.study.sweep import load_existing_study
from tests.support.studies import base_study

SWEEP_SEEDS = {42, 7}  # the search space's seed choices (conftest.base_study)
QUICK = {
    "dataset": {
        "max_train_rows": 32,
        "max_validation_rows": 16,
        "test_fraction": 0.2,
        "max_test_rows": 16,
    },
    "search_space": {"num_train_epochs": 1},
    "evaluation": {"strategy": "epoch"},
    "pruner": {"type": "none"},
    "workers": {"poll_seconds": 0.5},
    "baselines": [
        {
            "name": "card A",
            "params": {"learning_rate": 1e-3, "per_device_train_batch_size": 32, "seed": 42},
        }
    ],
}


@dataclass(frozen=True)
class Confirmed:
    name: str
    study_file: Path
    storage_url: str
    output: str  # what `sweeper confirm` printed


def write_quick(
    directory: Path, name: str, small_csv: Path, tiny_model_dir: Path, **extra: object
) -> Path:
    study = base_study(small_csv, tiny_model_dir, directory / "runs", **{**QUICK, **extra})
    study["name"] = name
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def confirmed(
    tmp_path_factory: pytest.TempPathFactory, small_csv: Path, tiny_model_dir: Path
) -> Confirmed:
    directory = tmp_path_factory.mktemp("confirmed")
    path = write_quick(directory, "conf", small_csv, tiny_model_dir, budget={"n_trials": 2})
    assert main(["sweep", str(path), "--no-progress"]) == 0
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert main(["confirm", str(path), "--seeds", "2", "--no-progress"]) == 0
    storage_url = f"sqlite:///{directory / 'runs' / 'conf' / 'study.db'}"
    return Confirmed("conf", path, storage_url, output.getvalue())


def companion(confirmed: Confirmed) -> optuna.Study:
    return optuna.load_study(
        study_name=companion_name(confirmed.name), storage=confirmed.storage_url
    )


@pytest.mark.timeout(600)
def test_confirm_reruns_each_configuration_with_fresh_seeds(confirmed: Confirmed) -> None:
    study = load_existing_study(confirmed.name, confirmed.storage_url)
    confirmation = load_confirmation(study)
    assert confirmation is not None
    # Fewer finished configurations than --top 3 (the default): what there is, and said so.
    assert confirmation.top_k == 3
    assert any("only 1 finished configuration(s)" in note for note in confirmation.notes)
    assert [c.id for c in confirmation.configs] == ["c1", "baseline:card A"]
    seeds = confirmation.seeds
    assert len(seeds) == 2 and not set(seeds) & SWEEP_SEEDS
    assert seeds == derive_seeds("conf", 2, lambda s: s in SWEEP_SEEDS)

    trials = companion(confirmed).get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    runs = {(t.user_attrs[CONFIRM_CONFIG_ATTR], t.user_attrs[CONFIRM_SEED_ATTR]) for t in trials}
    assert runs == {(c.id, seed) for c in confirmation.configs for seed in seeds}
    for trial in trials:
        # The enqueued params, visible as the trial's params (optuna-dashboard shows them).
        planned = confirmation.config(trial.user_attrs[CONFIRM_CONFIG_ATTR])
        assert trial.params == {**planned.params, "seed": trial.user_attrs[CONFIRM_SEED_ATTR]}
        assert trial.distributions["seed"] == IntDistribution(0, SEED_HIGH)
        assert trial.intermediate_values  # reported (pruning off: NopPruner)
    # Candidates are the sweep's best configurations, distinct but for the seed.
    sweep = {t.number: t for t in study.get_trials()}
    for config in confirmation.configs:
        for number in config.source_trials:
            assert {k: v for k, v in sweep[number].params.items() if k != "seed"} == config.params
    c1 = confirmation.config("c1")
    assert c1.source_trials == [1] and c1.selected_value == sweep[1].value
    # The candidates are frozen on the companion study.
    stored = companion(confirmed).user_attrs[CANDIDATES_ATTR]
    assert [c["id"] for c in stored["configs"]] == ["c1", "baseline:card A"]

    winner = confirmation.winning
    means = {c.id: c.objective.mean for c in confirmation.configs}
    assert winner.objective.mean == min(means.values())
    for config in confirmation.configs:
        assert config.objective.n == 2 and config.objective.std is not None
        values = [run.objective for run in config.runs]
        assert config.objective.mean == pytest.approx(sum(values) / 2)
        tested = config.id == winner.id or config.role == "baseline"
        # Test scores for the winner's and the baselines' seeds only.
        assert all((run.test is not None) == tested for run in config.runs), config.id
        assert (config.test_accuracy is not None) == tested
    ordered = sorted(winner.runs, key=lambda run: run.objective)
    assert confirmation.export_seed == ordered[0].seed  # the better of the two middle ones
    quantities = {c.quantity for c in confirmation.comparisons}
    if winner.role == "candidate":
        assert quantities == {"validation_loss", "test_accuracy"}
        for comparison in confirmation.comparisons:
            assert comparison.n == 2 and comparison.ci95[0] <= comparison.mean_difference
            assert re.fullmatch(
                r"(better than|worse than|not distinguishable from) card A \(CI (ex|in)cludes 0\)",
                comparison.verdict,
            )

    # Only the exported run's checkpoint is left after the test evaluation.
    left = sorted(
        p.name
        for p in (
            Path(confirmed.study_file).parent / "runs" / "conf" / "checkpoints" / "confirm"
        ).iterdir()
    )
    export_trial = next(t for t in trials if t.number == confirmation.export_run.trial)
    assert left == [Path(export_trial.user_attrs["checkpoint_dir"]).name]
    assert Path(str(confirmation.export_run.best_checkpoint), "config.json").is_file()

    assert "(winner)" in confirmed.output and "test accuracy" in confirmed.output
    assert "only 1 finished configuration(s)" in confirmed.output


@pytest.mark.timeout(600)
def test_confirm_again_reruns_nothing_and_the_plan_is_frozen(
    confirmed: Confirmed, capsys: pytest.CaptureFixture[str]
) -> None:
    before = len(companion(confirmed).get_trials())
    assert main(["confirm", str(confirmed.study_file), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "already confirmed" in out and "winner:" in out
    assert len(companion(confirmed).get_trials()) == before
    assert main(["confirm", str(confirmed.study_file), "--seeds", "3"]) == 2
    assert re.search(
        r"--seeds=3, but the confirmation of study 'conf' was started with --seeds 2",
        capsys.readouterr().err,
    )


@pytest.mark.timeout(600)
def test_best_card_export_and_report_use_the_confirmed_winner(
    confirmed: Confirmed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sweeper.views.figures import figures
    from sweeper.views.report import render_report

    study = load_existing_study(confirmed.name, confirmed.storage_url)
    confirmation = load_confirmation(study)
    assert confirmation is not None
    seed = confirmation.export_seed
    capsys.readouterr()
    assert main(["best", str(confirmed.study_file)]) == 0
    best = capsys.readouterr().out
    assert best.startswith(f"confirmed winner: {confirmation.winner} ")
    assert f"  seed: {seed}\n" in best and "mean ± std over 2 seeds" in best

    assert main(["card", str(confirmed.study_file), "--out", str(tmp_path / "card")]) == 0
    card = (tmp_path / "card" / "README.md").read_text(encoding="utf-8")
    assert f"# conf-{confirmation.winner}-seed-{seed}" in card
    assert "results on the validation split (`train (25% held out)`" in card
    assert "On the test split (`a stratified 20% of 'train' held out (split seed 42)`)" in card
    assert "### Confirmation over seeds" in card and f"- seed: {seed}\n" in card

    capsys.readouterr()
    assert main(["export", str(confirmed.study_file), "--to", str(tmp_path / "model")]) == 0
    said = capsys.readouterr().out
    assert (
        f"the confirmed winner {confirmation.winner}" in said and f"seed {seed}: the median" in said
    )
    assert (tmp_path / "model" / "config.json").is_file()
    assert f"seed {seed}" in (tmp_path / "model" / "README.md").read_text(encoding="utf-8")

    assert list(figures(study))[-1] == "confirmation"
    page = render_report(study)
    assert "<h2>Confirmation</h2>" in page and "Not confirmed" not in page


def test_views_without_a_confirmation_say_single_seed(
    finished_study: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from sweeper.views.report import render_report

    study_file = finished_study.study_file  # type: ignore[attr-defined]
    assert main(["best", str(study_file)]) == 0
    assert "a single-seed validation score, not confirmed" in capsys.readouterr().out
    study = load_existing_study("views", finished_study.storage_url)  # type: ignore[attr-defined]
    assert "Not confirmed: every number above is a single-seed validation score" in render_report(
        study
    )


def _names(url: str) -> list[str]:
    return sorted(optuna.get_all_study_names(url))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--top", "0"], r"--top must be at least 1, but got --top=0"),
        (
            ["--seeds", "1"],
            r"--seeds must be at least 2, but got --seeds=1: one seed has no spread",
        ),
        (
            ["--seeds", "11,"],
            r"--seeds must be at least 2, but got --seeds=11: one seed has no spread",
        ),
        (
            ["--seeds", "11,11"],
            r"--seeds=11,11: a list of seeds must be distinct whole numbers in 0\.\.2147483647",
        ),
        (["--seeds", "11,-3"], r"--seeds=11,-3: a list of seeds must be distinct"),
    ],
)
def test_bad_top_or_seeds_writes_nothing(
    flags: list[str],
    message: str,
    write_study: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    path = write_study("tiny")
    assert main(["confirm", str(path), "--storage", url, *flags]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "none.db").exists()


def test_a_study_without_a_finished_trial_or_unknown_gives_an_error_and_no_companion(
    awkward_study: Callable[[str], tuple[str, str]],
    write_study: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, url = awkward_study("no-complete")
    # By name: a study runs from its stored config (a study file would have to agree with it).
    assert main(["confirm", name, "--storage", url]) == 2
    err = capsys.readouterr().err
    assert re.search(
        r"study 'no-complete' has no finished \(COMPLETE\) trial \(1 running, 1 pruned, 1 fail\), "
        r"so there is no configuration to confirm; run `sweeper sweep no-complete`",
        err,
    ), err
    assert _names(url) == ["no-complete"]  # no companion study

    assert main(["confirm", str(write_study("nosuch")), "--storage", url]) == 2
    assert re.search(
        r"no study named 'nosuch' in sqlite:///.*; studies there: \['no-complete'\]",
        capsys.readouterr().err,
    )
    assert _names(url) == ["no-complete"]

    missing = tmp_path / "missing.db"
    assert main(["confirm", str(write_study("nosuch")), "--storage", f"sqlite:///{missing}"]) == 2
    assert re.search(r"no such SQLite file; run the sweep first", capsys.readouterr().err)
    assert not missing.exists()


def start(command: str, study_file: Path, log: Path, *flags: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "sweeper", command, str(study_file), "--no-progress", *flags],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.timeout(600)
def test_sigkilled_confirm_resumes_from_its_checkpoint_without_redoing_finished_runs(
    small_csv: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The second re-run is killed mid-training; `sweeper worker` (the sweep's budget met)
    picks up its retry, which resumes from the checkpoint, and finalizes; `sweeper confirm`
    then re-trains nothing."""
    path = write_quick(
        tmp_path,
        "killed",
        small_csv,
        tiny_model_dir,
        dataset={"max_train_rows": 96, "max_validation_rows": 16},
        search_space={"num_train_epochs": 3, "per_device_train_batch_size": 8},
        evaluation={"strategy": "steps", "steps": 10},
        baselines=[],
        budget={"n_trials": 1},
        workers={"heartbeat_interval_seconds": 1, "grace_period_seconds": 3, "poll_seconds": 0.5},
    )
    # The re-runs train the stored 3 epochs (36 steps), as the sweep's trial did.
    assert main(["sweep", str(path), "--no-progress"]) == 0
    log = tmp_path / "confirm.log"
    process = start("confirm", path, log, "--top", "1", "--seeds", "2")
    second = tmp_path / "runs" / "killed" / "checkpoints" / "confirm" / "trial-1"
    deadline = time.monotonic() + 400
    while not list(second.glob("checkpoint-*/trainer_state.json")):
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    killed_at = int(sorted(second.glob("checkpoint-*"))[0].name.removeprefix("checkpoint-"))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    worker = start("worker", path, tmp_path / "worker.log")
    assert worker.wait(timeout=500) == 0, (tmp_path / "worker.log").read_text()
    url = f"sqlite:///{tmp_path / 'runs' / 'killed' / 'study.db'}"
    trials = optuna.load_study(study_name="killed.confirm", storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    first, dead, retry = trials
    assert first.user_attrs["worker"] == dead.user_attrs["worker"]  # not re-trained
    assert retry.system_attrs["failed_trial"] == 1 and retry.params == dead.params
    assert retry.user_attrs["resumed_from_step"] >= killed_at > 0
    assert min(retry.intermediate_values) == 10  # its curve continues the killed one's
    confirmation = load_confirmation(load_existing_study("killed", url))
    assert confirmation is not None and {r.trial for r in confirmation.winning.runs} == {0, 2}

    assert main(["confirm", str(path), "--no-progress"]) == 0
    assert len(optuna.load_study(study_name="killed.confirm", storage=url).get_trials()) == 3


@pytest.mark.timeout(600)
def test_two_confirm_workers_run_each_rerun_exactly_once(
    small_csv: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    path = write_quick(tmp_path, "pair", small_csv, tiny_model_dir, budget={"n_trials": 2})
    assert main(["sweep", str(path), "--no-progress"]) == 0
    logs = [tmp_path / f"confirm-{index}.log" for index in range(2)]
    processes = [start("confirm", path, log, "--top", "1", "--seeds", "2") for log in logs]
    codes = [process.wait(timeout=500) for process in processes]
    assert codes == [0, 0], "\n".join(log.read_text() for log in logs)
    url = f"sqlite:///{tmp_path / 'runs' / 'pair' / 'study.db'}"
    trials = optuna.load_study(study_name="pair.confirm", storage=url).get_trials()
    runs = [(t.user_attrs[CONFIRM_CONFIG_ATTR], t.user_attrs[CONFIRM_SEED_ATTR]) for t in trials]
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len(set(runs)) == 4  # (c1, baseline) x 2 seeds, each exactly once
    for log in logs:
        assert "winner:" in log.read_text()


def test_seeds_that_are_not_numbers_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["confirm", "tiny", "--seeds", "11,x"])
    assert exited.value.code == 2
    assert re.search(
        r"--seeds: expected a count \(--seeds 3\) or comma-separated whole numbers .*'11,x'",
        capsys.readouterr().err,
    )
