"""Where a trial is judged: the study's evaluation grid (:class:`EvaluationGrid`, the index a
trial reports to the pruner) and the near-chance rule (:class:`NearChance`, a trial that
still predicts the majority class after a share of its plan is dead)."""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sweeper.settings.config import StudyConfig

EvaluationHook = Callable[[int, float], bool]
# An epoch counts as ended when state.epoch is this close to a whole number.
EPOCH_TOLERANCE = 1e-4


@dataclass(frozen=True)
class EvaluationGrid:
    """Where a trial's evaluations fall on the study's common evaluation grid: the index a
    trial reports to the pruner, the same amount of training whatever its batch size.

    ``examples``: grid point k after k x ``evaluation.examples`` training examples (each step
    counted as a full batch x accumulation: an epoch's partial last batch counts as full);
    ``epoch``: the epoch number; ``steps``: the step itself. The extra evaluation at a last
    step between two grid points is off the grid (None): it counts for the trial's best
    value but is not reported, so the pruner never compares it with another trial's."""

    strategy: str
    examples_per_step: int
    examples_per_point: int | None = None

    @classmethod
    def of(cls, config: StudyConfig, params: dict[str, Any]) -> EvaluationGrid:
        return cls(
            strategy=config.evaluation.strategy,
            examples_per_step=config.examples_per_step(int(params["per_device_train_batch_size"])),
            examples_per_point=config.evaluation.examples,
        )

    @property
    def eval_steps(self) -> int | None:
        """The Trainer's eval_steps for this trial under ``examples`` (exact: the config
        checks that evaluation.examples is a multiple of every batch x accumulation)."""
        if self.strategy != "examples" or self.examples_per_point is None:
            return None
        return self.examples_per_point // self.examples_per_step

    def examples(self, step: int) -> int:
        return step * self.examples_per_step

    def index(self, step: int, epoch: float) -> int | None:
        if self.strategy == "examples" and self.examples_per_point:
            seen = self.examples(step)
            return seen // self.examples_per_point if seen % self.examples_per_point == 0 else None
        if self.strategy == "epoch":
            whole = round(epoch)
            return whole if whole >= 1 and abs(epoch - whole) < EPOCH_TOLERANCE else None
        return step

    def where(self, step: int, epoch: float) -> str:
        """A place in training in the cards' terms: "step 30 (480 examples, grid point 3)"."""
        point = self.index(step, epoch)
        if self.strategy == "examples":
            grid = f", grid point {point}" if point is not None else ", off the grid"
            return f"step {step} ({self.examples(step)} examples{grid})"
        if self.strategy == "epoch":
            return f"step {step} (epoch {round(epoch, 2):g}, {self.examples(step)} examples)"
        return f"step {step}"


def majority_rate(labels: Sequence[int]) -> float | None:
    """The share of the most frequent label (None for no labels): what near chance is
    measured from."""
    if not labels:
        return None
    return max(collections.Counter(int(label) for label in labels).values()) / len(labels)


@dataclass(frozen=True)
class NearChance:
    """``near_chance`` with the validation split's majority-class rate: a trial whose best
    accuracy is at most ``majority_rate + margin`` after ``at_fraction`` of its planned
    steps is stopped."""

    at_fraction: float
    margin: float
    majority_rate: float

    @classmethod
    def of(cls, config: StudyConfig, validation_labels: Sequence[int]) -> NearChance | None:
        rule = config.near_chance
        majority = majority_rate(validation_labels)
        if rule.at_fraction is None or majority is None:
            return None
        return cls(rule.at_fraction, rule.margin, majority)

    def stops(self, step: int, planned_steps: int, best_accuracy: float | None) -> bool:
        # No accuracy (none computed yet): nothing to judge the trial by.
        if best_accuracy is None or planned_steps <= 0 or step < self.at_fraction * planned_steps:
            return False
        return best_accuracy <= self.majority_rate + self.margin
