"""A study document validated into :class:`~sweeper.settings.config.StudyConfig`, and
pydantic's errors told as one line per key: the key as the study file spells it, the value
given and what was expected."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    TypeAdapter,
    ValidationError,
)

from sweeper.errors import ConfigError
from sweeper.settings.config import StudyConfig
from sweeper.settings.hyperparameters import (
    BY_NAME,
    HYPERPARAMETERS,
    METHODS,
    Choices,
    FloatRange,
    IntRange,
    check_spec,
)
from sweeper.settings.pruners import PRUNER_TYPES
from sweeper.settings.samplers import (
    SAMPLER_TYPES,
)

# Pydantic puts the union member in an error's location ("FloatRange", or the "median" of
# pruner.type); the user's key has none of them.
_UNION_MEMBERS = {
    "FloatRange",
    "IntRange",
    "Choices",
    "PerMethod",
    "float",
    "int",
    "str",
    "list[str]",
}

# The hyperparameters set outside the search_space section, by (section, key).
_HOMES = {(entry.home, entry.key or entry.name): entry.name for entry in HYPERPARAMETERS}


TYPED_SECTIONS: dict[str, Mapping[str, type[BaseModel]]] = {
    "pruner": PRUNER_TYPES,
    "sampler": SAMPLER_TYPES,
}


def _user_key(location: tuple[Any, ...]) -> tuple[str, str | None]:
    """The dotted key a user wrote, and the pruner/sampler type the error was found under."""
    parts = [str(part) for part in location if not str(part).startswith("function-")]
    typed = None
    if len(parts) > 1 and parts[0] in TYPED_SECTIONS and parts[1] in TYPED_SECTIONS[parts[0]]:
        typed = parts.pop(1)
    return ".".join(p for p in parts if p not in _UNION_MEMBERS), typed


def _spec_shapes(name: str) -> str:
    entry = BY_NAME[name]
    if entry.text:
        return f"{entry.bounds_text()}, or {{choices: [...]}}"
    if entry.integer:
        return "a whole number, {low, high, step} of whole numbers, or {choices: [...]}"
    return "a number, {low, high, log}, or {choices: [...]}"


# One method's spec of a per-method entry, as PerMethod takes it.
_METHOD_SPEC: TypeAdapter[Any] = TypeAdapter(FloatRange | IntRange | Choices | float | int)


def _per_method_lines(name: str, key: str, given: dict[str, Any]) -> list[str]:
    """What is wrong with a spec given per method: its keys, else each method's spec."""
    if set(given) != set(METHODS):
        return [
            f"  {key}: one spec per method takes a spec for each of {', '.join(METHODS)} and "
            f"nothing else, but got {sorted(given)}; give both, or one spec"
        ]
    lines = []
    for method in METHODS:
        try:
            check_spec(name, _METHOD_SPEC.validate_python(given[method]))
        except ValidationError:
            lines.append(
                f"  {key}.{method}: expected {_spec_shapes(name)}, but got {given[method]!r}"
            )
        except ValueError as error:
            lines.append(f"  {key}.{method}: {error}")
    return lines or [f"  {key}: expected one spec, or one per method, but got {given!r}"]


def _spec_error_name(item: Any) -> str | None:
    """The hyperparameter of an error found while trying one shape of its spec, if any."""
    location = item["loc"]
    if len(location) < 3:
        return None
    name = _HOMES.get((str(location[0]), str(location[1])))
    if name is None:
        return None
    # A member with a validator is named "function-after[_check(), FloatRange]".
    member = str(location[2])
    if member.startswith("function-"):
        member = member.rsplit(", ", 1)[-1].rstrip("]")
    return name if member in _UNION_MEMBERS else None


def format_validation_error(source: str, error: ValidationError) -> str:
    lines = []
    items = error.errors()
    # A spec whose shape matched (a range) but whose values did not: that shape's message
    # says what is wrong; the other shapes it was tried as would only confuse.
    shape_matched = {
        name for item in items if (name := _spec_error_name(item)) and item["type"] == "value_error"
    }
    shapes_reported: set[str] = set()
    for item in items:
        location = item["loc"]
        name_tried = _spec_error_name(item)
        if name_tried in shape_matched and item["type"] != "value_error":
            continue
        if name_tried is not None and name_tried not in shape_matched:
            # A spec that fits none of its shapes: one line, not one per shape tried.
            name = name_tried
            if name in shapes_reported:
                continue
            shapes_reported.add(name)
            given = item.get("input")
            key = BY_NAME[name].study_key
            if isinstance(given, dict) and set(given) & set(METHODS):
                # Meant as one spec per method ({full: ..., lora: ...}): say what is wrong.
                lines += _per_method_lines(name, key, given)
                continue
            lines.append(f"  {key}: expected {_spec_shapes(name)}, but got {given!r}")
            continue
        key, typed = _user_key(location)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden" and typed is not None:
            section = key.split(".")[0]
            allowed = sorted(set(TYPED_SECTIONS[section][typed].model_fields) - {"type"})
            message = (
                f"is not a setting of the {typed} {section} ({section}.type={typed}); "
                f"its settings are {allowed or 'none'}"
            )
        elif item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; see studies/imdb.yaml for every key)"
        elif item["type"] == "missing":
            message = "is required but missing"
        elif item["type"] == "union_tag_invalid":
            section = key.split(".")[0]
            key = f"{section}.type"
            message = f"expected one of {sorted(TYPED_SECTIONS[section])}"
        given = item.get("input")
        shown = (
            ""
            if item["type"] in {"missing", "extra_forbidden"}
            or isinstance(given, dict)
            or "but got" in message  # the message already shows the value
            else f", but got {given!r}"
        )
        if item["type"] == "union_tag_invalid" and isinstance(given, dict):
            shown = f", but got {given.get('type')!r}"
        # A check across sections (StudyConfig's own) names its keys in its message.
        lines.append(f"  {key}: {message}{shown}" if key else f"  {message}{shown}")
    unique = list(dict.fromkeys(lines))
    return f"invalid {source}:\n" + "\n".join(unique)


def validate_document(document: dict[str, Any], source: str) -> StudyConfig:
    """A study document validated into :class:`StudyConfig`; ``source`` names it in errors."""
    try:
        return StudyConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None
