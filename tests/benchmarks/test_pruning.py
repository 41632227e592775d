"""The pruning benchmark's replay engine (benchmarks/replay.py) on synthetic curves, with
Optuna's real pruners and transformers' real EarlyStoppingCallback."""

from __future__ import annotations

import math
import random
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial

from benchmarks.replay import (
    Curve,
    EarlyStopping,
    Point,
    Strategy,
    curve_from_history,
    curves_from_trials,
    replay,
    replay_all,
    unpruned_winner,
)
from sweeper.settings.pruners import pruner_config
from tests.support.studies import REPO_ROOT

PER = 100  # training examples per grid point


def curve(trial: int, values: list[float], per: int = PER) -> Curve:
    return Curve(trial, tuple(Point(k, k * per, v) for k, v in enumerate(values, start=1)))


NONE = Strategy("none")


def median(n_startup_trials: int = 2, n_warmup_steps: int = 0) -> Strategy:
    return Strategy(
        "median",
        lambda: optuna.pruners.MedianPruner(
            n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps
        ),
    )


GOOD = [curve(0, [0.6, 0.5, 0.4, 0.3]), curve(1, [0.65, 0.55, 0.45, 0.35])]


def test_no_pruner_spends_every_example() -> None:
    curves = [*GOOD, curve(2, [0.7, 0.7, 0.7, 0.7]), curve(3, [0.9, 0.8])]
    result = replay(curves, NONE)
    assert result.examples == result.examples_unpruned == 400 + 400 + 400 + 200
    assert result.ratio == 1.0
    assert [t.outcome for t in result.trials] == ["complete"] * 4
    assert all(t.stopped_at_grid is None for t in result.trials)
    assert [t.value for t in result.trials] == [0.3, 0.35, 0.7, 0.8]
    assert result.best_trial == result.winner == 0
    assert result.best_value == result.winner_value == 0.3
    assert not result.winner_stopped and not result.winner_lost


def test_median_stops_a_dead_curve_at_the_expected_grid_point() -> None:
    dead = curve(2, [0.7, 0.7, 0.7, 0.7])
    # Without warm-up: at grid 1 the median of the two finished trials is 0.625 < 0.7.
    result = replay([*GOOD, dead], median())
    stopped = result.trials[2]
    assert (stopped.outcome, stopped.stopped_at_grid, stopped.examples) == ("pruned", 1, 100)
    assert stopped.value is None
    assert result.examples == 400 + 400 + 100
    # n_warmup_steps=2: grid 1 is inside the warm-up (step < 2), grid 2 is not.
    warm = replay([*GOOD, dead], median(n_warmup_steps=2))
    assert (warm.trials[2].stopped_at_grid, warm.trials[2].examples) == (2, 200)
    # The first two trials are the startup trials: never pruned.
    assert [t.outcome for t in warm.trials[:2]] == ["complete", "complete"]


def test_median_can_stop_the_eventual_winner() -> None:
    late_bloomer = curve(2, [0.7, 0.6, 0.3, 0.2])
    result = replay([*GOOD, late_bloomer], median())
    assert result.winner == 2 and result.winner_value == 0.2
    assert result.winner_outcome == "pruned" and result.winner_stopped and result.winner_lost
    assert result.best_trial == 0 and result.best_value == 0.3
    # Within 0.15 of the unpruned best (0.2): trial 0's 0.3 counts; the pruned winner never does.
    within = replay([*GOOD, late_bloomer], median(), noise=0.15)
    assert (within.first_within_noise_trial, within.first_within_noise_examples) == (0, 400)
    assert replay([*GOOD, late_bloomer], median(), noise=0.05).first_within_noise_examples is None


