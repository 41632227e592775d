"""Stored validation curves replayed through pruning strategies, without training again.

A study run with no pruner and no early stopping stores every trial's whole validation
curve on the common grid of training examples (``evaluation.strategy: examples``: an
evaluation every N examples, reported to Optuna at grid index k = examples / N). Each
strategy decides only from the values reported so far, so replaying those curves point by
point through it gives exactly what it would have decided on the same trials: which trial
it stops where, how many training examples that leaves spent, which trial it ends up
keeping as best, and when it first held a trial within the seed noise of the unpruned best.

:func:`replay` is the engine, a pure function over :class:`Curve` s. It runs Optuna's real
pruners on an in-memory study (the trials replayed one after another in their original
start order, as one worker ran them; each curve point reported at its grid index, then
``should_prune`` asked, as sweeper's objective does), and an early-stopping rule through
transformers' own ``EarlyStoppingCallback`` on a ``TrainerState`` whose ``best_metric`` is
kept as the Trainer keeps it. A stopped trial has spent the examples of the grid point it
stopped at. What the replay cannot show is the sampler's answer to pruning: live, a pruned
trial's parameters feed the sampler differently, so later trials differ. The live run of
the pruning benchmark measures that part.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

Direction = Literal["minimize", "maximize"]
Outcome = Literal["complete", "pruned", "early_stopped", "diverged", "near_chance"]
# Stopped, so PRUNED: the study keeps no value for them.
STOPPED: tuple[str, ...] = ("pruned", "diverged", "near_chance")


@dataclass(frozen=True)
class Point:
    """One evaluation: its grid index, the training examples seen by then, its value. The
    extra evaluation at a last step between two grid points is off the grid (``grid`` None):
    it counts for the trial's best value and its examples, but is never reported to the
    pruner, as sweeper does live."""

    grid: int | None
    examples: int
    value: float
    accuracy: float | None = None  # validation accuracy there (for the near-chance rule)


@dataclass(frozen=True)
class Curve:
    """One trial's validation curve as the unpruned study stored it."""

    trial: int
    points: tuple[Point, ...]

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError(f"trial {self.trial}: a curve needs at least one evaluation")

    @property
    def examples(self) -> int:
        """What the whole run trained: the last step is always evaluated."""
        return self.points[-1].examples

    def best_accuracy(self, upto: int | None = None) -> float | None:
        """The best accuracy of its points (the first ``upto`` + 1 of them)."""
        points = self.points if upto is None else self.points[: upto + 1]
        found = [p.accuracy for p in points if p.accuracy is not None]
        return max(found) if found else None

    def best(self, direction: Direction) -> float | None:
        finite = [p.value for p in self.points if math.isfinite(p.value)]
        if not finite:
            return None
        return max(finite) if direction == "maximize" else min(finite)


@dataclass(frozen=True)
class EarlyStopping:
    """transformers' EarlyStoppingCallback: stop after ``patience`` evaluations in a row that
    do not beat the best so far by more than ``min_delta``."""

    patience: int
    min_delta: float = 0.0


@dataclass(frozen=True)
class Strategy:
    """A pruner (built fresh for each replay) and/or an early-stopping rule."""

    name: str
    pruner: Callable[[], optuna.pruners.BasePruner] | None = None
    early_stopping: EarlyStopping | None = None
    description: str = ""
    # sweeper.trial.grid.NearChance: a trial still near chance after a share of its
    # plan (its unpruned curve's examples) is stopped.
    near_chance: Any = None


@dataclass(frozen=True)
class TrialReplay:
    trial: int
    outcome: Outcome
    stopped_at_grid: int | None  # None when it ran its whole curve (or stopped off the grid)
    examples: int  # training examples it spent under this strategy
    full_examples: int  # what it spent unpruned
    value: float | None  # what the study keeps: its best evaluation; None when pruned


