"""What ``sweeper confirm`` found, as stored in the study's companion study.

``sweeper confirm STUDY`` re-trains the sweep's best configurations and its baselines with
fresh seeds, as trials of a companion study ``<study>.confirm`` in the same storage (not of
the sweep's own study, where they would count against its budget, steer its sampler and
pruner, and let a lucky seed become its best trial). When every re-run has finished and
the test split has been evaluated, the result is stored on the companion study as the user
attribute ``confirmation`` in the form of :class:`Confirmation`. :func:`load_confirmation`
is the one way the views (``best``, ``report``, ``card``, ``export``) read it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial
from pydantic import Field

from sweeper.attributes import (
    CONFIRMATION_ATTR,
)
from sweeper.settings.config import DatasetConfig
from sweeper.settings.strict import StrictModel

CONFIRM_SUFFIX = ".confirm"
# Written when confirmation first starts, so a rerun re-trains the same configurations.


def companion_name(study_name: str) -> str:
    return f"{study_name}{CONFIRM_SUFFIX}"


class SplitScores(StrictModel):
    """One run's scores on one split, at the evaluation it kept (its best validation)."""

    loss: float | None = None
    accuracy: float | None = None
    f1: float | None = None


class Run(StrictModel):
    """One re-run of a configuration with one seed: a trial of the companion study."""

    seed: int
    trial: int  # its number in the companion study
    objective: float  # the study's objective at the kept evaluation (validation)
    validation: SplitScores
    test: SplitScores | None = None  # None without a test split, or not evaluated yet
    best_checkpoint: str | None = None


class Spread(StrictModel):
    """Mean and standard deviation over seeds (std: sample, n - 1; None for one seed)."""

    mean: float
    std: float | None
    n: int


class ConfirmedConfig(StrictModel):
    """A configuration (every hyperparameter but the seed) and its re-runs."""

    id: str  # "c1", "c2", ... for candidates; "baseline:<name>" for baselines
    role: Literal["candidate", "baseline"]
    name: str  # "trial #7" or the baseline's name
    params: dict[str, Any]  # without the seed
    source_trials: list[int]  # sweep trials with these params (any seed)
    selected_value: float | None  # the sweep's single-seed value that selected it
    runs: list[Run]
    objective: Spread  # validation objective over seeds
    accuracy: Spread | None = None  # validation accuracy over seeds
    test_loss: Spread | None = None
    test_accuracy: Spread | None = None
    test_f1: Spread | None = None

    @property
    def optimism(self) -> float | None:
        """Selected minus confirmed mean: how much luck the selection picked up."""
        if self.selected_value is None:
            return None
        return self.selected_value - self.objective.mean


class Comparison(StrictModel):
    """The winner against one baseline, paired by seed (same seeds on both sides)."""

    baseline: str  # the baseline's name
    quantity: str  # what was compared: "validation_loss", "test_accuracy", ...
    mean_difference: float  # winner minus baseline
    ci95: tuple[float, float]  # t interval of the paired differences
    n: int
    verdict: str  # one sentence: "better than card-B", "not distinguishable from card-A"

    def text(self, winner: str) -> str:
        """The comparison in words, without the verdict (each view sets that off its way)."""
        low, high = self.ci95
        return (
            f"{winner} minus {self.baseline} on {self.quantity}: {self.mean_difference:+.4f} "
            f"(95% CI {low:+.4f} to {high:+.4f}, {self.n} paired seeds)"
        )


class Confirmation(StrictModel):
    study: str
    metric: str
    direction: Literal["minimize", "maximize"]
    seeds: list[int]
    top_k: int
    configs: list[ConfirmedConfig]
    winner: str  # the id of the config with the best mean objective
    # The winner's seed whose validation objective is the median of its seeds: what
    # ``sweeper export`` exports.
    export_seed: int
    comparisons: list[Comparison]
    notes: list[str] = Field(
        default_factory=list
    )  # e.g. "only 2 finished configurations, not the 3 asked for"

    def config(self, config_id: str) -> ConfirmedConfig:
        return next(config for config in self.configs if config.id == config_id)

    @property
    def winning(self) -> ConfirmedConfig:
        return self.config(self.winner)

    @property
    def export_run(self) -> Run:
        return next(run for run in self.winning.runs if run.seed == self.export_seed)


def load_confirmation(study: optuna.Study) -> Confirmation | None:
    """The stored confirmation of ``study`` (the sweep's study), or None when confirmation
    has not run or not finished."""
    storage = study._storage
    try:
        companion = optuna.load_study(study_name=companion_name(study.study_name), storage=storage)
    except KeyError:
        return None
    stored = companion.user_attrs.get(CONFIRMATION_ATTR)
    if stored is None:
        return None
    return Confirmation.model_validate(stored)


def load_confirmed_run(study: optuna.Study) -> tuple[Confirmation, FrozenTrial] | None:
    """The stored confirmation of ``study`` and the companion trial of its exported run
    (the winner's median seed), or None when there is no confirmation."""
    confirmation = load_confirmation(study)
    if confirmation is None:
        return None
    companion = optuna.load_study(
        study_name=companion_name(study.study_name), storage=study._storage
    )
    number = confirmation.export_run.trial
    trial = next(t for t in companion.get_trials(deepcopy=False) if t.number == number)
    return confirmation, trial


def spread_text(value: Spread | None, number: Callable[[float], str] = lambda x: f"{x:.4f}") -> str:
    """``0.6912 ± 0.0031`` (``± -`` for one seed; ``-`` for none); ``number`` writes each
    number (4 decimals by default, as the card's tables)."""
    if value is None:
        return "-"
    std = number(value.std) if value.std is not None else "-"
    return f"{number(value.mean)} ± {std}"


def on_validation(metric: str) -> str:
    """``validation_loss``, ``validation accuracy``: the metric, named with its split."""
    return metric if metric.startswith("validation") else f"validation {metric}"


def describe_test_split(dataset: DatasetConfig) -> str | None:
    """How the confirmation table, the report and the model card name the test split (one
    wording for all of them); None without one."""
    if dataset.test_split:
        return f"the {dataset.test_split!r} split"
    if dataset.test_fraction:
        return (
            f"a stratified {dataset.test_fraction:.0%} of {dataset.train_split!r} held out "
            f"(split seed {dataset.split_seed})"
        )
    return None


def validation_quantity(metric: str) -> str:
    """The objective on the validation split: ``validation_loss``, ``validation_accuracy``."""
    return metric if metric.startswith("validation_") else f"validation_{metric}"