def test_the_default_rules_are_sweepers_own_pruner() -> None:
    # sweeper's median config wrapped in PatientPruner (patience 1): the median rule is asked
    # only once the last 2 evaluations are all worse than the best before them, so a dead
    # curve that gets worse is stopped at grid 3 (not 1, as by the median rule alone) and a
    # flat one never.
    config = pruner_config({"type": "median", "n_startup_trials": 2, "patience": 1})
    rules = Strategy("default", config.build)
    worsening = curve(2, [0.7, 0.72, 0.74, 0.76])
    result = replay([*GOOD, worsening], rules)
    assert (result.trials[2].outcome, result.trials[2].stopped_at_grid) == ("pruned", 3)
    flat = replay([*GOOD, curve(2, [0.7, 0.7, 0.7, 0.7])], rules)
    assert flat.trials[2].outcome == "complete"


def _random_curves(n: int, points: int, seed: int) -> list[Curve]:
    rng = random.Random(seed)
    curves = []
    for number in range(n):
        floor, speed = rng.uniform(0.2, 0.7), rng.uniform(0.2, 1.0)
        values = [floor + (0.7 - floor) * math.exp(-speed * k) for k in range(1, points + 1)]
        curves.append(curve(number, values))
    return curves


@pytest.mark.parametrize(
    "strategy",
    [
        Strategy("successive_halving", lambda: optuna.pruners.SuccessiveHalvingPruner()),
        Strategy("hyperband", lambda: optuna.pruners.HyperbandPruner(min_resource=1)),
    ],
    ids=["successive_halving", "hyperband"],
)
def test_halving_pruners_spend_less_than_none(strategy: Strategy) -> None:
    curves = _random_curves(20, 9, seed=3)
    none = replay(curves, NONE)
    result = replay(curves, strategy)
    assert none.examples == 20 * 9 * PER
    assert 0 < result.examples < none.examples
    pruned = [t for t in result.trials if t.outcome == "pruned"]
    assert pruned and all(t.examples == t.stopped_at_grid * PER for t in pruned)  # type: ignore[operator]
    # Replays are deterministic: the same curves, the same decisions.
    assert replay(curves, strategy).trials == result.trials


def test_an_overfitting_curve_early_stopped_keeps_its_best_value() -> None:
    overfit = curve(0, [0.6, 0.5, 0.45, 0.5, 0.55, 0.6, 0.7])
    result = replay([overfit], Strategy("es", early_stopping=EarlyStopping(patience=2)))
    trial = result.trials[0]
    # Two evaluations in a row (grid 4 and 5) without improving on 0.45: stopped at grid 5.
    assert (trial.outcome, trial.stopped_at_grid, trial.examples) == ("early_stopped", 5, 500)
    assert trial.value == 0.45 == result.best_value
    assert result.winner_stopped and not result.winner_lost  # stopped after its best


def test_early_stopping_min_delta_follows_transformers() -> None:
    # Improvements of 0.01 and 0.005 are not "more than min_delta" (0.02): two evaluations
    # without improvement, so patience 2 stops at grid 3; the value kept is still the best seen.
    slow = curve(0, [0.6, 0.59, 0.585, 0.58])
    rule = Strategy("es", early_stopping=EarlyStopping(patience=2, min_delta=0.02))
    trial = replay([slow], rule).trials[0]
    assert (trial.outcome, trial.stopped_at_grid, trial.value) == ("early_stopped", 3, 0.585)
    # Maximized (accuracy): the same logic upwards.
    rising = curve(0, [0.6, 0.7, 0.69, 0.68, 0.9])
    up = replay([rising], Strategy("es", early_stopping=EarlyStopping(2)), direction="maximize")
    assert (up.trials[0].stopped_at_grid, up.trials[0].value) == (4, 0.7)


def test_early_stopping_at_the_planned_end_stops_nothing() -> None:
    # The rule fires at the last evaluation: the trial had ended anyway (as sweeper counts it).
    result = replay([curve(0, [0.5, 0.6, 0.7])], Strategy("es", early_stopping=EarlyStopping(2)))
    assert (result.trials[0].outcome, result.trials[0].examples) == ("complete", 300)


