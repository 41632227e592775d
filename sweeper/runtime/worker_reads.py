"""What a worker reads of its study, narrowed to what each decision needs.

Optuna reads a study through its cache (``_CachedStorage``), which on every read loads each
trial not yet finished in full (parameters, attributes, curve). With a thousand trials
running, two reads happen where a worker needs none:

- ``study.ask`` looks for an enqueued trial with a read of every trial, then keeps only the
  WAITING ones: :class:`WorkerStorage` reads only those.
- A pruner judging one report reads every trial, then looks at one value of each, at one
  step: :func:`reading_at_grid_point` hands it that value of each trial instead, one row
  per trial (:mod:`sweeper.runtime.queries`), for the pruners that look at nothing else.

In a study that searches ``model.method`` those pruners rank a trial among the trials of its
own method only: LoRA trials start slower than full fine-tunes at the same grid point, and a
pruner comparing them with full ones would stop them for being LoRA, not for being bad
(docs/benchmarks/lora.md measures it). Successive halving and Hyperband keep their own
records and compare every trial.

The sampler's read of the study (once per trial start, Optuna's own) is left as it is:
sampling needs the trials.
"""

from __future__ import annotations

import datetime
from collections.abc import Container
from typing import Any

import optuna
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import FrozenTrial, TrialState

from sweeper.runtime.queries import ParamFilter
from sweeper.runtime.storage import ResilientRDBStorage

ALL_STATES = tuple(TrialState)


class WorkerStorage(_CachedStorage):
    """Optuna's cached storage, reading the queue alone when asked for the queue."""

    def __init__(self, backend: ResilientRDBStorage) -> None:
        super().__init__(backend)
        self.resilient = backend

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        if isinstance(states, tuple) and states == (TrialState.WAITING,):
            # The enqueued trials, each read whole; nothing else.
            return self.resilient._get_trials(study_id, states, set(), -1)
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)


def worker_storage(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """``storage`` as a worker's study should read it (sweeper's RDB storage wrapped in
    :class:`WorkerStorage`; any other storage as it is)."""
    if isinstance(storage, ResilientRDBStorage):
        return WorkerStorage(storage)
    return storage


# What a pruner reads of the other trials at the grid point it judges: their value at that
# step (the median and percentile pruners; the threshold pruner and none read nothing), or
# their best value up to it (sweeper's rank pruner, which says so: ``grid_point_read``).
AT_STEP = "value at the step"
BEST_UP_TO_STEP = "best up to the step"
_OPTUNA_AT_STEP = (
    optuna.pruners.PercentilePruner,  # MedianPruner among them
    optuna.pruners.ThresholdPruner,
    optuna.pruners.NopPruner,
)


def _grid_point_read(pruner: optuna.pruners.BasePruner) -> str | None:
    """What ``pruner`` needs at a grid point (AT_STEP, BEST_UP_TO_STEP), or None when it
    reads more (successive halving and Hyperband keep their own records on the trials)."""
    if isinstance(pruner, optuna.pruners.PatientPruner):
        inner = pruner._wrapped_pruner
        return AT_STEP if inner is None else _grid_point_read(inner)
    if isinstance(pruner, _OPTUNA_AT_STEP):
        return AT_STEP
    read = getattr(pruner, "grid_point_read", None)
    return read if read in (AT_STEP, BEST_UP_TO_STEP) else None


class _AtGridPoint:
    """The study as a pruner sees it at grid point ``step``: each trial it compares against
    with one value at ``step`` (the value there, or the best up to there, as ``read`` says)
    and nothing else; every other attribute is the study's."""

    def __init__(
        self,
        study: optuna.Study,
        storage: ResilientRDBStorage,
        step: int,
        read: str,
        same: ParamFilter | None = None,
    ):
        self._study, self._storage, self._step, self._read = study, storage, step, read
        self._same = same

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        wanted = tuple(state for state in ALL_STATES if states is None or state in states)
        study_id = self._study._study_id
        if self._read == BEST_UP_TO_STEP:
            maximize = self._study.direction == optuna.study.StudyDirection.MAXIMIZE
            values = self._storage.best_up_to_step(
                study_id, self._step, wanted, maximize, self._same
            )
        else:
            values = self._storage.values_at_step(study_id, self._step, wanted, self._same)
        return [
            FrozenTrial(
                number=number,
                state=state,
                value=None,
                values=None,
                datetime_start=datetime.datetime.min,
                datetime_complete=None,
                params={},
                distributions={},
                user_attrs={},
                system_attrs={},
                intermediate_values={} if value is None else {self._step: value},
                trial_id=-1,
            )
            for number, (state, value) in sorted(values.items())
        ]


def _same_method(trial: FrozenTrial) -> ParamFilter | None:
    """The trial's method as Optuna stores it, where the study searches ``method``."""
    distribution = trial.distributions.get("method")
    if distribution is None or "method" not in trial.params:
        return None
    return "method", float(distribution.to_internal_repr(trial.params["method"]))


class _OwnMethod:
    """The study with the trials of ``trial``'s method only (a study that does not search
    ``method``: the study as it is)."""

    def __init__(self, study: optuna.Study, method: Any):
        self._study, self._method = study, method

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        return [t for t in trials if t.params.get("method") == self._method]


class _ReadingAtGridPoint(optuna.pruners.BasePruner):
    """A pruner given :class:`_AtGridPoint` instead of the whole study, with the trials of
    the judged trial's method only."""

    def __init__(self, pruner: optuna.pruners.BasePruner, read: str):
        self.pruner, self.read = pruner, read

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        storage = getattr(study._storage, "resilient", None)
        step = trial.last_step
        same = _same_method(trial)
        if storage is None or step is None:
            own: Any = study if same is None else _OwnMethod(study, trial.params["method"])
            return self.pruner.prune(own, trial)
        view: Any = _AtGridPoint(study, storage, step, self.read, same)
        return self.pruner.prune(view, trial)


def reading_at_grid_point(pruner: optuna.pruners.BasePruner) -> optuna.pruners.BasePruner:
    """``pruner``, reading one value per trial at the grid point it judges when that is all
    it looks at (median, percentile, rank, threshold, none, and PatientPruner around them);
    successive halving and Hyperband read the study as Optuna gives it."""
    read = _grid_point_read(pruner)
    return pruner if read is None else _ReadingAtGridPoint(pruner, read)
