"""Samplers: one typed config per Optuna sampler, and :func:`build_sampler`.

As with pruners, ``sampler.type`` picks the model, so a TPE setting on the random sampler is
an error. Optuna does not store samplers in the database: every worker builds its own.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Self

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from pydantic import Field, TypeAdapter, model_validator

from sweeper.settings.strict import StrictModel


class _SamplerBase(StrictModel):
    # Workers started together get seed + their index (sweeper.runtime.workers), or they would
    # sample the same trials.
    seed: int | None = 42
    """The sampler's seed; a resumed study moves it on by its trials, and worker i of `sweeper
    worker --gpus` adds i, so no two draw the same samples."""

    def build(
        self, source_trials: Sequence[FrozenTrial] = (), source_weight: float = 1.0
    ) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def for_space(self, conditional: bool) -> Self:
        """This config for a search space that is conditional (model.method searched) or not."""
        return self

    def describe(self) -> str:
        raise NotImplementedError


class TPESamplerConfig(_SamplerBase):
    type: Literal["tpe"]
    n_startup_trials: int = Field(default=10, ge=0)
    """Random trials before TPE models the results."""
    multivariate: bool = True
    """Model the hyperparameters jointly (Optuna's multivariate TPE)."""
    group: bool | None = None
    """With multivariate: model each group of hyperparameters that trials sample together
    jointly (Optuna's group decomposition), which a conditional search space needs (model.method
    searched: LoRA's hyperparameters are sampled by LoRA trials only); null: on exactly when
    model.method is searched."""

    @model_validator(mode="after")
    def _group_needs_multivariate(self) -> TPESamplerConfig:
        if self.group and not self.multivariate:
            raise ValueError(
                "group=true models groups of hyperparameters jointly, which needs "
                "multivariate=true, but got multivariate=false; set sampler.multivariate: true "
                "or drop sampler.group"
            )
        return self

    def for_space(self, conditional: bool) -> Self:
        """This config with ``group`` decided: on for a conditional search space when unset."""
        if self.group is not None:
            return self
        return self.model_copy(update={"group": conditional and self.multivariate})

    def build(
        self, source_trials: Sequence[FrozenTrial] = (), source_weight: float = 1.0
    ) -> optuna.samplers.BaseSampler:
        settings: dict[str, Any] = {
            "seed": self.seed,
            "n_startup_trials": self.n_startup_trials,
            "multivariate": self.multivariate,
        }
        if self.group:
            settings["group"] = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if source_trials:
                return SourceAwareTPESampler(source_trials, source_weight, **settings)
            return optuna.samplers.TPESampler(**settings)

    def describe(self) -> str:
        return f"TPE (seed={self.seed}, n_startup_trials={self.n_startup_trials})"


class RandomSamplerConfig(_SamplerBase):
    type: Literal["random"]

    def build(
        self, source_trials: Sequence[FrozenTrial] = (), source_weight: float = 1.0
    ) -> optuna.samplers.BaseSampler:
        # A random sampler learns from nothing: warm start enqueues configurations only.
        return optuna.samplers.RandomSampler(seed=self.seed)

    def describe(self) -> str:
        return f"random (seed={self.seed})"


SamplerConfig = Annotated[TPESamplerConfig | RandomSamplerConfig, Field(discriminator="type")]
SAMPLER_TYPES: dict[str, type[_SamplerBase]] = {
    "tpe": TPESamplerConfig,
    "random": RandomSamplerConfig,
}
DEFAULT_SAMPLER = "tpe"
# The system attribute naming the earlier study a source trial comes from (warm start).
SOURCE_SYSTEM_ATTR = "warm_start_source"

_ADAPTER: TypeAdapter[SamplerConfig] = TypeAdapter(SamplerConfig)


def sampler_config(settings: dict[str, Any]) -> SamplerConfig:
    """A sampler config from plain settings (``type`` defaults to TPE)."""
    return _ADAPTER.validate_python({"type": DEFAULT_SAMPLER, **settings})


def build_sampler(
    config: SamplerConfig, source_trials: Sequence[FrozenTrial] = (), source_weight: float = 1.0
) -> optuna.samplers.BaseSampler:
    """The study's sampler; with ``source_trials`` (warm start), a TPE that models them too."""
    return config.build(source_trials, source_weight)


def learns_from_sources(config: SamplerConfig) -> bool:
    """Whether the sampler models earlier studies' trials (TPE does; random sampling does not)."""
    return isinstance(config, TPESamplerConfig)


class _WithSourceTrials:
    """The study as TPE reads it: its own finished trials after the sources' (numbered below
    0); everything else is the study's."""

    def __init__(self, study: optuna.Study, source_trials: Sequence[FrozenTrial]) -> None:
        self._study = study
        self._source_trials = source_trials

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Sequence[optuna.trial.TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        own = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        extra = [t for t in self._source_trials if states is None or t.state in states]
        return [*on_own_scale(extra, own), *own]

    def get_trials(
        self, deepcopy: bool = True, states: Sequence[optuna.trial.TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)


def on_own_scale(sources: Sequence[FrozenTrial], own: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The sources' complete trials with their values put on the study's own scale: another
    task has other losses (a shorter text, other rows), and TPE ranks every trial by value
    when it splits good from bad. Each source's complete trials keep their order, their
    values mapped to the same quantiles of the study's own complete trials. Until the study
    has two different values they keep their own: one value (or several equal ones) would
    tie every source trial and lose their order."""
    values = np.array(
        [t.value for t in own if t.state == TrialState.COMPLETE and t.value is not None]
    )
    if values.size < 2 or np.ptp(values) == 0:
        return list(sources)
    by_source: dict[Any, list[FrozenTrial]] = {}
    for trial in sources:
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            by_source.setdefault(trial.system_attrs.get(SOURCE_SYSTEM_ATTR), []).append(trial)
    mapped: dict[int, float] = {}
    for group in by_source.values():
        order = sorted(group, key=lambda t: float(t.value))  # type: ignore[arg-type]
        quantiles = np.linspace(0.0, 1.0, len(order)) if len(order) > 1 else np.array([0.5])
        for trial, q in zip(order, quantiles, strict=True):
            mapped[trial.number] = float(np.quantile(values, q))
    rescaled = []
    for trial in sources:
        if trial.number in mapped:
            trial = copy.copy(trial)
            trial.value = mapped[trial.number]
        rescaled.append(trial)
    return rescaled


class SourceAwareTPESampler(optuna.samplers.TPESampler):
    """TPE that also models earlier studies' finished trials (warm start): they are read
    with the study's own when TPE splits good from bad and builds its Parzen estimators, and
    they count towards ``n_startup_trials`` (sources with that many trials let TPE model from
    the study's first sampled trial). Each weighs ``source_weight`` of one of the study's
    own. They are never trials of the study: its storage, budget and best never see them.

    Optuna 5's TPE takes no prior from data, so this reads two of TPESampler's internals as
    Optuna 5.1 has them: the study's ``_get_trials`` (TPE's only read of the trials, given a
    study that adds the sources) and ``_build_parzen_estimator`` (to weigh them).
    pyproject.toml pins Optuna to 5.1.x; tests/settings/test_warm_start.py fails when an
    upgrade changes either."""

    def __init__(
        self, source_trials: Sequence[FrozenTrial], source_weight: float, **settings: Any
    ) -> None:
        super().__init__(**settings)
        self._source_trials = list(source_trials)
        self._source_weight = float(source_weight)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        with_sources: Any = _WithSourceTrials(study, self._source_trials)
        return super().sample_relative(with_sources, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        with_sources: Any = _WithSourceTrials(study, self._source_trials)
        return super().sample_independent(with_sources, trial, param_name, param_distribution)

    def _build_parzen_estimator(
        self,
        study: optuna.Study,
        search_space: dict[str, BaseDistribution],
        trials: list[FrozenTrial],
        handle_below: bool,
    ) -> Any:
        # The trials TPE's estimator keeps (those with every parameter of the space), with
        # its own weights (older trials weigh less past 25), a source's times source_weight.
        kept = [t for t in trials if search_space.keys() <= self._get_params(t, study).keys()]
        observations = self._get_internal_repr(kept, search_space, study)
        weights = None
        if kept:
            ramp = np.asarray(self._parzen_estimator_parameters.weights(len(kept)), dtype=float)
            scale = np.array([self._source_weight if t.number < 0 else 1.0 for t in kept])
            weights = ramp[: len(kept)] * scale
        return self._parzen_estimator_cls(
            observations, search_space, self._parzen_estimator_parameters, weights
        )