def test_an_off_grid_last_evaluation_counts_but_is_never_reported() -> None:
    # 250 examples: the extra evaluation at a last step between grid points 2 and 3. Had it
    # been reported, the threshold pruner (upper 1.0) would stop the trial at it.
    tail = Curve(0, (Point(1, 100, 0.6), Point(2, 200, 0.5), Point(None, 250, 2.0)))
    strict = Strategy("threshold", lambda: optuna.pruners.ThresholdPruner(upper=1.0))
    trial = replay([tail], strict).trials[0]
    assert (trial.outcome, trial.examples, trial.value) == ("complete", 250, 0.5)
    better_at_the_end = Curve(0, (Point(1, 100, 0.6), Point(None, 150, 0.4)))
    assert replay([better_at_the_end], strict).trials[0].value == 0.4


def test_pruner_is_asked_before_early_stopping() -> None:
    dead = curve(2, [0.7, 0.8, 0.9, 1.0])
    both = Strategy("both", median().pruner, EarlyStopping(patience=1))
    assert replay([*GOOD, dead], both).trials[2].outcome == "pruned"


def test_first_within_noise() -> None:
    curves = [
        curve(0, [0.6, 0.5]),
        curve(1, [0.5, 0.4, 0.41]),
        curve(2, [0.45, 0.35, 0.3]),  # the unpruned winner
    ]
    # 0.12 of noise: trial 1 (0.40 <= 0.30 + 0.12) is the first held within noise, after
    # trials 0 and 1 spent 200 + 300 examples.
    result = replay(curves, NONE, noise=0.12)
    assert (result.first_within_noise_trial, result.first_within_noise_examples) == (1, 500)
    # 0.05: only the winner itself, after every example.
    tight = replay(curves, NONE, noise=0.05)
    assert (tight.first_within_noise_trial, tight.first_within_noise_examples) == (2, 800)
    assert replay(curves, NONE).first_within_noise_examples is None  # no noise given
    # Maximized: within noise below the best.
    up = [curve(0, [0.6, 0.7]), curve(1, [0.8, 0.85]), curve(2, [0.8, 0.9])]
    result = replay(up, NONE, direction="maximize", noise=0.06)
    assert (result.first_within_noise_trial, result.first_within_noise_examples) == (1, 400)
    assert unpruned_winner(up, "maximize") == up[2]


def test_a_diverged_curve_stops_under_every_strategy() -> None:
    curves = [*GOOD, curve(2, [0.5, math.nan, 0.1])]
    for result in replay_all(curves, [NONE, median()]).values():
        trial = result.trials[2]
        assert (trial.outcome, trial.stopped_at_grid, trial.examples) == ("diverged", 2, 200)
        assert result.winner == 0


def test_curves_from_stored_trials_in_start_order() -> None:
    def stored(
        number: int, batch: int, started: datetime, rows: list[dict[str, Any]]
    ) -> FrozenTrial:
        trial = optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE,
            value=min(float(r["validation_loss"]) for r in rows),
            params={"per_device_train_batch_size": batch},
            distributions={"per_device_train_batch_size": CategoricalDistribution([16, 32])},
            user_attrs={"history": rows},
        )
        trial.number, trial.datetime_start = number, started
        return trial

    on_grid: list[dict[str, Any]] = [
        {"step": 4, "examples": 128, "grid": 1, "validation_loss": 0.6},
        {"step": 8, "examples": 256, "grid": 2, "validation_loss": 0.5},
        {"step": 9, "examples": 288, "grid": None, "validation_loss": 0.55},
    ]
    by_steps: list[dict[str, Any]] = [
        {"step": 2, "validation_loss": 0.7},
        {"step": 3, "validation_loss": 0.65},
    ]
    early, late = datetime(2025, 1, 1, 10), datetime(2025, 1, 1, 11)
    # Trial 1 started first (as a retry's number may come after a later trial's).
    trials = [stored(0, 16, late, by_steps), stored(1, 32, early, on_grid)]
    curves = curves_from_trials(trials, "validation_loss")
    assert [c.trial for c in curves] == [1, 0]
    assert curves[0].points == (Point(1, 128, 0.6), Point(2, 256, 0.5), Point(None, 288, 0.55))
    # Rows without examples/grid (evaluation by steps): steps x batch size, the step as grid.
    assert curves[1].points == (Point(2, 32, 0.7), Point(3, 48, 0.65))
    assert curve_from_history(5, [{"step": 1, "validation_loss": 0.5}], "validation_loss") is None


