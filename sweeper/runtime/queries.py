"""Reads that fetch only what a decision needs, in SQL, from an Optuna RDB storage.

Optuna's own read of a study (``study.get_trials``, through its cache) loads every trial
not yet finished, with its parameters, attributes and curve, on each call: with a thousand
trials running, a worker deciding whether to start one, or a pruner judging one report,
would read them all. The questions a worker asks are narrower:

- how many trials are finished, running and waiting (the budget): one ``GROUP BY`` row per
  state (:func:`state_counts`);
- which trials failed since the last one that finished (the failure streak): those rows only
  (:func:`failed_since_finished`);
- the trials a pruner compares against at its grid point: their value at that step
  (:func:`values_at_step`, the median and percentile pruners) or their best up to it
  (:func:`best_up_to_step`, the rank pruner), one row per trial.

Each takes an open SQLAlchemy session of the storage (the caller retries and commits).
"""

from __future__ import annotations

import datetime
from typing import Any

import sqlalchemy
from optuna.storages._rdb import models
from optuna.trial import TrialState
from sqlalchemy.orm import Session

# Optuna's ORM models, typed loosely: their columns are declared in ways mypy cannot follow.
Trial: Any = models.TrialModel
Value: Any = models.TrialIntermediateValueModel
Param: Any = models.TrialParamModel

# (parameter name, its value as Optuna stores it): only trials with this value are compared,
# as a pruner ranks a trial among those of its own fine-tuning method ("method", 1.0).
ParamFilter = tuple[str, float]


def _with_param(query: Any, same: ParamFilter | None) -> Any:
    if same is None:
        return query
    name, stored = same
    return query.join(
        Param,
        sqlalchemy.and_(
            Param.trial_id == Trial.trial_id,
            Param.param_name == name,
            Param.param_value == stored,
        ),
    )


def state_counts(session: Session, study_id: int) -> dict[TrialState, int]:
    """Trials of the study in each state (states with none are left out)."""
    rows = (
        session.query(Trial.state, sqlalchemy.func.count(Trial.trial_id))
        .filter(Trial.study_id == study_id)
        .group_by(Trial.state)
        .all()
    )
    return {TrialState(state): int(count) for state, count in rows}


def failed_since_finished(session: Session, study_id: int) -> list[int]:
    """Ids of the FAIL trials that ended after the study's last COMPLETE or PRUNED trial
    (in the order trials ended: completion time, then number), oldest first."""
    last = (
        session.query(Trial._datetime_complete_utc, Trial.number)
        .filter(Trial.study_id == study_id)
        .filter(Trial.state.in_((TrialState.COMPLETE, TrialState.PRUNED)))
        .order_by(
            Trial._datetime_complete_utc.desc().nulls_last(),
            Trial.number.desc(),
        )
        .first()
    )
    query = (
        session.query(
            Trial.trial_id,
            Trial._datetime_complete_utc,
            Trial.number,
        )
        .filter(Trial.study_id == study_id)
        .filter(Trial.state == TrialState.FAIL)
    )
    floor = datetime.datetime.min
    after = (floor, -1)
    if last is not None:
        after = (last[0] or floor, last[1])
        if last[0] is not None:
            query = query.filter(Trial._datetime_complete_utc >= last[0])
    ended = sorted((complete or floor, number, trial_id) for trial_id, complete, number in query)
    return [trial_id for complete, number, trial_id in ended if (complete, number) > after]


def values_at_step(
    session: Session,
    study_id: int,
    step: int,
    states: tuple[TrialState, ...],
    same: ParamFilter | None = None,
) -> dict[int, tuple[TrialState, float | None]]:
    """Trial number -> (state, its value at ``step``, None where it has none) for every
    trial in ``states`` (with parameter value ``same``, when given): one row per trial."""
    rows = _with_param(
        session.query(
            Trial.number, Trial.state, Value.intermediate_value, Value.intermediate_value_type
        )
        .outerjoin(Value, sqlalchemy.and_(Value.trial_id == Trial.trial_id, Value.step == step))
        .filter(Trial.study_id == study_id)
        .filter(Trial.state.in_(states)),
        same,
    )
    return {
        number: (
            TrialState(state),
            None if kind is None else Value.stored_repr_to_intermediate_value(stored, kind),
        )
        for number, state, stored, kind in rows
    }


def best_up_to_step(
    session: Session,
    study_id: int,
    step: int,
    states: tuple[TrialState, ...],
    maximize: bool,
    same: ParamFilter | None = None,
) -> dict[int, tuple[TrialState, float | None]]:
    """Trial number -> (state, its best finite value at steps up to ``step``, None where it
    has none) for the trials in ``states`` that reported at ``step`` (with parameter value
    ``same``, when given): one row per trial."""
    reached = sqlalchemy.select(Value.trial_id).where(Value.step == step)
    finite = (
        Value.intermediate_value_type
        == models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
    )
    best = (sqlalchemy.func.max if maximize else sqlalchemy.func.min)(
        sqlalchemy.case((finite, Value.intermediate_value))
    )
    rows = _with_param(
        session.query(Trial.number, Trial.state, best)
        .join(Value, Value.trial_id == Trial.trial_id)
        .filter(Trial.study_id == study_id)
        .filter(Trial.state.in_(states))
        .filter(Trial.trial_id.in_(reached))
        .filter(Value.step <= step),
        same,
    ).group_by(Trial.trial_id, Trial.number, Trial.state)
    return {
        number: (TrialState(state), None if value is None else float(value))
        for number, state, value in rows
    }
