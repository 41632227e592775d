"""Reading a study file: YAML or TOML, its ``--set`` overrides applied on top (the command
line, then the study file, then the defaults of sweeper.settings.config), relative paths
resolved from the file's folder, and the result validated into a
:class:`~sweeper.settings.config.StudyConfig`. :func:`load_study_config` is the entry point."""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from sweeper.errors import ConfigError
from sweeper.settings.config import StudyConfig
from sweeper.settings.hyperparameters import yaml_number
from sweeper.settings.pruners import DEFAULT_PRUNER
from sweeper.settings.samplers import (
    DEFAULT_SAMPLER,
)
from sweeper.settings.validation import TYPED_SECTIONS, validate_document

STUDY_SUFFIXES = (".yaml", ".yml", ".toml")


DEFAULT_STUDIES_DIR = Path("studies")


def find_study_file(study: str | Path, studies_dir: Path = DEFAULT_STUDIES_DIR) -> Path:
    """A study is a path to a study file, or a name under ``studies/``."""
    candidate = Path(study)
    if candidate.suffix in STUDY_SUFFIXES or candidate.parent != Path("."):
        if not candidate.is_file():
            raise ConfigError(f"study file {str(candidate)!r} does not exist")
        return candidate
    for suffix in STUDY_SUFFIXES:
        path = studies_dir / f"{study}{suffix}"
        if path.is_file():
            return path
    available = sorted(p.stem for p in studies_dir.glob("*") if p.suffix in STUDY_SUFFIXES)
    raise ConfigError(
        f"no study named {str(study)!r}: expected {studies_dir}/{study}.yaml (or .yml, .toml); "
        f"studies found: {available or 'none'}"
    )


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}``; values are parsed as YAML scalars."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--set expects KEY=VALUE (e.g. model.max_length=128), but got {pair!r}"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {pair!r}: the value is not valid YAML ({exc})") from exc
        overrides[key.strip()] = yaml_number(value)
    return overrides


def _apply_override(document: dict[str, Any], dotted_key: str, value: Any) -> None:
    node = document
    parts = dotted_key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"cannot set {dotted_key!r}: {prefix!r} is {child!r}, not a mapping")
        node = child
    node[parts[-1]] = value


def _read_document(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    try:
        document = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"study file {path} is not valid {path.suffix[1:].upper()}: {exc}"
        ) from exc
    if document is None:
        raise ConfigError(
            f"study file {path} is empty; expected at least dataset and model sections"
        )
    if not isinstance(document, dict):
        raise ConfigError(
            f"study file {path} must hold a mapping, but holds {type(document).__name__}"
        )
    return document


def _switch_types(
    document: dict[str, Any], overrides: dict[str, Any], notify: Callable[[str], None]
) -> None:
    """``--set pruner.type=none`` on a file that configures the median pruner: the file's
    median settings that the new type does not have are dropped, with a notice. Settings
    given on the command line for another type stay, and fail validation with their key."""
    for section, types in TYPED_SECTIONS.items():
        new_type = overrides.get(f"{section}.type")
        settings = document.get(section)
        if new_type is None or new_type not in types or not isinstance(settings, dict):
            continue
        accepted = set(types[new_type].model_fields)
        from_cli = {key.split(".", 1)[1] for key in overrides if key.startswith(f"{section}.")}
        dropped = sorted(key for key in settings if key not in accepted and key not in from_cli)
        for key in dropped:
            del settings[key]
        if dropped:
            listed = ", ".join(f"{section}.{key}" for key in dropped)
            notify(
                f"{section}.type={new_type} from the command line: the study file's {listed} "
                f"{'does' if len(dropped) == 1 else 'do'} not apply to it and "
                f"{'is' if len(dropped) == 1 else 'are'} ignored"
            )


def notice(message: str) -> None:
    """A one-line note on stderr: something the user may want to know, and the command goes on."""
    print(f"[sweeper] note: {message}", file=sys.stderr, flush=True)


def _resolve_path(value: str, base: Path) -> str:
    """dataset.path and model.name: a path that exists relative to the study file's folder
    is made absolute; anything else is left as given (a hub id, an absolute path, or a path
    relative to the current directory). output_dir, checkpoint_root and storage are never
    resolved here: they are relative to the current directory."""
    candidate = (base / value).expanduser()
    if candidate.exists():
        return str(candidate.resolve())
    return value


def read_study_document(
    study: str | Path,
    overrides: dict[str, Any] | None = None,
    studies_dir: Path = DEFAULT_STUDIES_DIR,
    notify: Callable[[str], None] = notice,
) -> tuple[Path, dict[str, Any]]:
    """The study file's document with the dotted-key overrides applied, not yet validated:
    (its path, the document). What a user wrote, key by key."""
    path = find_study_file(study, studies_dir)
    document = _read_document(path)
    document.setdefault("name", path.stem)
    overrides = overrides or {}
    for section, default in (("pruner", DEFAULT_PRUNER), ("sampler", DEFAULT_SAMPLER)):
        if isinstance(document.get(section), dict):
            document[section].setdefault("type", default)
    # Before the overrides: the file's own settings of its type are what may be dropped.
    _switch_types(document, overrides, notify)
    apply_overrides(document, overrides)
    return path, document


def apply_overrides(document: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        _apply_override(document, key, value)


def load_study_config(
    study: str | Path,
    overrides: dict[str, Any] | None = None,
    studies_dir: Path = DEFAULT_STUDIES_DIR,
    notify: Callable[[str], None] = notice,
) -> StudyConfig:
    """Read a study file, apply dotted-key overrides and validate the result."""
    return config_from_document(*read_study_document(study, overrides, studies_dir, notify))


def config_from_document(path: Path, document: dict[str, Any]) -> StudyConfig:
    """A study file's document validated; data and model paths relative to the file's
    folder made absolute."""
    config = validate_document(document, f"study file {path}")
    base = path.parent
    dataset = config.dataset.model_copy(update={"path": _resolve_path(config.dataset.path, base)})
    model = config.model.model_copy(update={"name": _resolve_path(config.model.name, base)})
    return config.model_copy(update={"dataset": dataset, "model": model})
