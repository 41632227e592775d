"""What a worker reads of its study, narrowed to what each decision needs.

Optuna reads a study through its cache (``_CachedStorage``), which on every read loads each
trial not yet finished in full (parameters, attributes, curve). With a thousand trials
running, two reads happen where a worker needs none:

- ``study.ask`` looks for an enqueued trial with a read of every trial, then keeps only the
  WAITING ones: :class:`WorkerStorage` reads only those.
- A pruner judging one report reads every trial, then looks at their values at one step:
  :func:`reading_at_grid_point` hands it the study's curves up to that step instead
  (:mod:`sweeper.runtime.queries`), for the pruners that look at nothing else.

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


# Optuna's pruners that look at nothing but the trials' reported values (and the study's
# direction); a pruner of sweeper's says so itself (``reads_curves_only = True``).
_CURVE_PRUNERS = (
    optuna.pruners.PercentilePruner,  # MedianPruner among them
    optuna.pruners.ThresholdPruner,
    optuna.pruners.NopPruner,
)


def _reads_curves_only(pruner: optuna.pruners.BasePruner) -> bool:
    if isinstance(pruner, optuna.pruners.PatientPruner):
        inner = pruner._wrapped_pruner
        return inner is None or _reads_curves_only(inner)
    return isinstance(pruner, _CURVE_PRUNERS) or getattr(pruner, "reads_curves_only", False)


class _CurvesAtStep:
    """The study as a curve-only pruner sees it at grid point ``step``: its trials with
    their values up to ``step`` and nothing else; every other attribute is the study's."""

    def __init__(self, study: optuna.Study, storage: ResilientRDBStorage, step: int):
        self._study, self._storage, self._step = study, storage, step

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        wanted = tuple(state for state in ALL_STATES if states is None or state in states)
        curves = self._storage.curves_up_to(self._study._study_id, self._step, wanted)
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
                intermediate_values=curve,
                trial_id=-1,
            )
            for number, (state, curve) in sorted(curves.items())
        ]


class _AtGridPoint(optuna.pruners.BasePruner):
    """A curve-only pruner given :class:`_CurvesAtStep` instead of the whole study."""

    def __init__(self, pruner: optuna.pruners.BasePruner):
        self.pruner = pruner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        storage = getattr(study._storage, "resilient", None)
        step = trial.last_step
        if storage is None or step is None:
            return self.pruner.prune(study, trial)
        view: Any = _CurvesAtStep(study, storage, step)
        return self.pruner.prune(view, trial)


def reading_at_grid_point(pruner: optuna.pruners.BasePruner) -> optuna.pruners.BasePruner:
    """``pruner``, reading only the curves at the grid point it judges when that is all it
    looks at (median, percentile, rank, threshold, none, and PatientPruner around them);
    successive halving and Hyperband, which keep their own records on the trials, read the
    study as Optuna gives it."""
    return _AtGridPoint(pruner) if _reads_curves_only(pruner) else pruner