@dataclass(frozen=True)
class ReplayResult:
    strategy: str
    direction: Direction
    trials: list[TrialReplay]
    examples: int  # all trials together
    examples_unpruned: int
    best_trial: int | None  # the trial this strategy's study would call best
    best_value: float | None
    winner: int | None  # the unpruned study's best trial
    winner_value: float | None
    winner_outcome: Outcome | None
    # The winner was stopped before its best evaluation (pruned, or early-stopped first):
    # this strategy's study does not hold the unpruned best.
    winner_lost: bool
    noise: float | None  # the tolerance "within seed noise" used below
    # Training examples spent, all trials so far together, when a trial within ``noise`` of
    # the unpruned best first finished (None: never, or no noise given).
    first_within_noise_examples: int | None
    first_within_noise_trial: int | None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.examples / self.examples_unpruned if self.examples_unpruned else math.nan

    @property
    def winner_stopped(self) -> bool:
        """The unpruned winner did not run its whole curve (whether or not it kept its best)."""
        return self.winner_outcome not in (None, "complete")

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "description": self.description,
            "direction": self.direction,
            "examples": self.examples,
            "examples_unpruned": self.examples_unpruned,
            "ratio": round(self.ratio, 4),
            "best_trial": self.best_trial,
            "best_value": self.best_value,
            "winner": self.winner,
            "winner_value": self.winner_value,
            "winner_outcome": self.winner_outcome,
            "winner_stopped": self.winner_stopped,
            "winner_lost": self.winner_lost,
            "noise": self.noise,
            "first_within_noise_examples": self.first_within_noise_examples,
            "first_within_noise_trial": self.first_within_noise_trial,
            "trials": [vars(t) for t in self.trials],
            **self.extra,
        }


def _better(direction: Direction) -> Callable[[float, float], bool]:
    return (lambda a, b: a > b) if direction == "maximize" else (lambda a, b: a < b)


def unpruned_winner(curves: Sequence[Curve], direction: Direction) -> Curve | None:
    """The trial the unpruned study calls best: the best value over whole curves, the
    earliest trial among equals (as Optuna's ``best_trial``)."""
    better = _better(direction)
    winner: Curve | None = None
    for curve in curves:
        value = curve.best(direction)
        if value is None or _diverged_at(curve) is not None:
            continue
        best = winner.best(direction) if winner else None
        if best is None or better(value, best):
            winner = curve
    return winner


def within(value: float, best: float, noise: float, direction: Direction) -> bool:
    """``value`` lies within ``noise`` of ``best`` (or beats it)."""
    return value >= best - noise if direction == "maximize" else value <= best + noise


def _diverged_at(curve: Curve) -> int | None:
    """The index of the first non-finite evaluation: sweeper stops a trial there whatever the
    pruner (it reports nothing to Optuna for it)."""
    for index, point in enumerate(curve.points):
        if not math.isfinite(point.value):
            return index
    return None


class _EarlyStopper:
    """transformers' EarlyStoppingCallback itself, driven as the Trainer drives it: its
    ``on_evaluate`` sees ``state.best_metric`` as it stood before this evaluation, and the
    Trainer then updates ``best_metric`` to any improvement (``_determine_best_metric``)."""

    def __init__(self, rule: EarlyStopping, direction: Direction):
        from transformers import EarlyStoppingCallback, TrainerControl, TrainerState

        self.callback = EarlyStoppingCallback(
            early_stopping_patience=rule.patience, early_stopping_threshold=rule.min_delta
        )
        self.args = SimpleNamespace(
            metric_for_best_model="objective", greater_is_better=direction == "maximize"
        )
        self.state = TrainerState()
        self.control = TrainerControl()
        self.better = _better(direction)

    def should_stop(self, value: float) -> bool:
        self.callback.on_evaluate(
            self.args, self.state, self.control, metrics={"eval_objective": value}
        )
        if self.state.best_metric is None or self.better(value, self.state.best_metric):
            self.state.best_metric = value
        return bool(self.control.should_training_stop)


def replay(
    curves: Sequence[Curve],
    strategy: Strategy,
    *,
    direction: Direction = "minimize",
    noise: float | None = None,
    study_name: str = "replay",
) -> ReplayResult:
    """Replay ``curves`` (in the order given: the trials' start order) through ``strategy``.

    Per trial and per curve point, as sweeper's objective does live: the value is reported
    to Optuna at its grid index and ``should_prune`` is asked (a pruned trial ends PRUNED
    there; a point off the grid is not reported); then the early-stopping rule sees it (a
    stopped trial ends COMPLETE with its best value so far; at the curve's last point the
    trial has ended anyway). A trial that runs its whole curve completes with its best
    value. A non-finite value ends the trial there under every strategy ("diverged"), as
    sweeper stops a diverged trial before asking the pruner.
    ``noise`` is the tolerance of "within seed noise of the unpruned best". ``study_name``
    matters to Hyperband only, which assigns trials to brackets by a hash of the study name
    and trial number.
    """
    study = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(),
        study_name=study_name,
        direction=direction,
        pruner=strategy.pruner() if strategy.pruner else optuna.pruners.NopPruner(),
    )
    winner = unpruned_winner(curves, direction)
    winner_value = winner.best(direction) if winner else None
    replayed = [_replay_trial(study, curve, strategy, direction) for curve in curves]
    best_trial, best_value = _best_kept(replayed, direction)
    first_examples, first_trial = _first_within_noise(replayed, winner_value, noise, direction)
    winner_replay = next((t for t in replayed if winner and t.trial == winner.trial), None)
    return ReplayResult(
        strategy=strategy.name,
        description=strategy.description,
        direction=direction,
        trials=replayed,
        examples=sum(t.examples for t in replayed),
        examples_unpruned=sum(curve.examples for curve in curves),
        best_trial=best_trial,
        best_value=best_value,
        winner=winner.trial if winner else None,
        winner_value=winner_value,
        winner_outcome=winner_replay.outcome if winner_replay else None,
        winner_lost=winner_replay is not None and winner_replay.value != winner_value,
        noise=noise,
        first_within_noise_examples=first_examples,
        first_within_noise_trial=first_trial,
    )


