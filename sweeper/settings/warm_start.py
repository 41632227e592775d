"""Warm start: the earlier studies a new study starts from (the study file's ``warm_start``
section), and how their configurations are carried into the new search space.

A source's configuration is mapped parameter by parameter (:func:`map_into_space`): a value
outside the new range is clipped to it, a categorical value not among the new choices is
dropped (the sampler draws it), a parameter the new space does not search is dropped, and one
the source did not search is drawn by the sampler; every mapping that changes something is
one line. The same rules turn the sources' finished trials into observations for the
sampler (:func:`observation_params`, :func:`source_trials`), except that a parameter the
source did not search takes the value it was fixed at there: that is what those trials ran
with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import Field, field_validator, model_validator

from sweeper.credentials import without_credentials
from sweeper.settings.hyperparameters import (
    Choices,
    FloatRange,
    IntRange,
    ParamSpace,
    ParamSpec,
    distribution,
    is_searched,
    label,
    named,
)
from sweeper.settings.samplers import SOURCE_SYSTEM_ATTR
from sweeper.settings.strict import StrictModel

STUDY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class WarmStartSource(StrictModel):
    """One earlier study: by name in this study's storage, or by name and storage URL."""

    study: str = Field(pattern=STUDY_NAME_PATTERN)
    """The earlier study's name."""
    storage: str | None = None
    """Its storage URL when it is not in this study's storage (read once, when the study is
    created; the URL's password is never stored: give it through PGPASSWORD or ~/.pgpass)."""

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        # "NAME" or "NAME@STORAGE_URL", as --warm-start takes it: a study name holds no "@",
        # so the first one ends it (a URL's own user@host comes after).
        if isinstance(value, str):
            name, separator, storage = value.partition("@")
            if separator and not storage:
                raise ValueError(f"{value!r} names no storage after '@'; give NAME or NAME@URL")
            return {"study": name, "storage": storage or None}
        return value

    def label(self) -> str:
        """How lines and views name the source: the study, and its storage without a
        password when it is another one."""
        if self.storage is None:
            return self.study
        return f"{self.study}@{without_credentials(self.storage)}"


class WarmStartConfig(StrictModel):
    """Start from what earlier studies learned: their best configurations are enqueued after
    the baselines, and (with ``sampler``) their finished trials inform TPE."""

    sources: list[WarmStartSource] = Field(default_factory=list)
    """Earlier studies: NAME (in this study's storage; with the default SQLite storage, the
    source's own runs/NAME/study.db under output_dir), NAME@STORAGE_URL, or {study, storage}."""
    top: int = Field(default=3, ge=0)
    """How many of the sources' best distinct configurations are enqueued (each source's
    confirmed winner first where `sweeper confirm` ran, then by value, the sources taking
    turns); they count against the budget, as baselines do."""
    sampler: bool = True
    """The sources' finished trials also inform TPE, as observations that are not trials of
    this study (they never count, win or show); false: enqueue only."""
    source_weight: float = Field(default=0.5, gt=0.0, le=1.0)
    """What one source observation weighs in TPE's model, against 1 for one of this study's
    own trials."""

    @field_validator("sources")
    @classmethod
    def _distinct(cls, sources: list[WarmStartSource]) -> list[WarmStartSource]:
        seen = set()
        for source in sources:
            key = (source.study, source.storage)
            if key in seen:
                raise ValueError(f"names {source.label()!r} twice; give each source once")
            seen.add(key)
        return sources


@dataclass
class MappedParams:
    """A source configuration in the new search space, and one line per change."""

    params: dict[str, float | int]
    notes: list[str] = field(default_factory=list)


