"""Warm start at creation: the sources read once, checked, and planned.

:func:`plan_warm_start` runs in the pre-flight check of a study that is not in its storage
yet (a study that is has its plan stored, and nothing reaches the sources again). For each
source in ``warm_start.sources`` it opens the source's storage, reads the study and its
confirmed winner (in its ``<name>.confirm`` study, where `sweeper confirm` ran), and checks it: a missing study, another
objective metric or direction is one line each among the pre-flight's problems (exit 2,
nothing written). A source on another task (data, length, model) is allowed, and the plan
says what differs.

The plan (:class:`WarmStartPlan`) holds what ``ensure_study`` writes with the study: the
configurations to enqueue after the baselines (``top`` of them, each source's confirmed
winner first, then by value, the sources taking turns; mapped into the new search space by
:func:`sweeper.settings.warm_start.map_into_space`), every line said, and the sources'
finished trials as observations for the sampler, in the new space, without a storage URL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeper.attributes import STUDY_READY_ATTR
from sweeper.errors import StorageError
from sweeper.records.warm_start import SourceStudy, read_source, task_differences
from sweeper.runtime.storage import reading_storage, redact
from sweeper.settings.config import StudyConfig
from sweeper.settings.hyperparameters import config_key
from sweeper.settings.samplers import learns_from_sources
from sweeper.settings.warm_start import (
    WarmStartSource,
    describe_params,
    in_target_names,
    map_into_space,
    observation_params,
)

# The most recent finished trials of one source the sampler models (and the study stores).
MAX_OBSERVATIONS_PER_SOURCE = 1000


@dataclass
class WarmStartPlan:
    """What a warm-started study writes when it is created (see the module's docstring)."""

    sources: list[dict[str, Any]] = field(default_factory=list)
    enqueued: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The study's ``warm_start`` attribute: sources, what was enqueued, every line."""
        return {"sources": self.sources, "enqueued": self.enqueued, "notes": self.notes}


@dataclass
class _ReadSource:
    source: WarmStartSource
    study: SourceStudy
    attrs: dict[str, Any]


def _target_is_ready(config: StudyConfig) -> bool:
    """Whether the study is already in its storage, complete (then its plan is stored)."""
    try:
        with reading_storage(config.storage_url) as storage:
            if storage is None:
                return False  # no database or no tables yet
            study_id = storage.get_study_id_from_name(config.name)
            return bool(storage.get_study_user_attrs(study_id).get(STUDY_READY_ATTR))
    except KeyError:
        return False
    except StorageError:  # unreachable: the pre-flight says so
        return False


def _source_storage_url(source: WarmStartSource, config: StudyConfig) -> str:
    """Where a source is: its own storage URL, else this study's storage; with the default
    storage (one SQLite file per study under output_dir) the source's own file there."""
    if source.storage:
        return source.storage
    if config.storage:
        return config.storage_url
    return f"sqlite:///{(Path(config.output_dir) / source.study / 'study.db').resolve()}"


def _read(source: WarmStartSource, config: StudyConfig) -> _ReadSource | str:
    """The source study, or the one line that says why it cannot be read."""
    url = _source_storage_url(source, config)
    where = redact(url)
    if source.study == config.name and url == config.storage_url:
        return f"warm_start.sources: {source.study!r} is this study itself; name an earlier study"
    try:
        with reading_storage(url) as storage:
            if storage is None:
                return (
                    f"warm_start.sources: no study named {source.study!r} in {where} (it "
                    "holds no study)"
                )
            return _read_from(storage, source, where)
    except StorageError as exc:
        return f"warm_start.sources: {source.label()!r} cannot be read: {exc}"


def _read_from(storage: Any, source: WarmStartSource, where: str) -> _ReadSource | str:
    try:
        study = optuna.load_study(study_name=source.study, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        return (
            f"warm_start.sources: no study named {source.study!r} in {where}; studies "
            f"there: {names or 'none'}"
        )
    if len(study.directions) != 1:
        return (
            f"warm_start.sources: {source.label()!r} is multi-objective; warm start from "
            "a study with one objective"
        )
    return _ReadSource(source, read_source(study), dict(study.user_attrs))


def _mismatch(read: _ReadSource, config: StudyConfig) -> str | None:
    """One line when the source optimized something else than this study."""
    metric, direction = config.objective.metric, config.objective.study_direction
    source = read.study
    if source.metric is not None and source.metric != metric:
        return (
            f"warm_start.sources: {read.source.label()!r} optimized {source.metric}, this "
            f"study objective.metric={metric!r}; warm start from a study of the same metric"
        )
    if source.direction != direction:
        return (
            f"warm_start.sources: {read.source.label()!r} is to {source.direction} its "
            f"objective, this study to {direction}; warm start from a study of the same direction"
        )
    return None


def plan_warm_start(
    config: StudyConfig, target_fingerprints: dict[str, str] | None = None
) -> tuple[WarmStartPlan | None, list[str]]:
    """(the plan, the problems): no plan without sources or for a study that exists
    already; every problem is one line for the pre-flight check."""
    if not config.warm_start.sources or _target_is_ready(config):
        return None, []
    reads, problems = [], []
    for source in config.warm_start.sources:
        read = _read(source, config)
        if isinstance(read, str):
            problems.append(read)
        elif (problem := _mismatch(read, config)) is not None:
            problems.append(problem)
        else:
            reads.append(read)
    if problems:
        return None, problems
    return _plan(config, reads, target_fingerprints), []


def _plan(
    config: StudyConfig, reads: list[_ReadSource], fingerprints: dict[str, str] | None
) -> WarmStartPlan:
    plan = WarmStartPlan()
    names = [read.source.study for read in reads]
    for index, read in enumerate(reads):
        plan.sources.append(_describe_source(read, config, fingerprints, plan.notes))
        # Each source's values are scaled on their own (samplers.on_own_scale), so two
        # sources of one name in two storages keep apart.
        name = read.source.study
        source_id = name if names.count(name) == 1 else f"{name} (source {index + 1})"
        plan.observations += _observations(read, config, plan.notes, source_id)
    _enqueue_plan(config, reads, plan)
    warm = config.warm_start
    if not warm.sampler:
        plan.notes.append("warm_start.sampler is false: the sources' trials are not modelled")
    elif not learns_from_sources(config.sampler):
        plan.notes.append(
            f"sampler.type={config.sampler.type!r} learns from no trial: only the enqueued "
            "configurations carry the sources over"
        )
    else:
        plan.notes.append(
            f"the sampler models {len(plan.observations)} finished source trials, each weighing "
            f"{warm.source_weight:g} of one of this study's (they count towards "
            "sampler.n_startup_trials, and are never trials of this study)"
        )
    return plan


def _describe_source(
    read: _ReadSource, config: StudyConfig, fingerprints: dict[str, str] | None, notes: list[str]
) -> dict[str, Any]:
    source = read.study
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(source.counts.items()))
    differs = task_differences(source, read.attrs, config, fingerprints)
    winner = source.confirmed_winner
    notes.append(
        f"source {read.source.label()} ({counts or 'no trials'}"
        + (f"; confirmed winner #{winner}" if winner is not None else "")
        + "): "
        + ("the same task" if not differs else "task differs: " + "; ".join(differs))
    )
    if not source.ranked:
        notes.append(
            f"source {read.source.label()} has no complete trial: nothing enqueued from it"
            + (
                f" (its {len(source.finished)} pruned trials inform the sampler)"
                if source.finished
                else ""
            )
        )
    return {
        "study": source.name,
        "storage": None if read.source.storage is None else redact(read.source.storage),
        "trials": source.counts,
        "confirmed_winner": winner,
        "differs": differs,
    }


def _enqueue_plan(config: StudyConfig, reads: list[_ReadSource], plan: WarmStartPlan) -> None:
    """``top`` configurations, the sources taking turns, each mapped into the new space;
    one that maps onto a configuration already planned is passed over."""
    # A configuration equal to a baseline's would not be enqueued twice (skip_if_exists).
    taken = {config_key(params): f"baseline {name}" for name, params in config.baseline_params()}
    turns = zip_longest(*(_ranked(read) for read in reads))
    for trial, read in (pair for turn in turns for pair in turn if pair is not None):
        if len(plan.enqueued) >= config.warm_start.top:
            break
        params, fixed = _in_target(read, trial, config)
        mapped = map_into_space(params, config.space, fixed)
        key = config_key(mapped.params)
        origin = f"{read.source.study} #{trial.number}"
        if not mapped.params:
            plan.notes.append(f"{origin}: no parameter maps into this space: passed over")
            continue
        if key in taken:
            how = f" ({'; '.join(mapped.notes)})" if mapped.notes else ""
            plan.notes.append(
                f"{origin}{how} maps onto the configuration of {taken[key]}: passed over"
            )
            continue
        taken[key] = f"{origin} (enqueued)"
        winner = " (confirmed winner)" if trial.number == read.study.confirmed_winner else ""
        plan.enqueued.append({"source": origin, "params": mapped.params, "notes": mapped.notes})
        plan.notes.append(
            f"enqueued {origin}{winner}: {describe_params(mapped.params)}"
            + (f" ({'; '.join(mapped.notes)})" if mapped.notes else "")
        )


def _in_target(
    read: _ReadSource, trial: FrozenTrial, config: StudyConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A source trial's params and the source's fixed values, in this study's names."""
    source = read.study.config.space if read.study.config is not None else None
    return in_target_names(trial.params, source, read.study.fixed(), config.space)


def _ranked(read: _ReadSource) -> list[tuple[FrozenTrial, _ReadSource]]:
    return [(trial, read) for trial in read.study.ranked]


def _observations(
    read: _ReadSource, config: StudyConfig, notes: list[str], source_id: str
) -> list[dict[str, Any]]:
    """The source's finished trials in the new space, as stored for every worker's sampler:
    those with a value for every parameter the new study searches (TPE's joint model leaves
    out a trial that lacks one, after counting it among the good or the bad)."""
    incomplete: set[str] = set()
    rows = []
    for trial in read.study.finished[-MAX_OBSERVATIONS_PER_SOURCE:]:
        pruned = trial.state == TrialState.PRUNED
        step = max(trial.intermediate_values) if pruned and trial.intermediate_values else None
        value = trial.intermediate_values[step] if step is not None else trial.value
        if value is None or not math.isfinite(value):
            continue  # pruned before its first report, or diverged: nothing to model
        moved, fixed = _in_target(read, trial, config)
        params = observation_params(moved, config.space, fixed)
        # What a trial of its method samples here (a full trial has no LoRA settings).
        if missing := config.space.used_by(config.space.method_of(params)) - params.keys():
            incomplete |= missing
            continue
        rows.append(
            {
                "source": source_id,  # a name, never a storage URL
                "trial": trial.number,
                "state": trial.state.name,
                "value": float(value),
                "step": step,
                "params": params,
            }
        )
    if incomplete:
        left = len(read.study.finished) - len(rows)
        notes.append(
            f"source {read.source.label()}: {left} finished trial(s) have no value in this "
            f"space for {', '.join(sorted(incomplete))}: the sampler leaves them out"
        )
    return rows