# --- the benchmark around the engine (no training) --------------------------------------------


def test_pruning_benchmark_is_registered_and_builds_both_studies(tmp_path: Path) -> None:
    import argparse

    from benchmarks import available
    from benchmarks.pruning import add_arguments, resolve_sizes, strategies, study_config
    from sweeper.settings.study_file import load_study_config

    assert "pruning" in available()
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--quick", "--trials", "4"])
    sizes = resolve_sizes(args)
    assert sizes["trials"] == 4 and sizes["train_rows"] == 128 and sizes["quick"]
    none = study_config(args, sizes, "model-dir", tmp_path, "none", unpruned=True)
    default = study_config(args, sizes, "model-dir", tmp_path, "default", unpruned=False)
    study = load_study_config(args.study)
    for config in (none, default):
        assert config.evaluation.strategy == "examples"
        assert config.evaluation.examples == sizes["eval_examples"]
        assert config.budget.n_trials == 4 and config.baselines == []
        assert config.sampler == study.sampler  # the same search
        assert config.search_space.learning_rate == study.search_space.learning_rate
    assert none.pruner.type == "none" and none.early_stopping.patience is None
    # The default rules are the study file's, untouched.
    assert default.pruner == study.pruner and default.early_stopping == study.early_stopping
    names = [strategy.name for strategy in strategies(default)]
    assert names[:3] == ["none", "default", "default pruner only"]
    assert names[3:6] == ["early stopping only", "successive_halving", "hyperband"]
    assert "rank + near chance + early stopping" in [
        strategy.name for strategy in strategies(default, majority_rate=0.5)
    ]


def test_summary_and_replay_against_live() -> None:
    from benchmarks.pruning import summarize

    def trial(number: int, lr: float, outcome: str, examples: int) -> dict[str, Any]:
        return {"number": number, "params": {"lr": lr}, "outcome": outcome, "examples": examples}

    payload: dict[str, Any] = {
        "unpruned": {
            "examples": 1000,
            "trials": [trial(0, 1e-5, "complete", 500), trial(1, 2e-5, "complete", 500)],
        },
        "default_live": {
            "examples": 400,
            "trials": [
                trial(0, 1e-5, "complete", 200),
                trial(1, 3e-5, "pruned", 100),
                trial(2, 4e-5, "complete", 50),
                trial(3, 5e-5, "early_stopped", 50),
            ],
        },
        "replay": {
            "direction": "minimize",
            "strategies": {
                "default": {
                    "ratio": 0.5,
                    "winner_lost": False,
                    "trials": [
                        {"trial": 0, "outcome": "early_stopped", "examples": 300},
                        {"trial": 1, "outcome": "pruned", "examples": 200},
                    ],
                }
            },
        },
        "unpruned_confirmation": {"objective": {"mean": 0.40, "std": 0.02, "n": 3}},
        "default_confirmation": {"objective": {"mean": 0.41, "std": 0.01, "n": 3}},
    }
    summary = summarize(payload)
    assert summary["live_ratio"] == 0.4 and summary["ratio_met"]
    assert summary["live_checks"]["complete_trials"] == 3 and summary["live_checks"]["checks_met"]
    assert summary["quality_met"] and summary["target_met"]  # 0.41 <= 0.40 + 0.02
    check = summary["replay_vs_live"]
    # Trial 1 drew other parameters live: only trial 0 is compared, and it disagrees.
    assert check["same_params_trials"] == 1 and check["agree"] == 0
    # Fewer than 3 complete trials (what `sweeper confirm --top 3` needs): not met.
    payload["default_live"]["trials"][3]["outcome"] = "pruned"
    assert not summarize(payload)["live_checks"]["checks_met"]
    assert not summarize(payload)["target_met"]
    payload["default_live"]["trials"][3]["outcome"] = "early_stopped"
    payload["default_confirmation"] = {"objective": {"mean": 0.43, "std": 0.01, "n": 3}}
    assert not summarize(payload)["target_met"]
    payload["default_confirmation"] = "not run"
    assert "target_met" not in summarize(payload)


