"""Warm start, read back: what an earlier study offers a new one (its best distinct
configurations, the confirmed winner first, and its finished trials), and what a
warm-started study recorded about its sources (for ``show``, the report and the card)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeper.attributes import (
    CONFIG_ATTR,
    OBJECTIVE_METRIC_ATTR,
    SPLIT_FINGERPRINTS_ATTR,
    WARM_START_ATTR,
    WARM_START_SOURCE_ATTR,
)
from sweeper.credentials import scrub_document
from sweeper.errors import ConfigError
from sweeper.records.confirmation import load_confirmation
from sweeper.settings.config import StudyConfig
from sweeper.settings.hyperparameters import config_key, fixed_params
from sweeper.settings.stored import stored_config

# What a new task may change against its source and the warm start says: the data and the
# model (a source on other data or another model is allowed: that is the point).
TASK_KEYS = ("dataset", "model")


@dataclass
class SourceStudy:
    """One earlier study as warm start reads it."""

    name: str
    direction: str  # "minimize" or "maximize"
    metric: str | None  # its objective metric, when sweeper made it
    config: StudyConfig | None  # its stored configuration, when sweeper made it
    finished: list[FrozenTrial]  # complete and pruned trials: the sampler's observations
    ranked: list[FrozenTrial]  # its best distinct configurations, confirmed winner first
    confirmed_winner: int | None = None  # the trial that stands for the confirmed winner
    counts: dict[str, int] = field(default_factory=dict)  # trials by state

    def fixed(self) -> dict[str, Any]:
        """What the source did not search, at the value it was fixed at."""
        return fixed_params(self.config.space) if self.config is not None else {}


def _confirmed_winner(study: optuna.Study, trials: list[FrozenTrial]) -> int | None:
    """The source trial standing for the winner `sweeper confirm` confirmed (stored in its
    ``<name>.confirm`` study): its best single-seed trial with the winner's configuration."""
    confirmation = load_confirmation(study)
    if confirmation is None:
        return None
    sources = set(confirmation.winning.source_trials)
    candidates = [t for t in trials if t.number in sources and t.state == TrialState.COMPLETE]
    if not candidates:
        return None
    sign = 1 if confirmation.direction == "minimize" else -1
    return min(candidates, key=lambda t: sign * float(t.value or 0.0)).number


def read_source(study: optuna.Study) -> SourceStudy:
    """An earlier study: its finished trials and its best distinct configurations (the
    confirmed winner first where `sweeper confirm` ran; then by value, one trial per
    configuration, the seed aside)."""
    attrs = study.user_attrs
    config = None
    if isinstance(attrs.get(CONFIG_ATTR), dict):
        try:
            config = stored_config(study.study_name, attrs)
        except ConfigError:
            config = None  # a source sweeper can no longer read: its trials still count
    trials = study.get_trials(deepcopy=False)
    direction = study.direction.name.lower()
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    sign = 1 if direction == "minimize" else -1
    by_value = sorted(complete, key=lambda t: (sign * float(t.value or 0.0), t.number))
    winner = _confirmed_winner(study, complete)
    if winner is not None:
        by_value = sorted(by_value, key=lambda t: t.number != winner)
    ranked, seen = [], set()
    for trial in by_value:
        key = config_key(trial.params)
        if key not in seen:
            seen.add(key)
            ranked.append(trial)
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return SourceStudy(
        name=study.study_name,
        direction=direction,
        metric=attrs.get(OBJECTIVE_METRIC_ATTR) or (config.objective.metric if config else None),
        config=config,
        finished=[t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)],
        ranked=ranked,
        confirmed_winner=winner,
        counts=counts,
    )


def _leaves(document: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(document, dict):
        return {prefix.rstrip("."): document}
    leaves: dict[str, Any] = {}
    for key, value in document.items():
        leaves |= _leaves(value, f"{prefix}{key}.")
    return leaves


def task_differences(
    source: SourceStudy, source_attrs: dict[str, Any], target: StudyConfig, target_fingerprints: Any
) -> list[str]:
    """How the source's task differs from the new study's, one item per key ("model.max_length:
    64 -> 96"), and whether their splits hold other rows (their stored fingerprints)."""
    if source.config is None:
        return ["the source's task is unknown (no stored sweeper config)"]
    # Without credentials: a data URL's token must not reach a line, the record or a view.
    source_document = scrub_document(source.config.model_dump(mode="json"))
    target_document = scrub_document(target.model_dump(mode="json"))
    before = _leaves({key: source_document[key] for key in TASK_KEYS})
    after = _leaves({key: target_document[key] for key in TASK_KEYS})
    differences = [
        f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in dict.fromkeys([*before, *after])
        if before.get(key) != after.get(key) and not key.startswith("model.license")
    ]
    stored = source_attrs.get(SPLIT_FINGERPRINTS_ATTR)
    if isinstance(stored, dict) and isinstance(target_fingerprints, dict):
        other = [
            name for name in target_fingerprints if stored.get(name) != target_fingerprints[name]
        ]
        if other:
            differences.append(f"other rows in the {', '.join(other)} split(s)")
    return differences


def warm_start_record(study: optuna.Study) -> dict[str, Any] | None:
    """What a warm-started study recorded when it was created (its sources, what it enqueued,
    every line said then), or None for a study without warm start."""
    record = study.user_attrs.get(WARM_START_ATTR)
    return record if isinstance(record, dict) else None


def warm_start_source(trial: FrozenTrial) -> str | None:
    """The source trial a warm-start trial was enqueued from ("imdb #7"), or None."""
    source = trial.user_attrs.get(WARM_START_SOURCE_ATTR)
    return str(source) if source is not None else None