def _replay_trial(
    study: optuna.Study, curve: Curve, strategy: Strategy, direction: Direction
) -> TrialReplay:
    """One trial of the replayed study: its curve through ``strategy``, told to the study
    (PRUNED when stopped, else COMPLETE with its best value so far)."""
    trial = study.ask()
    outcome, stop_index, kept = _walk_curve(trial, curve, strategy, direction)
    if outcome in STOPPED:
        study.tell(trial, state=TrialState.PRUNED)
        kept = None
    else:
        assert kept is not None
        study.tell(trial, kept)
    last = curve.points[stop_index] if stop_index is not None else curve.points[-1]
    return TrialReplay(
        trial=curve.trial,
        outcome=outcome,
        stopped_at_grid=last.grid if stop_index is not None else None,
        examples=last.examples,
        full_examples=curve.examples,
        value=kept,
    )


def _walk_curve(
    trial: optuna.Trial, curve: Curve, strategy: Strategy, direction: Direction
) -> tuple[Outcome, int | None, float | None]:
    """``curve`` point by point, as :func:`replay` says: how the trial ended, the index of
    the point it stopped at (None: it ran its whole curve) and its best value by then."""
    better = _better(direction)
    stopper = _EarlyStopper(strategy.early_stopping, direction) if strategy.early_stopping else None
    diverged = _diverged_at(curve)
    kept: float | None = None
    for index, point in enumerate(curve.points):
        if index == diverged:
            return "diverged", index, kept
        if kept is None or better(point.value, kept):
            kept = point.value
        if point.grid is not None:
            trial.report(point.value, point.grid)
            if trial.should_prune():
                return "pruned", index, kept
        # At the planned end nothing is stopped early, whatever the rule says.
        last_point = index == len(curve.points) - 1
        rule = strategy.near_chance
        if (
            rule is not None
            and not last_point
            and rule.stops(point.examples, curve.examples, curve.best_accuracy(index))
        ):
            return "near_chance", index, kept
        if stopper is not None and stopper.should_stop(point.value) and not last_point:
            return "early_stopped", index, kept
    return "complete", None, kept


def _best_kept(
    replayed: Sequence[TrialReplay], direction: Direction
) -> tuple[int | None, float | None]:
    """The trial the replayed study calls best, and its value (the earliest among equals)."""
    better = _better(direction)
    best_trial: int | None = None
    best_value: float | None = None
    for trial in replayed:
        if trial.value is not None and (best_value is None or better(trial.value, best_value)):
            best_trial, best_value = trial.trial, trial.value
    return best_trial, best_value


def _first_within_noise(
    replayed: Sequence[TrialReplay],
    winner_value: float | None,
    noise: float | None,
    direction: Direction,
) -> tuple[int | None, int | None]:
    """The training examples spent, all trials so far together, when a trial within
    ``noise`` of the unpruned best first finished, and that trial (None, None: never)."""
    if noise is None or winner_value is None:
        return None, None
    spent = 0
    for trial in replayed:
        spent += trial.examples
        if trial.value is not None and within(trial.value, winner_value, noise, direction):
            return spent, trial.trial
    return None, None


def replay_all(
    curves: Sequence[Curve],
    strategies: Iterable[Strategy],
    *,
    direction: Direction = "minimize",
    noise: float | None = None,
    study_name: str = "replay",
) -> dict[str, ReplayResult]:
    return {
        strategy.name: replay(
            curves, strategy, direction=direction, noise=noise, study_name=study_name
        )
        for strategy in strategies
    }


# --- curves from a stored study ---------------------------------------------------------------