# --- the rank pruner and the near-chance rule (issue "stops dead trials by half their plan") --


def rank(keep_top: int = 3, keep_fraction: float = 0.3, n_warmup_steps: int = 2) -> Strategy:
    config = pruner_config(
        {
            "type": "rank",
            "keep_top": keep_top,
            "keep_fraction": keep_fraction,
            "n_warmup_steps": n_warmup_steps,
        }
    )
    return Strategy("rank", config.build)


BAD = [curve(n, [0.70, 0.69, 0.68, 0.67]) for n in range(3)]


@pytest.mark.parametrize(
    ("curves", "expected"),
    [
        # The first keep_top trials at a grid point always go on.
        (BAD, ["complete", "complete", "complete"]),
        # A 4th as bad as the others is ranked out at the first grid point past the warm-up,
        # even though the finished trials are all bad: the median of them is no bar here.
        ([*BAD, curve(3, [0.70, 0.695, 0.69, 0.685])], ["complete"] * 3 + ["pruned@2"]),
        # One better than them all at grid 2 goes on.
        ([*BAD, curve(3, [0.70, 0.60, 0.50, 0.40])], ["complete"] * 4),
        # Pruned trials count at the grid points they reached: the 5th is compared with 4.
        (
            [*BAD, curve(3, [0.70, 0.695, 0.69, 0.685]), curve(4, [0.70, 0.68, 0.5, 0.4])],
            ["complete"] * 3 + ["pruned@2", "complete"],
        ),
    ],
    ids=["first-three", "bad-fourth", "good-fourth", "pruned-count"],
)
def test_rank_pruner_keeps_the_best_at_each_grid_point(
    curves: list[Curve], expected: list[str]
) -> None:
    result = replay(curves, rank())
    got = [
        t.outcome if t.outcome != "pruned" else f"pruned@{t.stopped_at_grid}" for t in result.trials
    ]
    assert got == expected


@pytest.mark.parametrize(
    ("value", "keep_fraction", "outcome"),
    [
        # 6 of the 10 earlier trials are better: rank 7, outside ceil(0.3 x 11) = 4.
        (0.465, 0.3, "pruned"),
        # 3 are better: rank 4, inside ceil(0.3 x 11) = 4 ...
        (0.435, 0.3, "complete"),
        # ... but outside ceil(0.2 x 11) = 3.
        (0.435, 0.2, "pruned"),
    ],
)
def test_rank_pruner_keep_fraction_widens_the_kept_set(
    value: float, keep_fraction: float, outcome: str
) -> None:
    # Ten trials, each better than the one before at grid 2 (so all kept), then an 11th.
    curves = [curve(n, [0.7, 0.50 - 0.01 * n, 0.3]) for n in range(10)]
    curves.append(curve(10, [0.7, value, 0.3]))
    result = replay(curves, rank(keep_top=1, keep_fraction=keep_fraction))
    assert [t.outcome for t in result.trials[:10]] == ["complete"] * 10
    assert result.trials[10].outcome == outcome


def test_rank_pruner_maximizes_when_the_study_does() -> None:
    up = [curve(n, [0.5, 0.6 + 0.01 * n, 0.7]) for n in range(3)]
    result = replay([*up, curve(3, [0.5, 0.5, 0.5])], rank(), direction="maximize")
    assert result.trials[3].outcome == "pruned"
    better = replay([*up, curve(3, [0.5, 0.9, 0.9])], rank(), direction="maximize")
    assert better.trials[3].outcome == "complete"


