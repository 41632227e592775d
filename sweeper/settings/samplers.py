"""Samplers: one typed config per Optuna sampler, and :func:`build_sampler`.

As with pruners, ``sampler.type`` picks the model, so a TPE setting on the random sampler is
an error. Optuna does not store samplers in the database: every worker builds its own.
"""

from __future__ import annotations

import warnings
from typing import Annotated, Any, Literal

import optuna
from pydantic import Field, TypeAdapter

from sweeper.settings.strict import StrictModel


class _SamplerBase(StrictModel):
    # Workers started together get seed + their index (sweeper.runtime.workers), or they would
    # sample the same trials.
    seed: int | None = 42
    """The sampler's seed; a resumed study moves it on by its trials, and worker i of `sweeper
    worker --gpus` adds i, so no two draw the same samples."""

    def build(self) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class TPESamplerConfig(_SamplerBase):
    type: Literal["tpe"]
    n_startup_trials: int = Field(default=10, ge=0)
    """Random trials before TPE models the results."""
    multivariate: bool = True
    """Model the hyperparameters jointly (Optuna's multivariate TPE)."""

    def build(self) -> optuna.samplers.BaseSampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=self.seed,
                n_startup_trials=self.n_startup_trials,
                multivariate=self.multivariate,
            )

    def describe(self) -> str:
        return f"TPE (seed={self.seed}, n_startup_trials={self.n_startup_trials})"


class RandomSamplerConfig(_SamplerBase):
    type: Literal["random"]

    def build(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)

    def describe(self) -> str:
        return f"random (seed={self.seed})"


SamplerConfig = Annotated[TPESamplerConfig | RandomSamplerConfig, Field(discriminator="type")]
SAMPLER_TYPES: dict[str, type[_SamplerBase]] = {
    "tpe": TPESamplerConfig,
    "random": RandomSamplerConfig,
}
DEFAULT_SAMPLER = "tpe"

_ADAPTER: TypeAdapter[SamplerConfig] = TypeAdapter(SamplerConfig)


def sampler_config(settings: dict[str, Any]) -> SamplerConfig:
    """A sampler config from plain settings (``type`` defaults to TPE)."""
    return _ADAPTER.validate_python({"type": DEFAULT_SAMPLER, **settings})


def build_sampler(config: SamplerConfig) -> optuna.samplers.BaseSampler:
    return config.build()
