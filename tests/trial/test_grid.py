"""The two rules that stop a trial, on the grid that lets trials of any batch size meet.

"Worse than the others" is the pruner (the trial is PRUNED); "stopped improving" is
early_stopping (the trial is COMPLETE, scored by its best evaluation). Real tiny-BERT sweeps
on made-up reviews whose sentiment is one word, which a random tiny BERT learns in a couple
of dozen batch-8 steps (on real reviews it stays near chance for long).
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from sweeper.errors import ConfigError
from sweeper.launch.cli import main
from sweeper.records.results import format_value
from sweeper.settings.study_file import load_study_config
from sweeper.study.sweep import load_existing_study
from tests.support.studies import REPO_ROOT, base_study

POSITIVE = ["wonderful", "great", "superb", "moving", "brilliant", "delightful"]
NEGATIVE = ["awful", "boring", "dreadful", "terrible", "dull", "painful"]
SUBJECTS = ["film", "plot", "acting", "ending", "cast", "script", "music", "story"]
GRID = 96  # evaluation.examples: 12 steps at batch 8, 3 at batch 32
FIXED = {"seed": 42, "warmup_ratio": 0.0, "weight_decay": 0.0}


def one_word_rows(count: int, flip_every: int = 0) -> list[str]:
    """Reviews whose sentiment is one word; with ``flip_every`` every such row has the
    other label (a validation split that disagrees with training on a third of its rows)."""
    rows = ["review,sentiment"]
    for index in range(count):
        label = index % 2
        if flip_every and index % flip_every == 0:
            label = 1 - label
        words = (NEGATIVE, POSITIVE)[index % 2]
        subject = SUBJECTS[index % len(SUBJECTS)]
        rows.append(
            f"the {subject} was {words[index % len(words)]},{('negative', 'positive')[label]}"
        )
    return rows


def default_rules() -> dict[str, Any]:
    """The rules of the default study (studies/imdb.yaml) that compare trials on the grid:
    its pruner and early stopping. (Its near-chance rule would stop these tiny learners too,
    which learn from a random model; tests/end_to_end/test_sweep.py tests that rule.)"""
    document = yaml.safe_load((REPO_ROOT / "studies" / "imdb.yaml").read_text(encoding="utf-8"))
    assert document["evaluation"]["strategy"] == "examples"
    return {"pruner": document["pruner"], "early_stopping": document["early_stopping"]}


@dataclass(frozen=True)
class GridSweep:
    study: optuna.Study
    learners: list[FrozenTrial]
    dead: FrozenTrial


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> GridSweep:
    """Under the default study's rules: three batch-8 trials that learn, then a batch-32
    trial at a learning rate too small to move the random weights (its validation loss sits
    at chance). 192 training rows: every batch size reaches each grid point at a whole step."""
    directory = tmp_path_factory.mktemp("grid")
    data = directory / "one-word.csv"
    data.write_text("\n".join(one_word_rows(256)) + "\n", encoding="utf-8")
    learns = {"per_device_train_batch_size": 8, "num_train_epochs": 1, **FIXED}
    study = base_study(
        data,
        tiny_model_dir,
        directory / "runs",
        model={"max_length": 16},
        search_space={
            "learning_rate": {"low": 1e-6, "high": 1e-2, "log": True},
            "per_device_train_batch_size": {"choices": [8, 32]},
            "num_train_epochs": {"low": 1, "high": 2},
            **FIXED,
        },
        baselines=[
            {"name": "learns", "params": {**learns, "learning_rate": 5e-3}},
            {"name": "learns too", "params": {**learns, "learning_rate": 4e-3}},
            {"name": "learns slower", "params": {**learns, "learning_rate": 3e-3}},
            {
                "name": "dead",
                "params": {
                    "learning_rate": 1e-6,
                    "per_device_train_batch_size": 32,
                    "num_train_epochs": 2,
                    **FIXED,
                },
            },
        ],
        evaluation={"strategy": "examples", "examples": GRID},
        budget={"n_trials": 4},
        **default_rules(),
    )
    study["name"] = "grid"
    path = directory / "grid.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    assert main(["sweep", str(path), "--no-progress"]) == 0
    loaded = load_existing_study("grid", f"sqlite:///{directory / 'runs' / 'grid' / 'study.db'}")
    trials = loaded.get_trials()
    return GridSweep(loaded, learners=trials[:3], dead=trials[3])


# A whole sweep of a few trials, evaluated and checkpointed at every grid point: 80-100 s
# measured on 2 cores shared with other test runs (load average 7-9).
@pytest.mark.timeout(300)
def test_a_dead_trial_is_pruned_by_the_default_rules(grid_sweep: GridSweep) -> None:
    """It is never early-stopped as "not improving" first: the pruner is asked at every
    grid point from n_warmup_steps on, and compares it with the other trials there."""
    dead, learners = grid_sweep.dead, grid_sweep.learners
    assert [t.state for t in learners] == [TrialState.COMPLETE] * 3
    assert dead.state == TrialState.PRUNED, dead.user_attrs
    losses = [row["validation_loss"] for row in dead.user_attrs["history"]]
    assert max(losses) - min(losses) < 0.005  # near-constant: it never learned
    stopped_at = max(dead.intermediate_values)
    median = statistics.median(t.intermediate_values[stopped_at] for t in learners)
    assert dead.intermediate_values[stopped_at] > median
    assert stopped_at >= default_rules()["pruner"]["n_warmup_steps"]
    reason = dead.user_attrs["stop_reason"]
    assert reason.startswith(
        f"pruned at step {stopped_at * GRID // 32} ({stopped_at * GRID} examples"
    )
    assert f"grid point {stopped_at})" in reason
    assert "early_stopped_at" not in dead.user_attrs


@pytest.mark.timeout(300)
@pytest.mark.timeout(300)
def test_the_report_says_what_pruning_saved_in_examples_and_where_each_trial_stopped(
    grid_sweep: GridSweep,
) -> None:
    from sweeper.records.results import examples_saved, summarize
    from sweeper.views.figures import EXAMPLES_TITLE, loss_curves_figure
    from sweeper.views.report import render_report

    dead = grid_sweep.dead
    stopped_at = max(dead.intermediate_values)
    # 2 epochs of 192 rows planned at batch 32 (12 steps); stopped after stopped_at x 96.
    assert examples_saved(dead) == 2 * 192 - stopped_at * GRID > 0
    summary = summarize(grid_sweep.study)
    assert summary.saved_examples == examples_saved(dead)
    assert summary.planned_examples_stopped == 2 * 192
    text = render_report(grid_sweep.study)
    assert f"{summary.saved_examples:,} of 384 planned training examples" in text
    winner = grid_sweep.study.best_trial
    assert (
        html.escape(
            f"trial {dead.number} stopped at {stopped_at * GRID} examples (step {stopped_at * 3}): "
            f"validation_loss {format_value(dead.intermediate_values[stopped_at])} vs the winner's "
            f"(#{winner.number}) {format_value(winner.intermediate_values[stopped_at])} there"
        )
        in text
    )
    figure = loss_curves_figure(grid_sweep.study)
    assert figure.layout.xaxis.title.text == EXAMPLES_TITLE
    dead_curve = next(trace for trace in figure.data if trace.name.startswith(f"#{dead.number}"))
    assert list(dead_curve.x) == [k * GRID for k in range(1, stopped_at + 1)]


@pytest.mark.timeout(300)
def test_batch_8_and_batch_32_trials_report_at_the_same_grid_points(
    grid_sweep: GridSweep,
) -> None:
    dead, learners = grid_sweep.dead, grid_sweep.learners
    assert {t.params.get("per_device_train_batch_size", 8) for t in learners} == {8}
    assert dead.params["per_device_train_batch_size"] == 32
    stopped_at = max(dead.intermediate_values)
    for learner in learners:
        on_both = {k for k in learner.intermediate_values if k <= stopped_at}
        assert set(dead.intermediate_values) == on_both == set(range(1, stopped_at + 1))
    # The same grid point is the same amount of training: 12 batch-8 steps, 3 batch-32 ones.
    for trial, per_step in ((learners[0], 8), (dead, 32)):
        for row in trial.user_attrs["history"]:
            assert row["examples"] == row["step"] * per_step
            if row["grid"] is not None:
                assert row["examples"] == row["grid"] * GRID
                assert trial.intermediate_values[row["grid"]] == row["validation_loss"]


def overfitting_study(tmp_path: Path, write_study: Callable[..., Path]) -> Path:
    """Two trials whose validation loss falls, then rises: the first overfits."""
    folder = tmp_path / "overfit"
    folder.mkdir()
    (folder / "train.csv").write_text("\n".join(one_word_rows(192)) + "\n", encoding="utf-8")
    (folder / "validation.csv").write_text(
        "\n".join(one_word_rows(48, flip_every=3)) + "\n", encoding="utf-8"
    )
    batch8 = {"per_device_train_batch_size": 8, **FIXED}
    path = write_study(
        name="overfit",
        data_path=folder,
        dataset={"validation_split": "validation"},
        model={"max_length": 16},
        search_space={
            "learning_rate": {"low": 1e-6, "high": 1e-2, "log": True},
            "num_train_epochs": {"low": 1, "high": 4},
            **batch8,
        },
        baselines=[
            {"name": "overfits", "params": {"learning_rate": 5e-3, "num_train_epochs": 4}},
            {"name": "stays put", "params": {"learning_rate": 1e-6, "num_train_epochs": 1}},
        ],
        evaluation={"strategy": "examples", "examples": GRID},
        early_stopping={"patience": 2},
        pruner={"type": "none"},
        budget={"n_trials": 2},
    )
    return path


@pytest.mark.timeout(300)
def test_an_overfitting_trial_is_early_stopped_complete_with_its_best_evaluation(
    tmp_path: Path, write_study: Callable[..., Path]
) -> None:
    """Validation rows disagree with training on a third of them: as the model grows sure
    of the sentiment word, validation loss falls, then rises (overconfidence). The trial
    ends early, COMPLETE, scored by and keeping its best evaluation, and is the best trial."""
    path = overfitting_study(tmp_path, write_study)
    assert main(["sweep", str(path), "--no-progress"]) == 0
    study = load_existing_study("overfit", f"sqlite:///{tmp_path / 'runs' / 'overfit'}/study.db")
    overfit = study.trials[0]
    assert overfit.state == TrialState.COMPLETE
    rows = overfit.user_attrs["history"]
    losses = [row["validation_loss"] for row in rows]
    best = losses.index(min(losses))
    assert 0 < best < len(losses) - 1 and losses[-1] > losses[best]  # fell, then rose
    stopped = overfit.user_attrs["early_stopped_at"]
    assert stopped == rows[-1]["step"] < overfit.user_attrs["planned_steps"]
    assert overfit.user_attrs["early_stop_note"].startswith(
        f"early-stopped at step {stopped} ({stopped * 8} examples, grid point {stopped * 8 // GRID})"
    )
    assert "stop_reason" not in overfit.user_attrs  # that would mean pruned
    assert overfit.value == min(losses)
    assert overfit.user_attrs["best_step"] == rows[best]["step"]
    kept = Path(overfit.user_attrs["best_checkpoint"])
    assert kept.name == f"checkpoint-{rows[best]['step']}" and kept.is_dir()
    assert sorted(p.name for p in kept.parent.glob("checkpoint-*")) == [kept.name]
    assert study.best_trial.number == overfit.number
    # sweeper show and the report say so, and do not call it pruned.
    from sweeper.views.console import trials_table
    from sweeper.views.report import render_report

    row = next(line for line in trials_table(study).splitlines() if line.startswith("0 "))
    assert "COMPLETE" in row and f"early-stopped at step {stopped}" in row
    assert f"complete, early-stopped at step {stopped}" in render_report(study)
    assert overfit.value is not None and study.trials[1].value is not None
    assert study.trials[1].value > overfit.value


@pytest.mark.timeout(300)
def test_early_stopping_set_to_null_lets_the_overfitting_trial_run_its_plan(
    tmp_path: Path, write_study: Callable[..., Path]
) -> None:
    path = overfitting_study(tmp_path, write_study)
    argv = ["sweep", str(path), "--no-progress", "--set", "early_stopping=null"]
    assert main(argv) == 0
    study = load_existing_study("overfit", f"sqlite:///{tmp_path / 'runs' / 'overfit'}/study.db")
    overfit = study.trials[0]
    assert overfit.state == TrialState.COMPLETE
    assert "early_stopped_at" not in overfit.user_attrs  # the rule would have stopped it
    assert overfit.user_attrs["history"][-1]["step"] == overfit.user_attrs["planned_steps"]
    stored = study.user_attrs["config"]["early_stopping"]
    assert stored["patience"] is None


# --- configuration ---------------------------------------------------------------------------


def _load(write_study: Callable[..., Path], **sections: Any) -> Any:
    return load_study_config(write_study(**sections))


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {"evaluation": {"strategy": "examples", "examples": 100}},
            r"evaluation\.examples=100 is not a whole number of steps for every batch size the "
            r"search space can draw \(per_device_train_batch_size \[16, 32\]\), so their "
            r"evaluations would not fall on one grid; use a multiple of 32, such as 96",
        ),
        (
            {
                "evaluation": {"strategy": "examples", "examples": 96},
                "training": {"gradient_accumulation_steps": 2},
            },
            r"evaluation\.examples=96 .*\[16, 32\] x training\.gradient_accumulation_steps=2 = "
            r"\[32, 64\] examples a step\).*use a multiple of 64, such as 128",
        ),
        (
            {"evaluation": {"strategy": "examples"}},
            r"evaluation: strategy=examples needs evaluation\.examples .* set "
            r"evaluation\.examples, e\.g\. 160",
        ),
        ({"evaluation": {"strategy": "examples", "examples": 0}}, r"evaluation\.examples: "),
        (
            {"early_stopping": {"patience": 0}},
            r"early_stopping\.patience: .*greater than or equal to 1",
        ),
        (
            {"early_stopping": {"min_delta": -0.1}},
            r"early_stopping\.min_delta: .*greater than or equal to 0",
        ),
        ({"early_stopping": {"patient": 3}}, r"early_stopping\.patient: unknown key"),
    ],
    ids=[
        "not-a-multiple",
        "not-a-multiple-with-accumulation",
        "examples-missing",
        "examples-zero",
        "patience-zero",
        "negative-min-delta",
        "misspelt",
    ],
)
def test_bad_grid_or_early_stopping_settings_name_the_key_and_the_fix(
    write_study: Callable[..., Path], sections: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(write_study, **sections)


@pytest.mark.parametrize(
    ("sections", "eval_steps"),
    [
        ({"evaluation": {"strategy": "examples", "examples": 64}}, {16: 4, 32: 2}),
        (
            {
                "evaluation": {"strategy": "examples", "examples": 128},
                "training": {"gradient_accumulation_steps": 2},
            },
            {16: 4, 32: 2},
        ),
        ({"evaluation": {"strategy": "steps", "steps": 5}}, {16: 5, 32: 5}),
    ],
    ids=["examples", "examples-with-accumulation", "steps"],
)
def test_each_batch_size_evaluates_at_its_own_step_count_on_one_grid(
    write_study: Callable[..., Path],
    tmp_path: Path,
    sections: dict[str, Any],
    eval_steps: dict[int, int],
) -> None:
    from sweeper.trial.training import build_training_arguments

    config = _load(write_study, **sections)
    for batch, steps in eval_steps.items():
        params = {
            "learning_rate": 1e-3,
            "per_device_train_batch_size": batch,
            "num_train_epochs": 1,
            **FIXED,
        }
        arguments = build_training_arguments(config, params, tmp_path / "out")
        assert (arguments.eval_steps, arguments.save_steps) == (steps, steps)


def test_steps_with_a_searched_batch_size_gets_a_notice(
    write_study: Callable[..., Path],
) -> None:
    from sweeper.study.preflight import grid_notice

    notice = grid_notice(_load(write_study))
    assert notice is not None and notice.startswith(
        "evaluation.strategy=steps with per_device_train_batch_size searched over [16, 32]: "
        "trials with different batch sizes are not compared by the pruner"
    )
    assert "evaluation.strategy: examples" in notice
    fixed = {"per_device_train_batch_size": 16}
    assert grid_notice(_load(write_study, search_space=fixed)) is None
    assert grid_notice(_load(write_study, evaluation={"strategy": "epoch"})) is None


@pytest.mark.parametrize(
    ("strategy", "step", "epoch", "index"),
    [
        ("examples", 12, 0.5, 2),  # 12 batch-16 steps = 192 examples = 2 x 96
        ("examples", 13, 0.54, None),  # the extra evaluation at a last step off the grid
        ("epoch", 24, 1.0, 1),
        ("epoch", 30, 1.25, None),
        ("steps", 13, 0.54, 13),  # every evaluation is reported at its step
    ],
)
def test_the_grid_point_each_strategy_reports(
    strategy: str, step: int, epoch: float, index: int | None
) -> None:
    from sweeper.trial.grid import EvaluationGrid

    grid = EvaluationGrid(strategy, examples_per_step=16, examples_per_point=96)
    assert grid.index(step, epoch) == index
