"""The searchable hyperparameters: one entry each in :data:`HYPERPARAMETERS`.

Everything that names a hyperparameter reads this table: the study file's ``search_space``
section (:data:`SearchSpace` is built from it), :func:`suggest_params` (what Optuna
samples), :func:`training_arguments` (what the Trainer gets), the terminal's short labels,
the report's axis titles and the model card's hyperparameter lines. Adding one is one
entry here (its ``TrainingArguments`` field, its bounds, its default, its names) plus a
test.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import Field, create_model, field_validator, model_validator

from sweeper.settings.strict import StrictModel


class FloatRange(StrictModel):
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> FloatRange:
        if not self.low < self.high:
            raise ValueError(f"low must be below high, but got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, but got low={self.low}")
        return self


class IntRange(StrictModel):
    low: int
    high: int
    step: int = 1

    @model_validator(mode="after")
    def _check(self) -> IntRange:
        if not self.low < self.high:
            raise ValueError(f"low must be below high, but got low={self.low}, high={self.high}")
        if self.step < 1:
            raise ValueError(f"step must be at least 1, but got step={self.step}")
        return self


class Choices(StrictModel):
    choices: list[float | int] = Field(min_length=1)


# A parameter is either fixed (a plain value) or searched (a range or a list of choices).
ParamSpec = FloatRange | IntRange | Choices | float | int


@dataclass(frozen=True, kw_only=True)
class Hyperparameter:
    """One searchable hyperparameter and every name it goes by."""

    name: str  # its key in the study file and in Optuna's params
    integer: bool  # whole numbers only (a batch size, a seed)
    default: ParamSpec  # the study file's default: fixed or searched
    # Allowed values: [minimum, maximum], or [minimum, maximum) when maximum_exclusive.
    minimum: float
    maximum: float = math.inf
    maximum_exclusive: bool = False
    # What the Trainer gets: TrainingArguments fields from the trial's value.
    to_arguments: Callable[[Any], dict[str, Any]]
    label: str = ""  # short, for one terminal line ("lr")
    title: str = ""  # an axis title with its unit
    card_name: str = ""  # as Hugging Face's Trainer card writes it ("train_batch_size")
    # The card leaves out a hyperparameter at this value, as the Trainer's cards do.
    card_omits: float | None = None
    # Baselines may exceed the range's high end; they are capped to it (card B planned 200
    # epochs, a study on a CPU searches 1-3).
    capped: bool = False
    # Why the bounds are what they are, for the error message ("a share of the steps").
    meaning: str = ""
    # One sentence for the study-file reference (sweeper.settings.reference).
    description: str = ""

    def bounds_text(self) -> str:
        upper = "inf" if math.isinf(self.maximum) else f"{self.maximum:g}"
        return f"[{self.minimum:g}, {upper}{')' if self.maximum_exclusive else ']'}"

    def within_bounds(self, value: float) -> bool:
        if value < self.minimum:
            return False
        return value < self.maximum if self.maximum_exclusive else value <= self.maximum


def _field(name: str, cast: Callable[[Any], Any]) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {name: cast(value)}


HYPERPARAMETERS: tuple[Hyperparameter, ...] = (
    Hyperparameter(
        name="learning_rate",
        integer=False,
        # Around the model cards' 1e-5 and 3e-5, wide enough for encoders smaller than
        # distilbert to find their optimum.
        default=FloatRange(low=1e-6, high=1e-3, log=True),
        minimum=0.0,
        to_arguments=_field("learning_rate", float),
        label="lr",
        title="learning rate",
        card_name="learning_rate",
        description="The peak learning rate of the linear schedule (the cards: 1e-5 and 3e-5).",
    ),
    Hyperparameter(
        name="per_device_train_batch_size",
        integer=True,
        default=Choices(choices=[8, 16, 32, 64]),
        minimum=1,
        to_arguments=_field("per_device_train_batch_size", int),
        label="batch",
        title="train batch size (examples/device)",
        card_name="train_batch_size",
        description="Training examples per step on one device.",
    ),
    Hyperparameter(
        name="num_train_epochs",
        integer=True,
        default=IntRange(low=1, high=5),
        minimum=1,
        to_arguments=_field("num_train_epochs", float),
        label="epochs",
        title="epochs (planned passes)",
        card_name="num_epochs",
        description="Planned passes over the training split; baselines above the space's maximum are capped to it.",
        capped=True,
    ),
    Hyperparameter(
        name="seed",
        integer=True,
        default=Choices(choices=[42, 7, 1234]),
        minimum=0,
        # The same seed orders the data (data_seed) as the cards' runs did.
        to_arguments=lambda value: {"seed": int(value), "data_seed": int(value)},
        label="seed",
        title="seed (id)",
        card_name="seed",
        description="The seed of the classification head's initialisation and of the data order.",
    ),
    Hyperparameter(
        name="warmup_ratio",
        integer=False,
        default=FloatRange(low=0.0, high=0.2),
        minimum=0.0,
        maximum=1.0,
        maximum_exclusive=True,
        # transformers 5 dropped `warmup_ratio` and reads a `warmup_steps` below 1 as that
        # share of the training steps: hence [0, 1).
        to_arguments=_field("warmup_steps", float),
        label="warmup",
        title="warmup (fraction of steps)",
        card_name="lr_scheduler_warmup_ratio",
        description="The share of the training steps the learning rate warms up over, in [0, 1).",
        card_omits=0.0,
        meaning="a share of the training steps",
    ),
    Hyperparameter(
        name="weight_decay",
        integer=False,
        default=FloatRange(low=0.0, high=0.1),
        minimum=0.0,
        to_arguments=_field("weight_decay", float),
        label="wd",
        title="weight decay (L2 coefficient)",
        card_name="weight_decay",
        description="AdamW's decoupled weight decay.",
        card_omits=0.0,
    ),
    Hyperparameter(
        name="label_smoothing_factor",
        integer=False,
        # Fixed at 0 (plain cross-entropy, as both cards) unless a study searches it.
        default=0.0,
        minimum=0.0,
        maximum=1.0,
        maximum_exclusive=True,
        to_arguments=_field("label_smoothing_factor", float),
        label="smooth",
        title="label smoothing (share of target mass spread)",
        card_name="label_smoothing_factor",
        description="The share of the target's probability spread over the other labels, in [0, 1); fixed at 0 (plain cross-entropy) unless searched.",
        card_omits=0.0,
        meaning="the share of the target's probability spread over the other labels",
    ),
)

BY_NAME = {hyperparameter.name: hyperparameter for hyperparameter in HYPERPARAMETERS}
SEARCHABLE_PARAMS = tuple(BY_NAME)


def hyperparameter(name: str) -> Hyperparameter:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(
            f"unknown hyperparameter {name!r}; expected one of {list(SEARCHABLE_PARAMS)}"
        ) from None


def _spec_values(spec: ParamSpec) -> list[tuple[str, float]]:
    """(how the value is named in the study file, the value) of each number in a spec."""
    if isinstance(spec, (FloatRange, IntRange)):
        return [("low", spec.low), ("high", spec.high)]
    if isinstance(spec, Choices):
        return [("choice", float(choice)) for choice in spec.choices]
    return [("", float(spec))]


def _check_spec(name: str, spec: ParamSpec) -> ParamSpec:
    entry = BY_NAME[name]
    if entry.integer:
        if isinstance(spec, FloatRange):
            raise ValueError(f"takes whole numbers; give low/high as integers, but got {spec}")
        for _, value in _spec_values(spec):
            if not float(value).is_integer():
                raise ValueError(f"expected whole numbers, but got {value:g}")
        if isinstance(spec, Choices):
            spec = Choices(choices=[int(choice) for choice in spec.choices])
        elif isinstance(spec, float):
            spec = int(spec)
    for where, value in _spec_values(spec):
        if not entry.within_bounds(value):
            meaning = f"is {entry.meaning} and " if entry.meaning else ""
            # A fixed value is shown by the error's formatter; a range's end is named here.
            given = f", but got {where}={value:g}" if where else ""
            raise ValueError(f"{meaning}must lie in {entry.bounds_text()}{given}")
    return spec


class SearchSpaceBase(StrictModel):
    """The ``search_space`` section: one key per entry of :data:`HYPERPARAMETERS`."""

    if TYPE_CHECKING:  # the fields are made from the table; to a type checker, any name

        def __init__(self, **specs: ParamSpec) -> None: ...

        def __getattr__(self, name: str) -> ParamSpec: ...

    def specs(self) -> dict[str, ParamSpec]:
        return {name: getattr(self, name) for name in SEARCHABLE_PARAMS}

    def spec(self, name: str) -> ParamSpec:
        return self.specs()[name]

    def max_epochs(self) -> int:
        epochs = self.spec("num_train_epochs")
        return epochs.high if isinstance(epochs, IntRange) else int(epochs)  # type: ignore[arg-type]

    @field_validator("*")
    @classmethod
    def _within_bounds(cls, value: Any, info: Any) -> Any:
        return _check_spec(info.field_name, value)


def _build_search_space() -> type[SearchSpaceBase]:
    fields: dict[str, Any] = {}
    for entry in HYPERPARAMETERS:
        kinds = (IntRange | Choices | int) if entry.integer else (FloatRange | Choices | float)
        fields[entry.name] = (kinds, entry.default)
    return create_model("SearchSpace", __base__=SearchSpaceBase, **fields)


if TYPE_CHECKING:
    SearchSpace = SearchSpaceBase
else:
    SearchSpace = _build_search_space()


def candidate_values(spec: ParamSpec) -> list[float | int]:
    """Every value an integer spec can take; a float range's two ends."""
    if isinstance(spec, IntRange):
        return list(range(spec.low, spec.high + 1, spec.step))
    if isinstance(spec, FloatRange):
        return [spec.low, spec.high]
    if isinstance(spec, Choices):
        return list(spec.choices)
    return [spec]


