"""How a study searches: every pruner type and `patience` decide for real, on Optuna's own
trial.report/should_prune; the random sampler is seeded; accuracy and F1 are maximized.

The pruner and sampler tests need no model: each builds its pruner or sampler from the
study file's config section and drives an in-memory Optuna study with hand-reported
intermediate values (validation losses, minimized, as a sweep reports them). The objective
tests run real tiny sweeps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.launch.cli import main
from sweeper.settings.hyperparameters import (
    Choices,
    FloatRange,
    IntRange,
    ParamSpace,
    SearchSpace,
    suggest_params,
)
from sweeper.settings.pruners import build_pruner, pruner_config
from sweeper.settings.samplers import SamplerConfig, build_sampler, sampler_config
from sweeper.settings.study_file import load_study_config
from sweeper.study.sweep import load_existing_study

Curve = list[float]


def new_study(
    pruner: optuna.pruners.BasePruner, direction: Literal["minimize", "maximize"] = "minimize"
) -> optuna.Study:
    # A fixed name: HyperbandPruner assigns brackets from a hash of it and the trial number.
    return optuna.create_study(study_name="pruning", direction=direction, pruner=pruner)


def run_trial(study: optuna.Study, curve: Curve) -> int | None:
    """One trial that reports ``curve`` at steps 1, 2, ... and asks should_prune after each,
    as a sweep's trial does after every evaluation. Returns the step it was pruned at, or
    None when it ran to the end (it then completes with its best value)."""
    trial = study.ask()
    for step, value in enumerate(curve, start=1):
        trial.report(value, step)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return step
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    study.tell(trial, max(curve) if maximize else min(curve))
    return None


def run_references(study: optuna.Study, curves: list[Curve]) -> None:
    """Earlier trials the pruner compares against; every one must complete."""
    for curve in curves:
        assert run_trial(study, curve) is None, f"reference {curve} was pruned"
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == len(curves)


def flat(value: float, steps: int = 4) -> Curve:
    return [value] * steps


PRUNER_CLASSES = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,
}
# Hyperband, reduction factor 2 up to 8 steps: floor(log2(8 / 1)) + 1 = 4 brackets, whose
# first rungs are at steps 1, 2, 4 and 8 (a bracket's trials compete only with each other).
HYPERBAND: dict[str, Any] = {
    "type": "hyperband",
    "min_resource": 1,
    "max_resource": 8,
    "reduction_factor": 2,
}

# Each case: the pruner's config, the study's direction, the trials that finished before
# (best last, so that none of them is pruned), a trial it must let run to the end, a trial
# it must stop, and the steps it may stop it at. The kept and stopped trials sit where a
# wrong pruner would decide otherwise: a median pruner (what the default config builds)
# would keep both percentile's 2.0 and successive halving's 2.5, as it prunes only above
# the median (2.5).
PRUNER_CASES: list[
    tuple[str, dict[str, Any], Literal["minimize", "maximize"], list[Curve], Curve, Curve, set[int]]
] = [
    (
        "percentile",
        {"type": "percentile", "percentile": 25.0, "n_startup_trials": 2},
        "minimize",
        [flat(4.0), flat(3.0), flat(2.0), flat(1.0)],
        flat(1.5),  # below the 25th percentile of 1, 2, 3, 4 (1.75)
        flat(2.0),  # above it, though below the median
        {1},
    ),
    (
        "percentile-warmup",
        {"type": "percentile", "percentile": 25.0, "n_startup_trials": 2, "n_warmup_steps": 3},
        "minimize",
        [flat(4.0), flat(3.0), flat(2.0), flat(1.0)],
        flat(1.5),
        flat(2.0),
        {3},  # never at a step below n_warmup_steps
    ),
    (
        "successive_halving",
        {"type": "successive_halving", "min_resource": 1, "reduction_factor": 2},
        "minimize",
        [[4.0], [3.0], [2.0], [1.0]],
        [1.5],  # in the top half at rung 0 (step 1): 1, 1.5 | 2, 3, 4
        [2.5],  # with 1.5 and 2.5 competing too, the top half is 1, 1.5, 2
        {1},
    ),
    (
        "successive_halving-min_resource",
        {"type": "successive_halving", "min_resource": 2, "reduction_factor": 2},
        "minimize",
        [[4.0, 4.0], [3.0, 3.0], [2.0, 2.0], [1.0, 1.0]],
        [1.5, 1.5],
        [2.5, 2.5],
        {2},  # the first rung is at min_resource
    ),
    (
        "hyperband",
        HYPERBAND,
        "minimize",
        [flat(value, 8) for value in range(16, 0, -1)],
        flat(0.5, 8),  # better than every trial in its bracket: never stopped
        flat(100.0, 8),  # worse than every one: stopped at its bracket's first rung
        {1, 2, 4, 8},
    ),
    (
        "threshold-upper",
        {"type": "threshold", "upper": 1.0, "n_warmup_steps": 2},
        "minimize",
        [],
        flat(0.9),
        flat(1.5),  # a validation loss above `upper`
        {2},  # step 1 is below n_warmup_steps
    ),
    (
        "threshold-lower",
        {"type": "threshold", "lower": 0.6},
        "maximize",
        [],
        flat(0.7),
        [0.65, 0.55, 0.7],  # an accuracy that drops below `lower`
        {2},
    ),
]


@pytest.mark.parametrize(
    ("settings", "direction", "references", "kept", "pruned", "pruned_at"),
    [pytest.param(*case[1:], id=case[0]) for case in PRUNER_CASES],
)
def test_each_pruner_type_stops_the_trial_it_should_and_no_other(
    settings: dict[str, Any],
    direction: Literal["minimize", "maximize"],
    references: list[Curve],
    kept: Curve,
    pruned: Curve,
    pruned_at: set[int],
) -> None:
    config = pruner_config(settings)
    pruner = build_pruner(config)
    assert type(pruner) is PRUNER_CLASSES[config.type]
    study = new_study(pruner, direction)
    run_references(study, references)
    assert run_trial(study, kept) is None
    assert run_trial(study, pruned) in pruned_at
    states = [trial.state for trial in study.get_trials()]
    assert states[-2:] == [TrialState.COMPLETE, TrialState.PRUNED]


def test_hyperband_gets_its_brackets_from_the_config() -> None:
    """Twenty trials, each worse than any before it, are each stopped at the first rung of
    their bracket: together they show the four brackets of reduction factor 2 up to 8 steps
    (the defaults, reduction factor 3 up to the longest trial's 16 steps, would give first
    rungs at 1, 3 and 9)."""
    study = new_study(build_pruner(pruner_config(HYPERBAND)))
    run_references(study, [flat(value, 16) for value in range(40, 0, -1)])
    stopped = [run_trial(study, flat(100.0 + index, 16)) for index in range(20)]
    assert set(stopped) == {1, 2, 4, 8}, stopped


# `patience`: optuna's PatientPruner asks the wrapped (median) pruner only once the last
# patience + 1 evaluations are all worse, by more than min_delta, than the trial's best
# before them. A trial that keeps improving, however slowly, is never stopped.
GOOD = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]  # two finished trials with this curve set the median
SLOWLY_IMPROVING = [2.0, 1.99, 1.98, 1.97, 1.96, 1.95]  # above the median at every step
STALLED = [2.0, 1.5, 1.6, 1.7, 1.8, 1.9]  # above the median; best at step 2, worse after


@pytest.mark.parametrize(
    ("patience", "min_delta", "curve", "pruned_at"),
    [
        # No patience: above the median, stopped at once.
        pytest.param(None, 0.0, SLOWLY_IMPROVING, 1, id="none-improving"),
        pytest.param(None, 0.0, STALLED, 1, id="none-stalled"),
        # Improving, however slowly: never stopped.
        pytest.param(2, 0.0, SLOWLY_IMPROVING, None, id="2-improving"),
        # Steps 3, 4 and 5 all worse than step 2's 1.5.
        pytest.param(2, 0.0, STALLED, 5, id="2-stalled"),
        pytest.param(3, 0.0, STALLED, 6, id="3-stalled"),  # one more evaluation of patience
        # A plateau is not worse than its best.
        pytest.param(2, 0.0, [2.0, 1.5, 1.5, 1.5, 1.5, 1.5], None, id="2-plateau"),
        # 1.6 is worse than 1.5 by more than 0.05.
        pytest.param(2, 0.05, STALLED, 5, id="2-stalled-min_delta-0.05"),
        # 1.6 to 1.9 lie within 0.5 of 1.5: tolerated.
        pytest.param(2, 0.5, STALLED, None, id="2-stalled-min_delta-0.5"),
    ],
)
def test_patience_holds_the_pruner_back_until_the_trial_stops_improving(
    patience: int | None, min_delta: float, curve: Curve, pruned_at: int | None
) -> None:
    config = pruner_config(
        {"type": "median", "n_startup_trials": 2, "patience": patience, "min_delta": min_delta}
    )
    pruner = build_pruner(config)
    expected = optuna.pruners.MedianPruner if patience is None else optuna.pruners.PatientPruner
    assert type(pruner) is expected
    study = new_study(pruner)
    run_references(study, [GOOD, GOOD])
    assert run_trial(study, curve) == pruned_at


SPACE = SearchSpace(
    learning_rate=FloatRange(low=1e-5, high=1e-3, log=True),
    per_device_train_batch_size=Choices(choices=[8, 16, 32]),
    num_train_epochs=IntRange(low=1, high=4),
    seed=Choices(choices=[42, 7, 1234]),
    warmup_ratio=FloatRange(low=0.0, high=0.2),
    weight_decay=0.01,
)


def sample(config: SamplerConfig, n_trials: int = 8) -> list[dict[str, Any]]:
    """The parameters a fresh study with this sampler suggests for ``n_trials`` trials."""
    study = optuna.create_study(sampler=build_sampler(config))
    drawn = []
    for index in range(n_trials):
        trial = study.ask()
        drawn.append(suggest_params(trial, ParamSpace.of(SPACE.specs())))
        study.tell(trial, float(index))
    return drawn


def test_random_sampler_is_seeded_and_stays_in_the_search_space() -> None:
    config = sampler_config({"type": "random", "seed": 3})
    assert type(build_sampler(config)) is optuna.samplers.RandomSampler
    first, second = sample(config), sample(config)
    assert first == second  # two studies, the same seed: the same trials
    assert sample(sampler_config({"type": "random", "seed": 4})) != first  # the seed is used
    for params in first:
        assert 1e-5 <= params["learning_rate"] <= 1e-3
        assert params["per_device_train_batch_size"] in (8, 16, 32)
        assert params["num_train_epochs"] in range(1, 5)
        assert params["seed"] in (42, 7, 1234)
        assert 0.0 <= params["warmup_ratio"] <= 0.2
        assert params["weight_decay"] == 0.01  # fixed, not searched
    # Random sampling over 8 trials spreads: not one value repeated.
    assert len({params["learning_rate"] for params in first}) == 8


POSITIVE = ["wonderful", "great", "superb", "moving", "brilliant", "delightful"]
NEGATIVE = ["awful", "boring", "dreadful", "terrible", "dull", "painful"]
SUBJECTS = ["film", "plot", "acting", "ending", "cast", "script", "music", "story"]


@pytest.fixture
def easy_csv(tmp_path: Path) -> Path:
    """Reviews whose sentiment is in one word: a random tiny BERT learns them in a few
    steps, where on real reviews it predicts one class (accuracy 0.5) for a long time."""
    rows = ["review,sentiment"]
    for index in range(240):
        label = ("negative", "positive")[index % 2]
        words = (NEGATIVE, POSITIVE)[index % 2]
        subject = SUBJECTS[index % len(SUBJECTS)]
        rows.append(f"the {subject} was {words[index % len(words)]} and so was the rest,{label}")
    path = tmp_path / "easy.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("metric", ["accuracy", "f1"])
def test_accuracy_and_f1_objectives_are_maximized(
    metric: str, write_study: Callable[..., Path], easy_csv: Path, tmp_path: Path
) -> None:
    """A real tiny sweep with objective.metric accuracy (or f1): the study maximizes, each
    trial's value is the highest that metric reached in its evaluations, and the best trial
    is the one with the highest value. Two trials, one at a rate that learns and one at a
    rate too small to move the random weights, so that their values differ."""
    fixed = {"per_device_train_batch_size": 16, "seed": 42}
    path = write_study(
        name=f"max-{metric}",
        data_path=easy_csv,
        objective={"metric": metric},
        search_space={
            "learning_rate": {"low": 1e-6, "high": 1e-2, "log": True},
            "num_train_epochs": 3,
            **fixed,
        },
        baselines=[
            {"name": "learns", "params": {"learning_rate": 1e-2}},
            {"name": "stays put", "params": {"learning_rate": 1e-6}},
        ],
        evaluation={"strategy": "steps", "steps": 4},
        pruner={"type": "none"},
        budget={"n_trials": 2},
    )
    assert load_study_config(path).objective.study_direction == "maximize"
    assert main(["sweep", str(path), "--no-progress"]) == 0
    study = load_existing_study(path.stem, f"sqlite:///{tmp_path / 'runs' / path.stem}/study.db")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.user_attrs["objective_metric"] == metric
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 2
    for trial in complete:
        history = trial.user_attrs["history"]
        reached = [row[metric] for row in history]
        assert len(reached) > 1 and 0.0 <= min(reached) <= max(reached) <= 1.0
        assert trial.value == max(reached)
        best_row = next(row for row in history if row[metric] == max(reached))
        assert trial.user_attrs["best_step"] == best_row["step"]
    values = [float(trial.value) for trial in complete if trial.value is not None]
    assert len(set(values)) > 1, f"the trials tied at {values}: the test cannot tell max from min"
    assert study.best_trial.value == max(values)
    assert study.best_trial.number == complete[values.index(max(values))].number
    assert study.best_trial.user_attrs["baseline"] == "learns"
