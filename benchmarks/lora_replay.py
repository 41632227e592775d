"""The LoRA benchmark's replay: a study that searches ``model.method``, recorded with no
pruner, replayed through the rank pruner ranking every trial together and ranking each trial
among its own method's (what sweeper does), with and without the near-chance rule.

A simulation: the recorded curves replayed point by point (``benchmarks.replay``), no
training. It decides what each rule would have stopped on these very trials; it cannot show
how the sampler would have answered (live, a pruned trial feeds the sampler differently).

Ranking within a method runs sweeper's own code: :class:`WithinMethod` gives each replayed
trial its ``method`` parameter, as the live study holds it, and asks the pruner through
``sweeper.runtime.worker_reads.reading_at_grid_point``, which ranks a trial among its own
method's trials where the study searches ``method``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from benchmarks.replay import STOPPED, Curve, ReplayResult, Strategy, unpruned_winner
from sweeper.settings.hyperparameters import METHODS

# The strategy that is sweeper's rules for a study file with near_chance on, and without.
SWEEPER_RULES = "rank within each method + near chance + early stopping"
SWEEPER_RULES_NO_CHANCE = "rank within each method + early stopping"


class WithinMethod(optuna.pruners.BasePruner):
    """``pruner`` as a sweeper worker asks it in a study that searches ``method``: each
    replayed trial (the k-th asked is ``methods[k]``'s) first gets its ``method`` parameter,
    then sweeper's ``reading_at_grid_point`` wrapper decides, ranking among that method's
    trials only."""

    def __init__(
        self,
        pruner: optuna.pruners.BasePruner,
        methods: Sequence[str],
        distribution: optuna.distributions.CategoricalDistribution,
    ):
        from sweeper.runtime.worker_reads import reading_at_grid_point

        self.inner = reading_at_grid_point(pruner)
        self.methods, self.distribution = list(methods), distribution

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if "method" not in trial.params:
            storage = study._storage
            method = self.methods[trial.number]
            internal = self.distribution.to_internal_repr(method)
            storage.set_trial_param(trial._trial_id, "method", internal, self.distribution)
            trial = storage.get_trial(trial._trial_id)
        return bool(self.inner.prune(study, trial))


def strategies(
    config: Any,
    methods: Sequence[str],
    near_chance: Any,
) -> list[Strategy]:
    """The replayed strategies: no rule; early stopping alone and with near chance; the
    study file's rank pruner ranking all trials together or within each method, each with
    early stopping, without and with the near-chance rule (``near_chance``: the study file's
    rule with the validation split's majority rate; None leaves those rows out)."""
    from benchmarks.pruning import chance_text, default_rules, stop_text
    from benchmarks.replay import EarlyStopping

    rules = default_rules(config)
    stopping = rules["early_stopping"]
    early = EarlyStopping(stopping["patience"], stopping["min_delta"]) if stopping else None
    distribution = optuna.distributions.CategoricalDistribution(list(METHODS))

    def within() -> optuna.pruners.BasePruner:
        return WithinMethod(config.pruner.build(), methods, distribution)

    stop, chance = stop_text(early), chance_text(near_chance)
    together = f"{rules['pruner']}, every trial ranked together"
    own = f"{rules['pruner']}, each trial ranked among its own method's"
    found = [
        Strategy("none", description="no pruner, no early stopping, no near-chance rule"),
        Strategy("early stopping", None, early, stop),
        Strategy(
            "rank together + early stopping", config.pruner.build, early, f"{together} + {stop}"
        ),
        Strategy(SWEEPER_RULES_NO_CHANCE, within, early, f"{own} + {stop}"),
    ]
    if near_chance is not None:
        found += [
            Strategy(
                "near chance + early stopping", None, early, f"{chance} + {stop}", near_chance
            ),
            Strategy(
                "rank together + near chance + early stopping",
                config.pruner.build,
                early,
                f"{together} + {chance} + {stop}",
                near_chance,
            ),
            Strategy(SWEEPER_RULES, within, early, f"{own} + {chance} + {stop}", near_chance),
        ]
    return found


def _kept_best(
    result: ReplayResult, curves: Sequence[Curve], direction: str
) -> tuple[int | None, bool | None]:
    """Among ``curves`` (one method's, or all): the unpruned best trial, and whether this
    strategy kept its best evaluation (it was not stopped before it)."""
    winner = unpruned_winner(curves, direction)  # type: ignore[arg-type]
    if winner is None:
        return None, None
    replayed = next(t for t in result.trials if t.trial == winner.trial)
    return winner.trial, replayed.value == winner.best(direction)  # type: ignore[arg-type]


def method_row(
    result: ReplayResult, curves: Sequence[Curve], method: str, methods: dict[int, str]
) -> dict[str, Any]:
    """One method's trials under one strategy: how many each rule stopped, the examples they
    spent, whether the method's unpruned best kept its best evaluation, and the best trial
    this strategy's study holds of the method."""
    own = [c for c in curves if methods[c.trial] == method]
    numbers = {c.trial for c in own}
    trials = [t for t in result.trials if t.trial in numbers]
    outcomes = {
        outcome: sum(1 for t in trials if t.outcome == outcome)
        for outcome in ("complete", "early_stopped", *STOPPED)
    }
    best, kept = _kept_best(result, own, result.direction)
    better: Callable[[float, float], bool] = (
        (lambda a, b: a > b) if result.direction == "maximize" else (lambda a, b: a < b)
    )
    held: tuple[int, float] | None = None
    for trial in trials:
        if trial.value is not None and (held is None or better(trial.value, held[1])):
            held = (trial.trial, trial.value)
    return {
        "trials": len(trials),
        **outcomes,
        "stopped": sum(outcomes[o] for o in STOPPED),
        "examples": sum(t.examples for t in trials),
        "examples_unpruned": sum(t.full_examples for t in trials),
        "best_trial": best,
        "best_kept": kept,
        "held_best_trial": None if held is None else held[0],
        "held_best_value": None if held is None else held[1],
    }


def strategy_row(
    result: ReplayResult, curves: Sequence[Curve], methods: dict[int, str]
) -> dict[str, Any]:
    """One strategy: its examples against no rule's, the overall best kept or not, the
    trial its study calls best (and that trial's method), and each method's row."""
    return {
        "description": result.description,
        "examples": result.examples,
        "examples_unpruned": result.examples_unpruned,
        "ratio": round(result.ratio, 4),
        "best_trial": result.best_trial,
        "best_method": None if result.best_trial is None else methods[result.best_trial],
        "best_value": result.best_value,
        "winner": result.winner,
        "winner_method": None if result.winner is None else methods[result.winner],
        "winner_kept": not result.winner_lost,
        "winner_outcome": result.winner_outcome,
        "by_method": {m: method_row(result, curves, m, methods) for m in METHODS},
        "trials": [{**vars(t), "method": methods[t.trial]} for t in result.trials],
    }


def curves_by_method(curves: Sequence[Curve], methods: dict[int, str]) -> list[dict[str, Any]]:
    """Each grid point's values by method: how many trials reached it, and the median
    validation value and accuracy of each method's trials there (the measurement behind
    "LoRA trials start slower on a shared grid")."""
    grid = sorted({p.grid for c in curves for p in c.points if p.grid is not None})
    rows = []
    for point in grid:
        row: dict[str, Any] = {"grid": point}
        for method in METHODS:
            found = [
                p for c in curves if methods[c.trial] == method for p in c.points if p.grid == point
            ]
            accuracies = [p.accuracy for p in found if p.accuracy is not None]
            row[method] = {
                "trials": len(found),
                "examples": found[0].examples if found else None,
                "median_value": statistics.median(p.value for p in found) if found else None,
                "median_accuracy": statistics.median(accuracies) if accuracies else None,
            }
        rows.append(row)
    return rows


def run_replay(unpruned: dict[str, Any], config: Any, near_chance: Any) -> dict[str, Any]:
    """The unpruned mixed study's curves (its record, as ``benchmarks.pruning.run_search``
    wrote it, with each trial's ``method``) through every strategy of :func:`strategies`."""
    from benchmarks.pruning import curves_of
    from benchmarks.replay import replay_all

    direction = config.objective.study_direction
    curves = curves_of(unpruned)
    methods = {row["number"]: row["method"] for row in unpruned["trials"]}
    in_order = [methods[c.trial] for c in curves]
    results = replay_all(
        curves,
        strategies(config, in_order, near_chance),
        direction=direction,
        study_name=unpruned["study"],
    )
    return {
        "simulation": "a replay of the recorded unpruned curves (benchmarks.replay): no training",
        "metric": config.objective.metric,
        "direction": direction,
        "near_chance": None if near_chance is None else vars(near_chance),
        "curves": len(curves),
        "curves_by_method": {m: sum(1 for x in in_order if x == m) for m in METHODS},
        "grid": curves_by_method(curves, methods),
        "strategies": {
            name: strategy_row(result, curves, methods) for name, result in results.items()
        },
    }