def curve_from_history(
    number: int, rows: Iterable[dict[str, Any]], metric: str, examples_per_step: int | None = None
) -> Curve | None:
    """A trial's curve from its stored ``history`` rows. Rows of ``evaluation.strategy:
    examples`` carry ``examples`` and ``grid`` (None off the grid); older rows only ``step``
    (then ``examples_per_step``, the batch size, turns steps into examples and the step is
    the grid index)."""
    points: list[Point] = []
    for row in rows:
        value = row.get(metric)
        examples = row.get("examples")
        grid = row.get("grid")
        if examples is None:
            if examples_per_step is None or row.get("step") is None:
                continue
            examples = int(row["step"]) * examples_per_step
            grid = int(row["step"])
        accuracy = row.get("accuracy")
        points.append(
            Point(
                None if grid is None else int(grid),
                int(examples),
                math.nan if value is None else float(value),
                None if accuracy is None else float(accuracy),
            )
        )
    return Curve(number, tuple(points)) if points else None


def curves_from_trials(trials: Iterable[FrozenTrial], metric: str) -> list[Curve]:
    """Every finished trial's curve, in the order the trials started."""
    finished = [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.user_attrs.get("history")
    ]
    finished.sort(key=lambda t: (t.datetime_start is None, t.datetime_start, t.number))
    curves = []
    for trial in finished:
        # Rows without examples (evaluation by steps or epochs, or stored before the grid).
        per_step = trial.user_attrs.get("examples_per_step") or trial.params.get(
            "per_device_train_batch_size"
        )
        curve = curve_from_history(
            trial.number,
            trial.user_attrs["history"],
            metric,
            int(per_step) if isinstance(per_step, int | float) else None,
        )
        if curve is not None:
            curves.append(curve)
    return curves


# --- the checks on a replay -----------------------------------------------------------

# The rules of a search that stops dead trials by half their plan (docs/benchmarks/pruning.md):
# "near chance" is a best accuracy within 2 points of the validation split's majority-class
# rate; the pruner's start-up trials (the median pruner's 3) are not held to the half-plan
# rule; at least 3 trials complete (what `sweeper confirm --top 3` needs).
NEAR_CHANCE_MARGIN = 0.02
STARTUP_TRIALS = 3
MIN_COMPLETE = 3


@dataclass(frozen=True)
class RanTrial:
    """What the checks need of one trial, replayed or live, in the order trials started."""

    number: int
    accuracies: list[float]  # the validation accuracies it reached
    examples: float  # the training examples it ran
    planned: float  # the training examples of its whole plan


def dead_trial_checks(
    ran: Sequence[RanTrial],
    complete: int,
    majority_rate: float | None,
    *,
    margin: float = NEAR_CHANCE_MARGIN,
    startup: int = STARTUP_TRIALS,
) -> dict[str, Any]:
    """The checks on a search, live or replayed: at least MIN_COMPLETE complete trials, and
    no trial after the start-up ones that ended near chance having run past half its plan."""
    dead = [
        trial.number
        for position, trial in enumerate(ran)
        if position >= startup
        and majority_rate is not None
        and trial.accuracies
        and trial.planned
        and max(trial.accuracies) <= majority_rate + margin
        and trial.examples > 0.5 * trial.planned
    ]
    return {
        "complete_trials": complete,
        "dead_past_half": dead,
        "checks_met": complete >= MIN_COMPLETE and not dead,
    }


def rule_checks(
    result: ReplayResult,
    curves: Sequence[Curve],
    majority_rate: float | None,
    *,
    margin: float = NEAR_CHANCE_MARGIN,
    startup: int = STARTUP_TRIALS,
) -> dict[str, Any]:
    """The checks of :func:`dead_trial_checks` on a replay, and one a replay alone can make:
    the unpruned winner never stopped before its best evaluation."""
    by_trial = {curve.trial: curve for curve in curves}
    ran = []
    for replayed in result.trials:
        points = [p for p in by_trial[replayed.trial].points if p.examples <= replayed.examples]
        accuracies = [p.accuracy for p in points if p.accuracy is not None]
        ran.append(RanTrial(replayed.trial, accuracies, replayed.examples, replayed.full_examples))
    complete = sum(1 for t in result.trials if t.outcome in ("complete", "early_stopped"))
    checks = dead_trial_checks(ran, complete, majority_rate, margin=margin, startup=startup)
    return {
        "complete_trials": checks["complete_trials"],
        "dead_past_half": checks["dead_past_half"],
        "winner_lost": result.winner_lost,
        "checks_met": checks["checks_met"] and not result.winner_lost,
    }
