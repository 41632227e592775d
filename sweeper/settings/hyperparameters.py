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
from dataclasses import dataclass, field
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


def yaml_number(value: Any) -> Any:
    """YAML 1.1 reads 1e-6 (no dot) as a string; people mean the number."""
    if isinstance(value, str):
        try:
            return (
                float(value)
                if value.strip().lower() not in {"nan", "inf", "-inf", "infinity"}
                else value
            )
        except ValueError:
            return value
    return value


class Choices(StrictModel):
    # Text choices are a fine-tuning method or a set of LoRA target modules (a list of module
    # names, stored as one comma-joined string: an Optuna categorical holds plain values).
    choices: list[float | int | str | list[str]] = Field(min_length=1)

    @field_validator("choices", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        # Before the union picks str for 1e-5 (a string to YAML 1.1): the number meant.
        return [yaml_number(choice) for choice in value] if isinstance(value, list) else value


# A parameter is either fixed (a plain value) or searched (a range or a list of choices).
ParamSpec = FloatRange | IntRange | Choices | float | int | str

# The ways a trial fine-tunes the model: every weight, or LoRA adapters (peft) beside frozen
# base weights. The first is the default.
METHODS = ("full", "lora")


class PerMethod(StrictModel):
    """One spec per fine-tuning method, for a study whose ``model.method`` is searched:
    ``learning_rate: {full: {low: 1e-5, high: 1e-4, log: true}, lora: {low: 1e-4, high: 3e-3,
    log: true}}``. Each method's trials sample their own Optuna parameter
    (``full_learning_rate``, ``lora_learning_rate``): a conditional search space, which a
    multivariate TPE models with ``sampler.group`` (on by default with ``multivariate``)."""

    full: FloatRange | IntRange | Choices | float | int
    lora: FloatRange | IntRange | Choices | float | int

    def for_method(self, method: str) -> ParamSpec:
        return self.full if method == "full" else self.lora


@dataclass(frozen=True, kw_only=True)
class Hyperparameter:
    """One searchable hyperparameter and every name it goes by."""

    name: str  # its key in Optuna's params (and in search_space, where it lives there)
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
    card_omits: float | str | None = None
    # Baselines may exceed the range's high end; they are capped to it (card B planned 200
    # epochs, a study on a CPU searches 1-3).
    capped: bool = False
    # Why the bounds are what they are, for the error message ("a share of the steps").
    meaning: str = ""
    # One sentence for the study-file reference (sweeper.settings.reference).
    description: str = ""
    # Where the study file sets it: a key of the search_space section, or a key of another
    # section (model.method, lora.r) that takes the same fixed-or-searched forms.
    home: str = "search_space"
    key: str = ""  # its key in ``home`` (default: ``name``)
    # The fine-tuning methods whose trials use it: a LoRA-only one is not sampled (and not
    # shown) for a full fine-tune.
    methods: tuple[str, ...] = METHODS
    # A text value (a method, a set of module names) instead of a number: the values
    # allowed (none: any), and how a value given as a list becomes one Optuna value.
    text: bool = False
    allowed: tuple[str, ...] = ()
    normalize: Callable[[Any], str] | None = None
    # Another default for the trials of a method, where the study file leaves the entry out
    # (LoRA's learning rates lie about 10x above a full fine-tune's).
    method_defaults: Mapping[str, ParamSpec] = field(default_factory=dict)

    @property
    def study_key(self) -> str:
        """Where the study file sets it: ``search_space.learning_rate``, ``lora.r``."""
        return f"{self.home}.{self.key or self.name}"

    def bounds_text(self) -> str:
        if self.text:
            return "one of " + ", ".join(self.allowed) if self.allowed else "module names"
        upper = "inf" if math.isinf(self.maximum) else f"{self.maximum:g}"
        return f"[{self.minimum:g}, {upper}{')' if self.maximum_exclusive else ']'}"

    def within_bounds(self, value: float) -> bool:
        if value < self.minimum:
            return False
        return value < self.maximum if self.maximum_exclusive else value <= self.maximum


def _field(name: str, cast: Callable[[Any], Any]) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {name: cast(value)}


def _shapes_the_model(value: Any) -> dict[str, Any]:
    """No TrainingArguments field: the value shapes the model (sweeper.trial.adapters)."""
    return {}


def module_set(value: Any) -> str:
    """A set of LoRA target modules as one Optuna value: ``[query, value]`` is
    ``"query,value"``; ``auto`` (the architecture's default) stays ``auto``."""
    items = [value] if isinstance(value, str) else list(value)
    names = [name.strip() for item in items for name in str(item).split(",")]
    if not names or any(not name for name in names):
        raise ValueError(f"expected module names, such as [query, value], but got {value!r}")
    if "auto" in names and len(names) > 1:
        raise ValueError(f"'auto' stands alone, not in a list with module names, but got {value!r}")
    return ",".join(names)


HYPERPARAMETERS: tuple[Hyperparameter, ...] = (
    Hyperparameter(
        name="learning_rate",
        integer=False,
        # Around the model cards' 1e-5 and 3e-5, wide enough for encoders smaller than
        # distilbert to find their optimum; LoRA adapters want about 10x more.
        default=FloatRange(low=1e-6, high=1e-3, log=True),
        method_defaults={"lora": FloatRange(low=1e-4, high=3e-3, log=True)},
        minimum=0.0,
        to_arguments=_field("learning_rate", float),
        label="lr",
        title="learning rate",
        card_name="learning_rate",
        description="The peak learning rate of the linear schedule (the cards: 1e-5 and 3e-5). Left out of a study with LoRA trials, theirs is {low: 1e-4, high: 3e-3, log: true} (with both methods searched: one range per method).",
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
    Hyperparameter(
        name="method",
        integer=False,
        text=True,
        allowed=METHODS,
        default="full",
        minimum=0.0,
        to_arguments=_shapes_the_model,
        label="method",
        title="fine-tuning method",
        card_name="finetuning_method",
        card_omits="full",
        home="model",
        description="How a trial fine-tunes: full (every weight, as the model cards) or lora (peft adapters on frozen weights, the lora section); {choices: [full, lora]} compares both in one study.",
    ),
    Hyperparameter(
        name="lora_r",
        integer=True,
        default=8,
        minimum=1,
        to_arguments=_shapes_the_model,
        label="r",
        title="LoRA rank",
        card_name="lora_r",
        home="lora",
        key="r",
        methods=("lora",),
        meaning="the rank of each adapter's update",
        description="The rank of each adapter's low-rank update (LoraConfig.r); at least 1.",
    ),
    Hyperparameter(
        name="lora_alpha",
        integer=True,
        default=16,
        minimum=1,
        to_arguments=_shapes_the_model,
        label="alpha",
        title="LoRA alpha (update scaled by alpha / r)",
        card_name="lora_alpha",
        home="lora",
        key="alpha",
        methods=("lora",),
        description="The adapters' scaling numerator, a whole number: the update is scaled by alpha / r (LoraConfig.lora_alpha).",
    ),
    Hyperparameter(
        name="lora_dropout",
        integer=False,
        default=0.1,
        minimum=0.0,
        maximum=1.0,
        maximum_exclusive=True,
        to_arguments=_shapes_the_model,
        label="ldrop",
        title="LoRA dropout (share of adapter inputs dropped)",
        card_name="lora_dropout",
        home="lora",
        key="dropout",
        methods=("lora",),
        meaning="a share of the adapter's inputs",
        description="Dropout on the adapters' inputs (LoraConfig.lora_dropout), in [0, 1).",
    ),
    Hyperparameter(
        name="lora_target_modules",
        integer=False,
        text=True,
        normalize=module_set,
        default="auto",
        minimum=0.0,
        to_arguments=_shapes_the_model,
        label="targets",
        title="LoRA target modules",
        card_name="lora_target_modules",
        home="lora",
        key="target_modules",
        methods=("lora",),
        description="The modules that get adapters: auto (BERT-like: query, value; DistilBERT: q_lin, v_lin; else peft's default for the architecture), a list of module names, or {choices: [[query, value], [query, key, value]]}.",
    ),
)

BY_NAME = {hyperparameter.name: hyperparameter for hyperparameter in HYPERPARAMETERS}
SEARCHABLE_PARAMS = tuple(BY_NAME)
# The entries of the search_space section, and those of another section (model, lora).
SEARCH_SPACE_PARAMS = tuple(e.name for e in HYPERPARAMETERS if e.home == "search_space")


def hyperparameter(name: str) -> Hyperparameter:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(
            f"unknown hyperparameter {name!r}; expected one of {list(SEARCHABLE_PARAMS)}"
        ) from None


def _spec_values(spec: ParamSpec) -> list[tuple[str, Any]]:
    """(how the value is named in the study file, the value) of each value in a spec."""
    if isinstance(spec, (FloatRange, IntRange)):
        return [("low", spec.low), ("high", spec.high)]
    if isinstance(spec, Choices):
        return [("choice", choice) for choice in spec.choices]
    return [("", spec)]


def _check_text(entry: Hyperparameter, spec: Any) -> ParamSpec:
    """A text entry: each value (fixed or a choice) normalised and among the allowed."""

    def one(value: Any) -> str:
        if not isinstance(value, (str, list)):
            raise ValueError(f"expected text, but got {value!r}")
        text = entry.normalize(value) if entry.normalize else value
        if not isinstance(text, str) or (entry.allowed and text not in entry.allowed):
            raise ValueError(f"expected one of {', '.join(entry.allowed)}, but got {value!r}")
        return text

    if isinstance(spec, Choices):
        return Choices(choices=list(dict.fromkeys(one(choice) for choice in spec.choices)))
    if isinstance(spec, (FloatRange, IntRange)):
        raise ValueError(f"takes text values or {{choices: [...]}}, not a range, but got {spec}")
    return one(spec)


def _check_spec(name: str, spec: ParamSpec) -> ParamSpec:
    entry = BY_NAME[name]
    if entry.text:
        return _check_text(entry, spec)
    for _, value in _spec_values(spec):
        if isinstance(value, (str, list)):
            raise ValueError(f"expected numbers, but got {value!r}")
    if entry.integer:
        if isinstance(spec, FloatRange):
            raise ValueError(f"takes whole numbers; give low/high as integers, but got {spec}")
        for _, value in _spec_values(spec):
            if not float(value).is_integer():
                raise ValueError(f"expected whole numbers, but got {value:g}")
        if isinstance(spec, Choices):
            spec = Choices(choices=[int(choice) for choice in spec.choices])  # type: ignore[arg-type]
        elif isinstance(spec, float):
            spec = int(spec)
    for where, value in _spec_values(spec):
        if not entry.within_bounds(value):
            meaning = f"is {entry.meaning} and " if entry.meaning else ""
            # A fixed value is shown by the error's formatter; a range's end is named here.
            given = f", but got {where}={value:g}" if where else ""
            raise ValueError(f"{meaning}must lie in {entry.bounds_text()}{given}")
    return spec


def check_spec(name: str, spec: Any) -> Any:
    """A spec of entry ``name`` checked against its table entry (a per-method spec, each of
    its methods'): the validator of every section that holds hyperparameters."""
    if isinstance(spec, PerMethod) and name == "seed":
        # `sweeper confirm` draws its fresh seeds from outside the one seed space.
        raise ValueError("takes one spec for every method, not one per method")
    if isinstance(spec, PerMethod):
        return PerMethod(
            full=_check_spec(name, spec.full),  # type: ignore[arg-type]
            lora=_check_spec(name, spec.lora),  # type: ignore[arg-type]
        )
    return _check_spec(name, spec)


def spec_field_type(entry: Hyperparameter) -> Any:
    """The pydantic type of an entry's key: a fixed value or a searched spec of its kind;
    in the search_space section also one spec per method (:class:`PerMethod`)."""
    if entry.text:
        kinds: Any = Choices | str | list[str]
    elif entry.integer:
        kinds = IntRange | Choices | int
    else:
        kinds = FloatRange | Choices | float
    return kinds | PerMethod if entry.home == "search_space" else kinds


class SearchSpaceBase(StrictModel):
    """The ``search_space`` section: one key per entry of :data:`HYPERPARAMETERS` that lives
    there (``model.method`` and the ``lora`` section hold the others)."""

    if TYPE_CHECKING:  # the fields are made from the table; to a type checker, any name

        def __init__(self, **specs: ParamSpec) -> None: ...

        def __getattr__(self, name: str) -> ParamSpec: ...

    def specs(self) -> dict[str, ParamSpec]:
        return {name: getattr(self, name) for name in SEARCH_SPACE_PARAMS}

    def spec(self, name: str) -> ParamSpec:
        return self.specs()[name]

    @field_validator("*")
    @classmethod
    def _within_bounds(cls, value: Any, info: Any) -> Any:
        return check_spec(info.field_name, value)


def _build_search_space() -> type[SearchSpaceBase]:
    fields: dict[str, Any] = {}
    for entry in HYPERPARAMETERS:
        if entry.home == "search_space":
            fields[entry.name] = (spec_field_type(entry), entry.default)
    return create_model("SearchSpace", __base__=SearchSpaceBase, **fields)


if TYPE_CHECKING:
    SearchSpace = SearchSpaceBase
else:
    SearchSpace = _build_search_space()


def candidate_values(spec: ParamSpec) -> list[Any]:
    """Every value an integer spec can take; a float range's two ends."""
    if isinstance(spec, IntRange):
        return list(range(spec.low, spec.high + 1, spec.step))
    if isinstance(spec, FloatRange):
        return [spec.low, spec.high]
    if isinstance(spec, Choices):
        return list(spec.choices)
    if isinstance(spec, PerMethod):
        return [*candidate_values(spec.full), *candidate_values(spec.lora)]
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
        return CategoricalDistribution(spec.choices)  # type: ignore[arg-type]
    return None


@dataclass(frozen=True)
class SpaceEntry:
    """One Optuna parameter of a study: its Optuna name, the hyperparameter it sets, its spec,
    and the one method whose trials sample it (None: every trial)."""

    optuna_name: str
    name: str
    spec: ParamSpec
    method: str | None


@dataclass(frozen=True)
class ParamSpace:
    """The study's whole search space, from every section that holds hyperparameters
    (search_space, model.method, lora), as Optuna sees it: :meth:`specs` is keyed by Optuna
    parameter name. Only what a trial can use is in it: the LoRA entries when a trial can be
    a LoRA one, ``method`` unless every trial is a full fine-tune (so a full study's space is
    what it was before LoRA), and with ``method`` searched, an entry given per method as one
    parameter per method (``lora_learning_rate``)."""

    entries: tuple[SpaceEntry, ...]

    @classmethod
    def of(cls, specs: Mapping[str, Any]) -> ParamSpace:
        method = specs.get("method", "full")
        methods = [str(m) for m in candidate_values(method)]
        entries = []
        if methods != ["full"]:
            entries.append(SpaceEntry("method", "method", method, None))
        for name, spec in specs.items():
            entry = BY_NAME[name]
            used_by = [m for m in methods if m in entry.methods]
            if name == "method" or not used_by:
                continue
            only = used_by[0] if len(methods) > 1 and len(used_by) == 1 else None
            if isinstance(spec, PerMethod) and len(methods) > 1:
                entries += [SpaceEntry(f"{m}_{name}", name, spec.for_method(m), m) for m in methods]
            elif isinstance(spec, PerMethod):
                entries.append(SpaceEntry(name, name, spec.for_method(methods[0]), None))
            else:
                entries.append(SpaceEntry(name, name, spec, only))
        return cls(tuple(entries))

    def specs(self) -> dict[str, ParamSpec]:
        """``{Optuna parameter name: spec}``: what Optuna samples (or a fixed value)."""
        return {entry.optuna_name: entry.spec for entry in self.entries}

    def spec(self, optuna_name: str) -> ParamSpec:
        return self.specs()[optuna_name]

    def values_of(self, name: str) -> list[Any]:
        """Every value hyperparameter ``name`` can take, over every method's entry."""
        return [v for e in self.entries if e.name == name for v in candidate_values(e.spec)]

    def methods(self) -> list[str]:
        method = self.specs().get("method", "full")
        return [str(m) for m in candidate_values(method)]

    def method_of(self, optuna_params: Mapping[str, Any]) -> str | None:
        """How a trial with these Optuna params fine-tuned: its sampled method, else the
        study's one; None for a trial that has not sampled it yet in a study searching it."""
        method = self.specs().get("method", "full")
        if "method" in optuna_params:
            return str(optuna_params["method"])
        return None if is_searched(method) else str(method)

    def used_by(self, method: str | None) -> set[str]:
        """The Optuna parameters a trial of ``method`` samples (searched ones only)."""
        return {
            entry.optuna_name
            for entry in self.entries
            if entry.method in (None, method) and is_searched(entry.spec)
        }

    def max_epochs(self) -> int:
        return int(max(self.values_of("num_train_epochs")))

    def optuna_name(self, name: str, method: str) -> str | None:
        """The Optuna parameter that sets ``name`` in a trial of ``method`` (None: unused)."""
        for entry in self.entries:
            if entry.name == name and entry.method in (None, method):
                return entry.optuna_name
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


def suggest_params(trial: optuna.Trial, space: ParamSpace) -> dict[str, Any]:
    """The trial's hyperparameters by name: searched ones from the sampler (or an enqueued
    trial), fixed ones as given. The method comes first; an entry of another method than the
    trial's is never sampled (a conditional search space)."""
    params: dict[str, Any] = {}
    for entry in space.entries:  # "method" is the first entry when it is there
        method = params.get("method", "full")
        if entry.method is not None and entry.method != method:
            continue
        searched = distribution(entry.spec)
        params[entry.name] = (
            entry.spec if searched is None else suggest(trial, entry.optuna_name, searched)
        )
    return params


def trial_params(space: ParamSpace, optuna_params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's hyperparameters by name, from its Optuna params (``lora_learning_rate`` is
    ``learning_rate``) and the study's fixed values for its method: what it trained with."""
    method = space.method_of(optuna_params) or "full"
    params: dict[str, Any] = {}
    for entry in space.entries:
        if entry.method is not None and entry.method != method:
            continue
        if entry.optuna_name in optuna_params:
            params[entry.name] = optuna_params[entry.optuna_name]
        elif not is_searched(entry.spec):
            params[entry.name] = entry.spec
    return params


def training_arguments(params: dict[str, Any]) -> dict[str, Any]:
    """The ``TrainingArguments`` fields a trial's hyperparameters set."""
    arguments: dict[str, Any] = {}
    for name, value in params.items():
        arguments |= BY_NAME[name].to_arguments(value)
    return arguments


def fixed_params(space: ParamSpace) -> dict[str, Any]:
    """The study's fixed (not searched) hyperparameters, by Optuna name."""
    return {
        name: spec
        for name, spec in space.specs().items()
        if isinstance(spec, (int, float, str)) and not isinstance(spec, bool)
    }


def named(optuna_name: str) -> tuple[str, Hyperparameter | None]:
    """(the method an Optuna parameter belongs to, or "", and its table entry, if any):
    ``lora_learning_rate`` is LoRA trials' learning_rate (a per-method entry)."""
    if optuna_name in BY_NAME:
        return "", BY_NAME[optuna_name]
    method, _, rest = optuna_name.partition("_")
    return (method, BY_NAME[rest]) if method in METHODS and rest in BY_NAME else ("", None)


def label(name: str) -> str:
    method, entry = named(name)
    return f"{method} {entry.label}".strip() if entry else name


def param_title(name: str) -> str:
    method, entry = named(name)
    return f"{entry.title}{f' ({method})' if method else ''}" if entry else name


def card_name(name: str) -> str:
    """A parameter as the Trainer's card names it (``train_batch_size``), per method too."""
    method, entry = named(name)
    return f"{method}_{entry.card_name}" if entry and method else entry.card_name if entry else name


def config_key(params: Mapping[str, Any]) -> str:
    """What makes two configurations the same: every parameter but the seed."""
    return json.dumps({k: v for k, v in params.items() if k != "seed"}, sort_keys=True)
