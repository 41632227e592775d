"""The configuration a study stores (its ``config`` user attribute, beside
``config_version``): written without credentials when the study is created, read back and
migrated from the format of an earlier sweeper."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from sweeper.attributes import (
    CONFIG_ATTR,
    CONFIG_VERSION_ATTR,
)
from sweeper.credentials import scrub_document
from sweeper.errors import ConfigError
from sweeper.settings.config import StudyConfig
from sweeper.settings.pruners import DEFAULT_PRUNER, PRUNER_TYPES
from sweeper.settings.samplers import (
    DEFAULT_SAMPLER,
    SAMPLER_TYPES,
)
from sweeper.settings.validation import format_validation_error


def stored_document(config: StudyConfig) -> dict[str, Any]:
    """The configuration as a study stores it and ``config.resolved.yaml`` shows it: every
    setting, and no credential (the storage URL's password is dropped)."""
    return scrub_document(config.model_dump(mode="json"))


def dump_config(config: StudyConfig) -> str:
    return yaml.safe_dump(stored_document(config), sort_keys=False)


# The format of the config a study stores (its "config" user attribute, beside
# "config_version"). 1: before pruner and sampler were typed, every pruner's settings stored
# flat with their defaults, and no version stored. 2: typed pruner and sampler. 3: the
# early_stopping section and evaluation.strategy examples. 4: the warm_start section (a
# study of version 3 had none: the default, off). 5: model.method and the lora section (a
# study of version 4 fine-tuned every weight: method full, which is the default, so it reads
# as it ran; an older sweeper refuses a version-5 study rather than drop its LoRA settings).
CONFIG_VERSION = 5


def stored_config(study_name: str, user_attrs: dict[str, Any]) -> StudyConfig:
    """The study's stored config, validated into :class:`StudyConfig` (migrated from the
    format of an earlier sweeper). The card and the report read this, never raw dicts."""
    document = user_attrs.get(CONFIG_ATTR)
    if not isinstance(document, dict):
        raise ConfigError(
            f"study {study_name!r} has no stored sweeper config (user attribute "
            f"{CONFIG_ATTR!r}); it was not created by sweeper, or its creator stopped early: "
            f"run `sweeper create` with its study file to complete it"
        )
    version = user_attrs.get(CONFIG_VERSION_ATTR, 1)
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise ConfigError(
            f"study {study_name!r} was written by a newer sweeper ({CONFIG_VERSION_ATTR}="
            f"{version!r}; this one reads up to {CONFIG_VERSION}): upgrade sweeper to read it"
        )
    # Each step takes a document one version further.
    if version <= 1:
        document = _migrate_v1(document)
    if version <= 2:
        document = _migrate_v2(document)
    try:
        # A study stored before credentials were dropped may still hold a password: it
        # never reaches a view, a file or a log line from here.
        return StudyConfig.model_validate(scrub_document(document))
    except ValidationError as exc:
        source = f"config stored in study {study_name!r} ({CONFIG_VERSION_ATTR}={version})"
        raise ConfigError(
            format_validation_error(source, exc)
            + "\nthe study's stored config no longer validates; open it with the sweeper "
            "version that wrote it, or run the study again under a new name"
        ) from None


def _migrate_v1(document: dict[str, Any]) -> dict[str, Any]:
    """Version 1 stored every pruner setting of the flat PrunerConfig (and the TPE ones on
    the random sampler); version 2 keeps the settings of the chosen type only."""
    migrated = dict(document)
    for section, types, default in (
        ("pruner", PRUNER_TYPES, DEFAULT_PRUNER),
        ("sampler", SAMPLER_TYPES, DEFAULT_SAMPLER),
    ):
        settings = dict(migrated.get(section) or {})
        kind = settings.get("type", default)
        if kind in types:
            accepted = set(types[kind].model_fields)
            settings = {key: value for key, value in settings.items() if key in accepted}
        if section == "pruner" and kind == "hyperband" and settings.get("min_resource") == "auto":
            settings["min_resource"] = 1  # what version 1 passed to Optuna for "auto"
        migrated[section] = settings
    return migrated


def _migrate_v2(document: dict[str, Any]) -> dict[str, Any]:
    """Version 2 had no early stopping: its trials ran until the pruner stopped them or to
    their planned end. Stated explicitly (patience null, off), so the card and the report
    never claim a rule those trials did not run under, whatever the default becomes."""
    return {**document, "early_stopping": {"patience": None, "min_delta": 0.0}}
