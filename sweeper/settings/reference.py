"""The study-file reference, generated from the code so that it cannot drift.

Every key of a study file, with its default and its meaning, comes from the configuration
models (a field's docstring is its description: ``use_attribute_docstrings``), the
search space from :data:`sweeper.settings.hyperparameters.HYPERPARAMETERS`, the objectives
from :data:`sweeper.settings.metrics.METRICS`, the pruners and samplers from their typed
configs, and the run keys from :data:`sweeper.settings.config.RUN_KEYS`.

``python -m sweeper.settings.reference`` prints it; ``make docs`` writes it to
``docs/reference/study-file.md``, and a test fails when that file is stale.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from sweeper.settings.config import (
    BLOCKS_OFF,
    LORA_KEYS,
    RUN_KEYS,
    BudgetConfig,
    DatasetConfig,
    EarlyStoppingConfig,
    EvaluationConfig,
    LoraSection,
    ModelConfig,
    NearChanceConfig,
    ObjectiveConfig,
    StudyConfig,
    TrainingConfig,
    WorkersConfig,
    run_keys_markdown,
)
from sweeper.settings.hyperparameters import HYPERPARAMETERS, ParamSpec
from sweeper.settings.metrics import METRICS
from sweeper.settings.pruners import DEFAULT_PRUNER, PRUNER_TYPES
from sweeper.settings.samplers import DEFAULT_SAMPLER, SAMPLER_TYPES
from sweeper.settings.warm_start import WarmStartConfig

# Where `make docs` writes it, relative to the repository root.
REFERENCE_PATH = Path("docs/reference/study-file.md")

# The sections of a study file, in the order the reference shows them.
SECTIONS: Mapping[str, type[BaseModel]] = {
    "dataset": DatasetConfig,
    "model": ModelConfig,
    "training": TrainingConfig,
    "evaluation": EvaluationConfig,
    "early_stopping": EarlyStoppingConfig,
    "near_chance": NearChanceConfig,
    "objective": ObjectiveConfig,
    "budget": BudgetConfig,
    "workers": WorkersConfig,
    "warm_start": WarmStartConfig,
}
# Described in sections of their own (a table each), not as one row of the top level.
_OWN_SECTIONS = {*SECTIONS, "search_space", "lora", "pruner", "sampler"}


def _text(description: str | None) -> str:
    """One table cell: the docstring's lines joined; pipes and angle brackets escaped, so
    that `<output_dir>` shows as written rather than as an HTML tag."""
    text = " ".join((description or "").split())
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "see below"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`" if value != [] else "`[]`"


def _rows(prefix: str, fields: Mapping[str, FieldInfo], skip: Iterable[str] = ()) -> list[str]:
    skipped = set(skip)
    return [
        f"| `{prefix}{name}` | {_default(field)} | {_text(field.description)} |"
        for name, field in fields.items()
        if name not in skipped
    ]


def _table(rows: list[str]) -> list[str]:
    return ["| key | default | meaning |", "|---|---|---|", *rows]


def _spec_text(spec: ParamSpec) -> str:
    if isinstance(spec, BaseModel):
        return "`" + ", ".join(f"{k}: {v}" for k, v in spec.model_dump().items()) + "`"
    return f"`{spec}` (fixed)"


def _search_space() -> list[str]:
    rows = []
    for entry in HYPERPARAMETERS:
        arguments = ", ".join(f"`{name}`" for name in entry.to_arguments(1)) or "(the model)"
        rows.append(
            f"| `{entry.study_key}` | {_spec_text(entry.default)} | "
            f"{entry.bounds_text()}{' whole numbers' if entry.integer else ''} | {arguments} | "
            f"{_text(entry.description)} |"
        )
    return [
        "A hyperparameter is fixed (a plain value) or searched: `{low, high, log}` for a float,",
        "`{low, high, step}` for a whole number, or `{choices: [...]}`. Each is one entry of",
        "`HYPERPARAMETERS` in `sweeper/settings/hyperparameters.py`. Most live in `search_space`;",
        "the fine-tuning method lives in `model.method` and LoRA's in the `lora` section, in the",
        "same forms. The LoRA entries are sampled for LoRA trials only (a conditional search",
        "space). Where `model.method` is searched, a `search_space` entry may give one spec per",
        "method, `{full: SPEC, lora: SPEC}`: each method's trials then sample their own Optuna",
        "parameter (`full_learning_rate`, `lora_learning_rate`), which a multivariate TPE",
        "(`sampler.multivariate`, with `sampler.group`) models per method; a baseline without a",
        "`method` is then a full fine-tune.",
        "",
        "| key | default | allowed | TrainingArguments | meaning |",
        "|---|---|---|---|---|",
        *rows,
    ]


def _lora() -> list[str]:
    """The lora section: its hyperparameters are rows of the search_space table."""
    settings = {k: f for k, f in LoraSection.model_fields.items() if k not in LORA_KEYS}
    keys = ", ".join(f"`lora.{key}`" for key in LORA_KEYS)
    return [
        "What LoRA trials (`model.method: lora`) wrap around the frozen model: peft's",
        f"`LoraConfig`. {keys} are hyperparameters, fixed or searched (rows of the search_space",
        "table below); a searched one in a study with no LoRA trial is an error. LoRA needs the",
        "extra: `pip install 'sweeper[lora]'`.",
        "",
        *_table(_rows("lora.", settings)),
    ]


def _metrics() -> list[str]:
    rows = [f"| `{m.name}` | {m.direction} | {_text(m.title)} |" for m in METRICS]
    return [
        "`objective.metric` is one of these (each one entry of `METRICS` in",
        "`sweeper/settings/metrics.py`):",
        "",
        "| metric | direction | what it is |",
        "|---|---|---|",
        *rows,
    ]


def _typed(section: str, types: Mapping[str, type[BaseModel]], default: str) -> list[str]:
    lines = [
        f"`{section}.type` picks the {section} (default `{default}`) and the settings it takes; "
        "a setting of another type is an error naming the type's settings.",
    ]
    for name, model in types.items():
        fields = {key: field for key, field in model.model_fields.items() if key != "type"}
        lines += ["", f"### {section}.type: {name}", ""]
        lines += _table(_rows(f"{section}.", fields)) if fields else ["No settings."]
    return lines


def _off_note(section: str) -> list[str]:
    """How to turn a block off with null (BLOCKS_OFF), under its heading."""
    if section not in BLOCKS_OFF:
        return []
    form = ", ".join(
        f"{key}: {'null' if value is None else value}" for key, value in BLOCKS_OFF[section].items()
    )
    return [f"`{section}: null` (or `--set {section}=null`) turns it off: stored as `{form}`.", ""]


def study_file_reference() -> str:
    """The whole page, as Markdown."""
    top = {k: f for k, f in StudyConfig.model_fields.items() if k not in _OWN_SECTIONS}
    lines = [
        "# Study file reference",
        "",
        "<!-- Generated by `make docs` (python -m sweeper.settings.reference) from the",
        "     configuration models and the hyperparameter and metric tables; do not edit. -->",
        "",
        "A study file is YAML or TOML. Settings resolve as the command line (`--set KEY=VALUE`,",
        "flags, `SWEEPER_STORAGE`), then the study file, then these defaults. Once a study",
        "exists, its stored configuration is its truth: the command line may change only the",
        "[run keys](#run-keys), and the study file is a template that gives only the study's",
        "name and storage (where it differs from the stored values, a note names the keys and",
        "the stored values run).",
        "",
        "## Top level",
        "",
        *_table(_rows("", top)),
    ]
    for section, model in SECTIONS.items():
        lines += ["", f"## {section}", "", *_off_note(section)]
        lines += _table(_rows(f"{section}.", model.model_fields))
    lines += ["", "## lora", "", *_lora()]
    lines += ["", "## search_space", "", *_search_space()]
    lines += ["", "## Metrics", "", *_metrics()]
    lines += ["", "## pruner", "", *_off_note("pruner")]
    lines += _typed("pruner", PRUNER_TYPES, DEFAULT_PRUNER)
    lines += ["", "## sampler", "", *_typed("sampler", SAMPLER_TYPES, DEFAULT_SAMPLER)]
    lines += [
        "",
        "## Run keys",
        "",
        "On an existing study, `--set` and the command's flags may change these keys (and what",
        f"lies under them), and no other ({len(RUN_KEYS)} entries of `RUN_KEYS` in",
        "`sweeper/settings/config.py`). The study file changes none of them: raising",
        "`budget.n_trials` there only shows in the note; `--n-trials` (`N_TRIALS=` with make)",
        "raises the budget.",
        "",
        run_keys_markdown(),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the reference, or with ``--write`` write it to docs/reference/study-file.md."""
    argv = sys.argv[1:] if argv is None else argv
    text = study_file_reference()
    if argv == ["--write"]:
        REFERENCE_PATH.parent.mkdir(parents=True, exist_ok=True)
        REFERENCE_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {REFERENCE_PATH}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
