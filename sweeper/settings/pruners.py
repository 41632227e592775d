"""Pruners: one typed config per Optuna pruner, and :func:`build_pruner`.

``pruner.type`` picks the model (a discriminated union), so a setting that belongs to
another pruner is an error, not silently ignored. Optuna does not store pruners in the
database: every worker builds its own from the study file. Each config also says in one
line what it does (:meth:`describe`), for the model card.
"""

from __future__ import annotations

import math
import warnings
from typing import Annotated, Any, ClassVar, Literal

import optuna
from optuna.trial import TrialState
from pydantic import Field, TypeAdapter, model_validator

from sweeper.settings.strict import StrictModel


class _PrunerBase(StrictModel):
    title: ClassVar[str] = ""

    def build(self) -> optuna.pruners.BasePruner:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The settings that shape this pruner, for one line of text."""
        return {
            key: value
            for key, value in self.model_dump().items()
            if key != "type" and value is not None
        }

    def describe(self) -> str:
        settings = ", ".join(f"{key}={value}" for key, value in self.settings().items())
        return f"{self.title} ({settings})" if settings else self.title


class _Wrappable(_PrunerBase):
    # Wraps the pruner in Optuna's PatientPruner, which asks the wrapped pruner only after
    # this many evaluations without improvement: a slowly improving bad trial is never
    # pruned, so it is off by default.
    patience: int | None = Field(default=None, ge=0)
    """Wrap the pruner in Optuna's PatientPruner: it may stop a trial only once its last patience +
    1 evaluations are all worse than its best before them (by more than min_delta); null is off."""
    min_delta: float = Field(default=0.0, ge=0.0)
    """With patience: the improvement that counts."""

    def _inner(self) -> optuna.pruners.BasePruner:
        raise NotImplementedError

    def build(self) -> optuna.pruners.BasePruner:
        pruner = self._inner()
        if self.patience is None:
            return pruner
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.PatientPruner(
                pruner, patience=self.patience, min_delta=self.min_delta
            )

    def settings(self) -> dict[str, Any]:
        settings = super().settings()
        if self.patience is None:
            settings.pop("min_delta", None)
        else:
            settings["patience"] = f"{self.patience} (wrapped in PatientPruner)"
        return settings


class _StepWindow(_Wrappable):
    n_startup_trials: int = Field(default=2, ge=0)
    """Trials that finish before it prunes any."""
    n_warmup_steps: int = Field(default=0, ge=0)
    """Grid points (evaluations; steps under evaluation.strategy steps) before a trial may be
    pruned."""
    interval_steps: int = Field(default=1, ge=1)
    """Grid points between pruning checks."""


class NoPrunerConfig(_PrunerBase):
    type: Literal["none"]
    title: ClassVar[str] = "none"

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.NopPruner()

    def describe(self) -> str:
        return "none (every trial ran to its planned end unless it diverged)"


class MedianPrunerConfig(_StepWindow):
    type: Literal["median"]
    title: ClassVar[str] = "median"

    def _inner(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.MedianPruner(
            n_startup_trials=self.n_startup_trials,
            n_warmup_steps=self.n_warmup_steps,
            interval_steps=self.interval_steps,
        )


class PercentilePrunerConfig(_StepWindow):
    type: Literal["percentile"]
    title: ClassVar[str] = "percentile"
    percentile: float = Field(default=25.0, ge=0.0, le=100.0)
    """A trial outside this best percentile of the others at the same grid point is pruned."""

    def _inner(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.PercentilePruner(
            self.percentile,
            n_startup_trials=self.n_startup_trials,
            n_warmup_steps=self.n_warmup_steps,
            interval_steps=self.interval_steps,
        )


class SuccessiveHalvingPrunerConfig(_Wrappable):
    type: Literal["successive_halving"]
    title: ClassVar[str] = "successive_halving"
    min_resource: int | Literal["auto"] = "auto"
    """Grid points before the first rung (auto: Optuna's estimate)."""
    reduction_factor: int = Field(default=3, ge=2)
    """Each rung keeps 1/reduction_factor of the trials."""
    min_early_stopping_rate: int = Field(default=0, ge=0)
    """Skips this many rungs at the start."""

    def _inner(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=self.min_resource,
            reduction_factor=self.reduction_factor,
            min_early_stopping_rate=self.min_early_stopping_rate,
        )


class HyperbandPrunerConfig(_Wrappable):
    type: Literal["hyperband"]
    title: ClassVar[str] = "hyperband"
    min_resource: int = Field(default=1, ge=1)
    """Grid points before the first rung of every bracket."""
    max_resource: int | Literal["auto"] = "auto"
    """The grid points of a whole trial (auto: from the first finished trial)."""
    reduction_factor: int = Field(default=3, ge=2)
    """Each rung keeps 1/reduction_factor of the trials."""

    def _inner(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.HyperbandPruner(
            min_resource=self.min_resource,
            max_resource=self.max_resource,
            reduction_factor=self.reduction_factor,
        )


class RankPruner(optuna.pruners.BasePruner):
    """Stops a trial that is not among the best at its grid point, counting every trial that
    reached that point (finished, pruned or still running), as successive halving and ASHA
    rank a rung: so a trial is stopped even when most trials so far are bad, where the
    median of finished trials is a low bar. The best ``keep_top`` at a grid point always go
    on (the configurations ``sweeper confirm --top`` re-trains need finished trials), and
    so does the best ``keep_fraction`` of them. Each trial is ranked by its best value up to
    that grid point, the others by theirs."""

    # Of the other trials it reads only each one's best value up to the grid point it judges:
    # a worker hands it that, one row per trial (sweeper.runtime.worker_reads).
    grid_point_read: ClassVar[str] = "best up to the step"

    def __init__(self, keep_top: int, keep_fraction: float, n_warmup_steps: int):
        self.keep_top, self.keep_fraction = keep_top, keep_fraction
        self.n_warmup_steps = n_warmup_steps

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.n_warmup_steps:
            return False
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        mine = _best_up_to(trial.intermediate_values, step, maximize)
        if mine is None:
            return False
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        others = [
            best
            for other in study.get_trials(deepcopy=False, states=states)
            if other.number != trial.number and step in other.intermediate_values
            if (best := _best_up_to(other.intermediate_values, step, maximize)) is not None
        ]
        keep = max(self.keep_top, math.ceil(self.keep_fraction * (len(others) + 1)))
        better = sum(1 for value in others if (value > mine if maximize else value < mine))
        return better + 1 > keep


def _best_up_to(values: dict[int, float], step: int, maximize: bool) -> float | None:
    finite = [v for s, v in values.items() if s <= step and math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if maximize else min(finite)


class RankPrunerConfig(_Wrappable):
    type: Literal["rank"]
    title: ClassVar[str] = "rank"
    keep_top: int = Field(default=3, ge=1)
    """The best this many trials at a grid point always go on (default 3, `sweeper confirm
    --top`'s: enough finished trials to confirm)."""
    keep_fraction: float = Field(default=0.3, gt=0.0, le=1.0)
    """And so does this best share of the trials that reached the grid point."""
    n_warmup_steps: int = Field(default=1, ge=0)
    """Grid points (evaluations) before a trial may be ranked out (from grid point 1: the
    pruning benchmark's replay spent least so, and kept the winner)."""

    def _inner(self) -> optuna.pruners.BasePruner:
        return RankPruner(self.keep_top, self.keep_fraction, self.n_warmup_steps)


class ThresholdPrunerConfig(_Wrappable):
    type: Literal["threshold"]
    title: ClassVar[str] = "threshold"
    # A trial whose reported value leaves [lower, upper] is stopped.
    lower: float | None = None
    """Prune a trial whose value falls below this."""
    upper: float | None = None
    """Prune a trial whose value rises above this."""
    n_warmup_steps: int = Field(default=0, ge=0)
    """Grid points before a trial may be pruned."""
    interval_steps: int = Field(default=1, ge=1)
    """Grid points between pruning checks."""

    @model_validator(mode="after")
    def _bounded(self) -> ThresholdPrunerConfig:
        if self.lower is None and self.upper is None:
            raise ValueError(
                "the threshold pruner needs lower or upper, but got neither; set "
                "pruner.lower and/or pruner.upper"
            )
        return self

    def _inner(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.ThresholdPruner(
            lower=self.lower,
            upper=self.upper,
            n_warmup_steps=self.n_warmup_steps,
            interval_steps=self.interval_steps,
        )


PrunerConfig = Annotated[
    NoPrunerConfig
    | MedianPrunerConfig
    | PercentilePrunerConfig
    | SuccessiveHalvingPrunerConfig
    | HyperbandPrunerConfig
    | RankPrunerConfig
    | ThresholdPrunerConfig,
    Field(discriminator="type"),
]
# pruner.type -> its config model; a study file without pruner.type gets the median pruner.
PRUNER_TYPES: dict[str, type[_PrunerBase]] = {
    "none": NoPrunerConfig,
    "median": MedianPrunerConfig,
    "percentile": PercentilePrunerConfig,
    "successive_halving": SuccessiveHalvingPrunerConfig,
    "hyperband": HyperbandPrunerConfig,
    "rank": RankPrunerConfig,
    "threshold": ThresholdPrunerConfig,
}
DEFAULT_PRUNER = "median"

_ADAPTER: TypeAdapter[PrunerConfig] = TypeAdapter(PrunerConfig)


def pruner_config(settings: dict[str, Any]) -> PrunerConfig:
    """A pruner config from plain settings (``type`` defaults to the median pruner)."""
    return _ADAPTER.validate_python({"type": DEFAULT_PRUNER, **settings})


def build_pruner(config: PrunerConfig) -> optuna.pruners.BasePruner:
    return config.build()