def accuracy_curve(trial: int, accuracies: list[float], loss: float = 0.69) -> Curve:
    return Curve(
        trial,
        tuple(
            Point(k, k * PER, loss - 0.001 * k, accuracy)
            for k, accuracy in enumerate(accuracies, start=1)
        ),
    )


@pytest.mark.parametrize(
    ("accuracies", "at_fraction", "outcome", "examples"),
    [
        # Still at the majority rate (0.5) at half its plan (grid 4 of 8): stopped there.
        ([0.5] * 8, 0.5, "near_chance", 400),
        # Within the margin (0.52 <= 0.5 + 0.02) is near chance too.
        ([0.5, 0.51, 0.52, 0.52, 0.6, 0.7, 0.8, 0.8], 0.5, "near_chance", 400),
        # Past the margin before half its plan: never stopped, even if it falls back.
        ([0.5, 0.53, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 0.5, "complete", 800),
        # A late rule lets it run further.
        ([0.5] * 8, 0.75, "near_chance", 600),
    ],
)
def test_near_chance_stops_a_dead_trial_at_its_share_of_the_plan(
    accuracies: list[float], at_fraction: float, outcome: str, examples: int
) -> None:
    from sweeper.trial.grid import NearChance

    rule = NearChance(at_fraction=at_fraction, margin=0.02, majority_rate=0.5)
    result = replay([accuracy_curve(0, accuracies)], Strategy("near", near_chance=rule))
    assert (result.trials[0].outcome, result.trials[0].examples) == (outcome, examples)
    if outcome == "near_chance":
        assert result.trials[0].value is None  # stopped: PRUNED, no value kept


def test_near_chance_rule_from_the_study_and_its_labels() -> None:
    from sweeper.settings.study_file import load_study_config
    from sweeper.trial.grid import NearChance

    study = REPO_ROOT / "studies" / "imdb.yaml"
    off = load_study_config(study, {"near_chance.at_fraction": None}, notify=lambda m: None)
    assert NearChance.of(off, [0, 1, 1]) is None
    # `--set near_chance=null` is the same off form: no rule, so no trial is stopped by it.
    null = load_study_config(study, {"near_chance": None}, notify=lambda m: None)
    assert null.near_chance == off.near_chance and NearChance.of(null, [0, 1, 1]) is None
    on = load_study_config(study, {"near_chance.at_fraction": 0.5}, notify=lambda m: None)
    rule = NearChance.of(on, [0, 1, 1, 1])
    assert rule is not None and rule.majority_rate == 0.75 and rule.margin == 0.02
    assert not rule.stops(step=4, planned_steps=10, best_accuracy=0.75)  # before half
    assert rule.stops(step=5, planned_steps=10, best_accuracy=0.77)
    assert not rule.stops(step=5, planned_steps=10, best_accuracy=0.78)


def test_rule_checks_count_complete_trials_and_dead_ones_past_half() -> None:
    from benchmarks.replay import rule_checks

    curves = [
        accuracy_curve(0, [0.6, 0.7, 0.8, 0.8]),
        accuracy_curve(1, [0.5, 0.5, 0.5, 0.5]),
        accuracy_curve(2, [0.6, 0.7, 0.7, 0.7]),
        accuracy_curve(3, [0.5, 0.5, 0.51, 0.5]),  # after the start-up trials, dead
    ]
    none = replay(curves, NONE)
    checks = rule_checks(none, curves, majority_rate=0.5)
    # Trial 1 is dead too, but a start-up trial; trial 3 ran its whole plan.
    assert checks["complete_trials"] == 4 and checks["dead_past_half"] == [3]
    assert not checks["checks_met"]
    from sweeper.trial.grid import NearChance

    rule = NearChance(0.5, 0.02, 0.5)
    stopped = replay(curves, Strategy("near", near_chance=rule))
    checks = rule_checks(stopped, curves, majority_rate=0.5)
    assert checks["dead_past_half"] == [] and checks["complete_trials"] == 2
    assert not checks["checks_met"]  # fewer than 3 complete trials
