"""Which configuration a command runs with: once a study exists, the one it stored.

A study stores its resolved configuration when it is created (``sweeper.study.sweep.ensure_study``,
the ``config`` user attribute, without credentials). From then on that stored configuration
is the study's truth: ``sweep`` when it resumes, ``worker``, ``create``, ``check`` and
``confirm`` run from it, on any machine, with or without the study file.

On an existing study each key resolves as: typed (``--set``, the command's flags,
``SWEEPER_STORAGE``), then stored, then the study file. The study file is a template there:
it gives only the study's name and storage, and where it differs from the stored
configuration one note names every differing key and the command goes on with the stored
values. What is typed may change only what belongs to a run or a machine
(:data:`sweeper.settings.config.RUN_KEYS`); any other typed key that differs from the
stored value is an error naming the key and both values, before anything runs.

The storage URL comes from ``--storage``, then the ``SWEEPER_STORAGE`` environment variable,
then the study file (``storage``), then SQLite under ``output_dir``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages import BaseStorage

from sweeper.attributes import CONFIG_ATTR
from sweeper.credentials import STORAGE_ENV, scrub_document
from sweeper.errors import ConfigError, StorageError
from sweeper.runtime.storage import reading_storage, redact
from sweeper.settings.config import RUN_KEYS, StudyConfig, is_run_key
from sweeper.settings.stored import stored_config
from sweeper.settings.study_file import (
    DEFAULT_STUDIES_DIR,
    STUDY_SUFFIXES,
    apply_overrides,
    config_from_document,
    find_study_file,
    notice,
    parse_overrides,
    read_study_document,
)
from sweeper.settings.validation import validate_document


@dataclass(frozen=True)
class ResolvedStudy:
    """The configuration a command runs with, and where it came from."""

    config: StudyConfig
    # The study is in its storage with a stored configuration (``config`` is built on it).
    exists: bool
    study_file: Path | None
    # The existing study's user attributes (its split and model fingerprints among them).
    user_attrs: Mapping[str, Any] | None = None


def _storage_from_environment(flag: str | None) -> str | None:
    """``--storage``, else ``SWEEPER_STORAGE``: how launchers pass a URL with a password
    without putting it on a command line."""
    return flag or os.environ.get(STORAGE_ENV) or None


# The flags that set a study-file key, by their argparse attribute: a flag wins over --set.
FLAG_KEYS = {
    "n_trials": "budget.n_trials",
    "timeout": "budget.timeout_seconds",
    "checkpoint_root": "checkpoint_root",
    "keep_all_checkpoints": "keep_all_checkpoints",
    "trials_per_gpu": "workers.trials_per_gpu",
    "warm_start": "warm_start.sources",
}


def typed_overrides(
    set_pairs: list[str] | None, flags: Mapping[str, Any], storage_flag: str | None
) -> dict[str, Any]:
    """Every key the command line types, as dotted keys: ``--set`` pairs, then the command's
    flags on top (:data:`FLAG_KEYS`), and the storage from ``--storage``, else
    ``SWEEPER_STORAGE``. On an existing study these win over the stored configuration, which
    wins over the study file (see the module's docstring)."""
    overrides: dict[str, Any] = parse_overrides(set_pairs or [])
    for attribute, key in FLAG_KEYS.items():
        if flags.get(attribute) is not None:
            overrides[key] = flags[attribute]
    storage = _storage_from_environment(storage_flag)
    if storage is not None:
        overrides["storage"] = storage
    return overrides


def _optional_study_file(study: str | Path, studies_dir: Path) -> Path | None:
    """The study file ``study`` names, or None when it names none and is a plain study name.
    A path that does not exist is still an error: the user meant a file."""
    candidate = Path(study)
    if candidate.suffix in STUDY_SUFFIXES or candidate.parent != Path("."):
        return find_study_file(study, studies_dir)
    try:
        return find_study_file(study, studies_dir)
    except ConfigError:
        return None


def leaf_keys(document: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in document.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            keys += leaf_keys(value, f"{dotted}.")
        else:
            keys.append(dotted)
    return keys


_MISSING = object()


def _value_at(document: Any, dotted_key: str) -> Any:
    node = document
    for part in dotted_key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _shown(value: Any) -> str:
    return "(not set)" if value is _MISSING else repr(value)


def check_run_keys_only(
    stored: StudyConfig, given: StudyConfig, typed_keys: list[str], storage_url: str
) -> None:
    """Refuse any typed key (``--set``, a flag) outside :data:`RUN_KEYS` whose value differs
    from the study's stored one; every such key is named with both values."""
    # Without credentials on either side: the stored one has none, and none is shown.
    stored_values = scrub_document(stored.model_dump(mode="json"))
    given_values = scrub_document(given.model_dump(mode="json"))
    differences = []
    for key in dict.fromkeys(typed_keys):
        if key == "name" or is_run_key(key):
            continue
        before, after = _value_at(stored_values, key), _value_at(given_values, key)
        if before != after:
            differences.append(f"  {key}: the study has {_shown(before)}, given {_shown(after)}")
    if differences:
        raise ConfigError(
            f"study {stored.name!r} in {redact(storage_url)} already exists, and its stored "
            "configuration is its truth: --set and the command's flags may change only what "
            f"belongs to a run or a machine ({', '.join(RUN_KEYS)}). These differ:\n"
            + "\n".join(differences)
            + "\nDrop them from --set, or start a new study from the study file with "
            "--set name=NEW; nothing was run"
        )


def _with_run_keys(
    stored: StudyConfig, given: StudyConfig, typed_keys: list[str], storage_url: str
) -> StudyConfig:
    """The stored configuration, with the run keys typed on the command line (one not typed
    keeps its stored value, whatever the study file says) and the storage the study was
    found in."""
    document = stored.model_dump(mode="json")
    given_values = given.model_dump(mode="json")
    for key in typed_keys:
        value = _value_at(given_values, key)
        if is_run_key(key) and value is not _MISSING:
            apply_overrides(document, {key: value})
    document["storage"] = storage_url
    return validate_document(document, f"the stored configuration of study {stored.name!r}")


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == prefix or key.startswith(f"{prefix}.") for prefix in prefixes)


def _file_differences(stored: StudyConfig, given: StudyConfig, file_keys: list[str]) -> list[str]:
    """The keys the study file gives whose value differs from the stored configuration, in
    the file's order (the file's values are in ``given`` wherever nothing typed them)."""
    stored_values = scrub_document(stored.model_dump(mode="json"))
    given_values = scrub_document(given.model_dump(mode="json"))
    return [
        key
        for key in dict.fromkeys(file_keys)
        if _value_at(stored_values, key) != _value_at(given_values, key)
    ]


def _differences_note(study_file: Path, name: str, keys: list[str]) -> str:
    """The one line that says the study file of an existing study is a template."""
    count = f"{len(keys)} key" + ("" if len(keys) == 1 else "s")
    return (
        f"{study_file} differs from the stored study {name!r} in {count} ({', '.join(keys)}): "
        "the stored values are used; --set KEY=VALUE changes a run key (the budget: "
        "--n-trials, or N_TRIALS= with make), --set name=NEW starts a new study from the file"
    )


def _stored_attributes(name: str, storage_url: str) -> dict[str, Any] | None:
    """The study's user attributes, or None when the storage holds no such study (or is a
    SQLite file that does not exist yet). A configuration an earlier sweeper stored with
    a password in it is rewritten without it here, so no view shows it again."""
    # The command opens the study itself, once, afterwards: this read holds no connection.
    with reading_storage(storage_url) as storage:
        if storage is None:
            return None  # no database file or no tables yet: a new study, and none created
        try:
            study_id = storage.get_study_id_from_name(name)
        except KeyError:
            return None
        return drop_stored_credentials(storage, study_id, storage.get_study_user_attrs(study_id))


def drop_stored_credentials(
    storage: BaseStorage, study_id: int, attrs: dict[str, Any]
) -> dict[str, Any]:
    """A configuration an earlier sweeper stored with a password in it (the storage URL's)
    is rewritten without it, so no view, file or dashboard shows it again; returns the
    attributes as they now are."""
    document = attrs.get(CONFIG_ATTR)
    if isinstance(document, dict) and scrub_document(document) != document:
        storage.set_study_user_attr(study_id, CONFIG_ATTR, scrub_document(document))
        attrs = {**attrs, CONFIG_ATTR: scrub_document(document)}
    return attrs


@dataclass(frozen=True)
class _Located:
    study_file: Path | None
    name: str
    storage_url: str
    # The study file's configuration with the overrides (None without a study file).
    given: StudyConfig | None
    # The leaf keys typed on the command line, and the other keys the study file gives.
    typed_keys: list[str]
    file_keys: list[str]


def _locate(
    study: str | Path,
    overrides: dict[str, Any],
    studies_dir: Path,
    notify: Callable[[str], None],
) -> _Located:
    study_file = _optional_study_file(study, studies_dir)
    if study_file is None:
        name = str(overrides.get("name") or study)
        default = StudyConfig.model_construct(
            name=name, output_dir=str(overrides.get("output_dir") or "runs"), storage=None
        )
        storage_url = str(overrides.get("storage") or default.storage_url)
        return _Located(None, name, storage_url, None, list(overrides), [])
    path, document = read_study_document(study_file, overrides, studies_dir, notify)
    given = config_from_document(path, document)
    keys = leaf_keys(document)
    typed = [key for key in keys if _under(key, overrides)]
    from_file = [key for key in keys if key not in typed and key not in ("name", "storage")]
    return _Located(study_file, given.name, given.storage_url, given, typed, from_file)


def locate_study(
    study: str | Path, overrides: dict[str, Any], studies_dir: Path = DEFAULT_STUDIES_DIR
) -> tuple[str, str]:
    """(name, storage URL) of a study, for the commands that only read it: its study file is
    optional, as everything they show comes from the storage."""
    located = _locate(study, overrides, studies_dir, notify=notice)
    return located.name, located.storage_url


def resolve_study(
    study: str | Path,
    overrides: dict[str, Any],
    *,
    studies_dir: Path = DEFAULT_STUDIES_DIR,
    notify: Callable[[str], None] = notice,
) -> ResolvedStudy:
    """The configuration a command runs with (see the module's docstring). ``overrides``
    are dotted keys from ``--set`` and the command's flags (``storage`` among them when
    ``--storage`` or ``SWEEPER_STORAGE`` gave one)."""
    located = _locate(study, overrides, studies_dir, notify)
    name, storage_url, given = located.name, located.storage_url, located.given
    try:
        attrs = _stored_attributes(name, storage_url)
    except StorageError:
        if given is None:
            raise
        # Unreachable: nothing can run; the pre-flight check names it among every other
        # problem of the study file.
        return ResolvedStudy(given, exists=False, study_file=located.study_file)
    if attrs is None or not isinstance(attrs.get(CONFIG_ATTR), dict):
        if given is not None:
            return ResolvedStudy(given, exists=False, study_file=located.study_file)
        if attrs is None:
            raise StorageError(
                f"no study named {name!r} in {redact(storage_url)} and no study file for it "
                f"(expected {studies_dir}/{name}.yaml); pass the study file to create it, or "
                f"--storage (or {STORAGE_ENV}) with the storage that holds it"
            )
    stored = stored_config(name, attrs or {})
    if given is None:
        document = stored.model_dump(mode="json")
        apply_overrides(document, overrides)
        given = validate_document(document, f"--set on study {name!r}")
    check_run_keys_only(stored, given, located.typed_keys, storage_url)
    if located.study_file is not None and (
        differing := _file_differences(stored, given, located.file_keys)
    ):
        notify(_differences_note(located.study_file, name, differing))
    return ResolvedStudy(
        _with_run_keys(stored, given, located.typed_keys, storage_url),
        exists=True,
        study_file=located.study_file,
        user_attrs=attrs,
    )