def _clip(spec: FloatRange | IntRange, value: float) -> float | int:
    if isinstance(spec, FloatRange):
        return min(max(float(value), spec.low), spec.high)
    # Onto the integer grid low, low + step, ...: its top is the last point not above high
    # (Optuna's own IntDistribution shrinks high onto the grid the same way).
    top = spec.low + ((spec.high - spec.low) // spec.step) * spec.step
    steps = round((min(max(float(value), spec.low), top) - spec.low) / spec.step)
    return spec.low + int(steps) * spec.step


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _mapped_value(name: str, spec: ParamSpec, value: Any) -> tuple[Any | None, str | None]:
    """(the value in the new space or None when dropped, a line when anything changed)."""
    text_choices = isinstance(spec, Choices) and all(isinstance(c, str) for c in spec.choices)
    if isinstance(value, str) and isinstance(spec, Choices) and text_choices:  # a method
        if value in spec.choices:
            return value, None
        return None, f"{name}={value!r} is not among the choices {spec.choices}: sampled"
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None, f"{name}={value!r} is not a number: sampled"
    if isinstance(spec, Choices):
        for choice in spec.choices:
            if not isinstance(choice, (str, list)) and math.isclose(float(value), float(choice)):
                return choice, None  # the choice itself: Optuna matches choices exactly
        return None, f"{name}={_shown(value)} is not among the choices {spec.choices}: sampled"
    if not isinstance(spec, (FloatRange, IntRange)):
        return None, None  # a fixed value: never reached (callers pass searched specs)
    clipped = _clip(spec, value)
    if math.isclose(float(clipped), float(value)):
        return (int(clipped) if isinstance(spec, IntRange) else value), None
    if spec.low <= value <= spec.high:
        return clipped, f"{name}={_shown(value)} is off the step {spec.step}: snapped to {clipped}"  # type: ignore[union-attr]
    return clipped, (
        f"{name}={_shown(value)} lies outside [{_shown(spec.low)}, {_shown(spec.high)}]: "
        f"clipped to {_shown(clipped)}"
    )


def in_target_names(
    params: Mapping[str, Any],
    source: ParamSpace | None,
    source_fixed: Mapping[str, Any],
    target: ParamSpace,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A source trial's parameters and the source's fixed values under the target's Optuna
    names: by hyperparameter and the trial's method (a LoRA study's ``learning_rate`` is a
    study searching the method's ``lora_learning_rate``), and the source trial's method
    given where the target samples it. A name the target lacks stays as it was (dropped,
    and said, by :func:`map_into_space`)."""
    if source is None:
        return dict(params), dict(source_fixed)
    method = source.method_of({**source_fixed, **params}) or "full"

    def renamed(values: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in values.items():
            entry = named(key)[1]
            here = target.optuna_name(entry.name, method) if entry is not None else None
            out[here or key] = value
        return out

    moved, fixed = renamed(params), renamed(source_fixed)
    if is_searched(target.specs().get("method", "full")) and "method" not in moved:
        moved["method"] = method
    return moved, fixed


def _same(here: Any, value: Any) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (here, value))
    return math.isclose(float(here), float(value)) if numbers else bool(here == value)


def map_into_space(
    params: Mapping[str, Any], space: ParamSpace, source_fixed: Mapping[str, Any]
) -> MappedParams:
    """A source trial's configuration, to enqueue in ``space``: the parameters ``space``
    searches, clipped or dropped as the module says; ``source_fixed`` (what the source fixed)
    only names what a dropped or sampled parameter was."""
    mapped = MappedParams(params={})
    specs = space.specs()
    for name, value in params.items():
        if name not in specs or not is_searched(specs[name]):
            here = specs.get(name)
            if here is not None and _same(here, value):
                continue  # fixed here at the source's value: nothing changes
            mapped.notes.append(
                f"{name}={_shown(value)}: not searched here"
                + (f" (fixed at {_shown(here)})" if here is not None else "")
                + ": dropped"
            )
    for name, spec in specs.items():
        if not is_searched(spec):
            continue
        if name not in params:
            fixed = source_fixed.get(name)
            was = f" (fixed at {_shown(fixed)} there)" if fixed is not None else ""
            mapped.notes.append(f"{name}: not searched by the source{was}: sampled")
            continue
        value, note = _mapped_value(name, spec, params[name])
        if value is not None:
            mapped.params[name] = value
        if note:
            mapped.notes.append(note)
    return mapped


def observation_params(
    params: Mapping[str, Any], space: ParamSpace, source_fixed: Mapping[str, Any]
) -> dict[str, float | int]:
    """A source trial's parameters as an observation for the sampler: as
    :func:`map_into_space`, but a parameter the source did not search takes the value the
    source fixed it at (what the trial ran with), mapped the same way."""
    filled = {**{k: v for k, v in source_fixed.items() if k not in params}, **params}
    return map_into_space(filled, space, source_fixed).params


def source_trials(rows: Sequence[Mapping[str, Any]], space: ParamSpace) -> list[FrozenTrial]:
    """The stored observations (``warm_start_trials``) as finished trials for the sampler:
    numbered below 0 in their order (never a trial of this study; TPE weighs older trials
    less once it has more than 25), each with the parameters it has in ``space``'s
    distributions."""
    distributions = {
        name: dist
        for name, spec in space.specs().items()
        if (dist := distribution(spec)) is not None
    }
    trials = []
    for index, row in enumerate(rows):
        params = {k: v for k, v in dict(row["params"]).items() if k in distributions}
        state = TrialState.COMPLETE if row["state"] == "COMPLETE" else TrialState.PRUNED
        step = row.get("step")
        trial = optuna.trial.create_trial(
            state=state,
            value=float(row["value"]) if state == TrialState.COMPLETE else None,
            params=params,
            distributions={name: distributions[name] for name in params},
            intermediate_values=(
                {int(step): float(row["value"])}
                if state == TrialState.PRUNED and step is not None and row.get("value") is not None
                else None
            ),
            system_attrs={SOURCE_SYSTEM_ATTR: str(row.get("source"))},
        )
        trial.number = index - len(rows)  # -len(rows) ... -1: the last row is the newest
        trials.append(trial)
    return trials


def describe_params(params: Mapping[str, Any]) -> str:
    """A configuration on one line, with the terminal's short labels."""
    return ", ".join(f"{label(name)} {_shown(value)}" for name, value in params.items())