def is_searched(spec: ParamSpec) -> bool:
    return isinstance(spec, (FloatRange, IntRange, Choices))


def distribution(spec: ParamSpec) -> BaseDistribution | None:
    """The Optuna distribution a searched spec is sampled from; None for a fixed value."""
    if isinstance(spec, FloatRange):
        return FloatDistribution(spec.low, spec.high, log=spec.log)
    if isinstance(spec, IntRange):
        return IntDistribution(spec.low, spec.high, step=spec.step)
    if isinstance(spec, Choices):
        return CategoricalDistribution(spec.choices)
    return None


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    """``trial.suggest_*`` for ``distribution``: the sampler's value, or an enqueued one."""
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, log=distribution.log, step=distribution.step
        )
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, list(distribution.choices))
    raise TypeError(f"unsupported distribution {distribution!r} for {name!r}")


def suggest_params(trial: optuna.Trial, space: SearchSpaceBase) -> dict[str, Any]:
    """Searched parameters come from the sampler (or an enqueued trial), fixed ones as given."""
    params: dict[str, Any] = {}
    for name, spec in space.specs().items():
        searched = distribution(spec)
        params[name] = spec if searched is None else suggest(trial, name, searched)
    return params


def training_arguments(params: dict[str, Any]) -> dict[str, Any]:
    """The ``TrainingArguments`` fields a trial's hyperparameters set."""
    arguments: dict[str, Any] = {}
    for name, value in params.items():
        arguments |= BY_NAME[name].to_arguments(value)
    return arguments


def fixed_params(space: SearchSpaceBase) -> dict[str, float | int]:
    """The study's fixed (not searched) hyperparameters."""
    return {
        name: spec
        for name, spec in space.specs().items()
        if isinstance(spec, (int, float)) and not isinstance(spec, bool)
    }


def label(name: str) -> str:
    entry = BY_NAME.get(name)
    return entry.label if entry else name


def param_title(name: str) -> str:
    entry = BY_NAME.get(name)
    return entry.title if entry else name


def config_key(params: Mapping[str, Any]) -> str:
    """What makes two configurations the same: every parameter but the seed."""
    return json.dumps({k: v for k, v in params.items() if k != "seed"}, sort_keys=True)
