"""Pre-flight: what would fail every trial, found before the study's storage is written.

:func:`run_preflight` is the entry point (``sweeper check STUDY`` runs it alone, and
``run_study`` runs it before it opens the storage). It reads the model's config and
tokenizer, the dataset's splits (nothing is tokenized or cached yet), and checks:

- ``model.max_length`` against the tokenizer's limit and the model's position table
  (RoBERTa-style tables hold ``padding_idx + 1`` extra rows; relative-position models
  have no fixed limit);
- a checkpoint whose classification head has another number of labels than the data: the
  head is re-initialised (``ignore_mismatched_sizes``), which is reported, not refused;
- that the storage can be reached, and the output and checkpoint directories can be
  written and have room for at least one checkpoint;
- the search space's batch sizes against the training rows (what ``dataset.test_fraction``
  and ``dataset.validation_fraction`` leave of the train split);
- the test split: it exists, differs from train and validation, and its fraction leaves
  rows to train on (:func:`sweeper.trial.data.load_splits` and the study file's validation);
- ``warm_start.sources`` of a new study: each exists and optimizes the same metric in the
  same direction (:mod:`sweeper.study.warm_start`, which reads them once, here);
- ``evaluation.strategy: steps`` with a searched batch size: noticed, since the pruner then
  compares no two trials of different batch sizes (``examples`` puts them on one grid).

Every failure is one line; all of them are reported together as one :class:`PreflightError`.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.errors import PreflightError, SweeperError
from sweeper.runtime.storage import check_reachable
from sweeper.settings.config import StudyConfig, batch_sizes
from sweeper.study.warm_start import WarmStartPlan, plan_warm_start
from sweeper.trial.adapters import check_adapters, most_trainable, peft_available, require_peft
from sweeper.trial.checkpoints import check_store
from sweeper.trial.data import DataSplits, load_splits, split_fingerprints
from sweeper.trial.models import (
    head_label_count,
    load_model_config,
    load_pretrained_classifier,
    load_tokenizer,
    meta_classifier,
    model_fingerprint,
    position_limit,
)

# A tokenizer with no limit of its own reports this sentinel (transformers' VERY_LARGE_INTEGER).
NO_TOKENIZER_LIMIT = 10**6
# Bytes per parameter in a checkpoint: fp32 weights plus AdamW's two fp32 moments.
CHECKPOINT_BYTES_PER_PARAMETER = 12


@dataclass
class PreflightResult:
    """What the checks loaded, so the sweep does not read it again."""

    tokenizer: Any
    splits: DataSplits
    notices: list[str] = field(default_factory=list)
    # The model's architecture fingerprint (models.model_fingerprint), stored with the study.
    model_fingerprint: str | None = None
    # What a new study with warm_start.sources writes with it (None for an existing study).
    warm_start: WarmStartPlan | None = None


def _tokenizer_limit(tokenizer: Any) -> int | None:
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and limit < NO_TOKENIZER_LIMIT else None


def _check_max_length(config: StudyConfig, model_config: Any, tokenizer: Any) -> list[str]:
    """``model.max_length`` within what the tokenizer and the position table allow."""
    max_length = config.model.max_length
    problems = []
    positions = position_limit(model_config)
    if positions is not None and max_length > positions:
        problems.append(
            f"model.max_length={max_length} exceeds the {positions} positions of "
            f"{config.model.name!r} ({model_config.model_type}); set model.max_length to at most {positions}"
        )
    tokenizer_limit = _tokenizer_limit(tokenizer)
    # One line for one limit: the tokenizer is named only when it is the stricter of the two.
    stricter = tokenizer_limit is not None and (positions is None or tokenizer_limit < positions)
    if stricter and tokenizer_limit is not None and max_length > tokenizer_limit:
        problems.append(
            f"model.max_length={max_length} exceeds the tokenizer's model_max_length="
            f"{tokenizer_limit} for {config.model.name!r}; set model.max_length to at most {tokenizer_limit}"
        )
    return problems


def _head_notice(config: StudyConfig, model_config: Any, label_names: list[str]) -> str | None:
    """A checkpoint fine-tuned for another number of labels gets a fresh head; say so."""
    pretrained = head_label_count(model_config)
    if pretrained is None or pretrained == len(label_names):
        return None
    return (
        f"model.name={config.model.name!r} has a classification head for {pretrained} labels, "
        f"the data has {len(label_names)} ({', '.join(label_names)}): the head is re-initialised "
        "(ignore_mismatched_sizes) and trained from scratch"
    )


def _check_batch_sizes(config: StudyConfig, train_rows: int) -> list[str]:
    """Every batch the space can draw must fit the training split at least once."""
    sizes = config.space.values_of("per_device_train_batch_size")
    accumulation = config.training.gradient_accumulation_steps
    too_large = sorted(int(size) for size in sizes if int(size) * accumulation > train_rows)
    if not too_large:
        return []
    fit = [int(size) for size in sizes if int(size) * accumulation <= train_rows]
    per_step = f" x training.gradient_accumulation_steps={accumulation}" if accumulation > 1 else ""
    dataset = config.dataset
    carved = dataset.test_fraction is not None
    fractions = (
        f"dataset.test_fraction={dataset.test_fraction}"
        + (
            f" and dataset.validation_fraction={dataset.validation_fraction}"
            if dataset.validation_split is None
            else ""
        )
        if carved
        else ""
    )
    return [
        f"search_space.per_device_train_batch_size: {too_large}{per_step} exceed the "
        f"{train_rows} training rows"
        + (f" that {fractions} leave" if carved else "")
        + ", so such a trial would not make one full step; "
        + (
            f"keep the choices {fit}"
            if fit
            else "lower the batch sizes"
            + (f", lower {fractions}" if carved else "")
            + " or raise dataset.max_train_rows"
        )
    ]


def grid_notice(config: StudyConfig) -> str | None:
    """Evaluating every N steps while the batch size is searched: Optuna's pruners compare
    trials that reported at the same step, and a batch-16 trial reaches step 40 after twice
    the training of a batch-32 trial, so no two trials of different batch sizes meet."""
    sizes = batch_sizes(config)
    if config.evaluation.strategy != "steps" or len(sizes) < 2:
        return None
    accumulation = config.training.gradient_accumulation_steps
    unit = math.lcm(*(size * accumulation for size in sizes))
    return (
        f"evaluation.strategy=steps with per_device_train_batch_size searched over {sizes}: "
        "trials with different batch sizes are not compared by the pruner (it compares "
        "trials at the same step, which is another amount of training at another batch "
        f"size); set evaluation.strategy: examples and evaluation.examples to a multiple of "
        f"{unit} (e.g. {unit * max(1, round(config.evaluation.steps * sizes[-1] * accumulation / unit))}) "
        "to compare them on one grid"
    )


def checkpoint_bytes(model_config: Any, config: StudyConfig | None = None) -> int | None:
    """About how large one checkpoint (weights and optimizer state) of this model is: of
    every weight, or in a study with LoRA trials only (``config``), of the most its trials
    train (adapters and head: what their checkpoints hold)."""
    methods = config.space.methods() if config is not None else ["full"]
    try:
        if "full" not in methods and config is not None and peft_available():
            parameters = most_trainable(
                model_config,
                config.lora,
                config.space.values_of("lora_r"),
                config.space.values_of("lora_target_modules"),
            )
        else:
            # On the meta device no memory is allocated: only the shapes are built.
            model = meta_classifier(model_config)
            parameters = sum(parameter.numel() for parameter in model.parameters())
    except Exception:  # an exotic architecture: the space check is skipped, not the sweep
        return None
    return parameters * CHECKPOINT_BYTES_PER_PARAMETER


def _existing_ancestor(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_directory(key: str, directory: Path, needed_bytes: int | None) -> list[str]:
    """``directory`` exists or can be created, is writable, and has room for a checkpoint."""
    ancestor = _existing_ancestor(directory)
    if not ancestor.is_dir():
        return [f"{key}={str(directory)!r} cannot be created: {str(ancestor)!r} is a file"]
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return [
            f"{key}={str(directory)!r} is not writable ({str(ancestor)!r} refuses writes); "
            f"point {key} at a writable directory"
        ]
    if needed_bytes is not None:
        free = shutil.disk_usage(ancestor).free
        if free < needed_bytes:
            return [
                f"{key}={str(directory)!r} has {free / 1e9:.2f} GB free, but one checkpoint of "
                f"this model takes about {needed_bytes / 1e9:.2f} GB; free space or point {key} elsewhere"
            ]
    return []


def _check_directories(config: StudyConfig, model_config: Any) -> list[str]:
    needed = checkpoint_bytes(model_config, config)
    local_root = config.checkpoint_root and config.checkpoint_store is None
    checkpoint_key = "checkpoint_root" if local_root else "output_dir"
    problems = check_directory("output_dir", config.study_dir, None)
    if not problems or checkpoint_key != "output_dir":
        problems += check_directory(checkpoint_key, config.checkpoint_dir, needed)
    return problems


def _check_lora(config: StudyConfig, label_names: list[str]) -> tuple[list[str], str | None]:
    """A study with LoRA trials: peft installed, every set of lora.target_modules a layer of
    the model, lora.modules_to_save modules of it; and what its trials train (a notice)."""
    space = config.space
    if "lora" not in space.methods() or not peft_available():
        return [], None  # without peft: run_preflight's line says what to install
    problems: list[str] = []
    loaded = _collect(problems, lambda: load_pretrained_classifier(config.model.name, label_names))
    if loaded is None:
        return problems, None
    ranks = [int(r) for r in space.values_of("lora_r")]
    return check_adapters(loaded, config.lora, ranks, space.values_of("lora_target_modules"))


def _collect(problems: list[str], check: Callable[[], Any]) -> Any:
    """Run one check; a SweeperError it raises becomes one line among the others."""
    try:
        return check()
    except SweeperError as exc:
        problems.append(str(exc).replace("\n", " "))
        return None


def run_preflight(config: StudyConfig) -> PreflightResult:
    """Check everything a trial needs, without writing anything; raise every failure at once."""
    problems: list[str] = []
    model_config = _collect(problems, lambda: load_model_config(config.model.name))
    tokenizer = _collect(problems, lambda: load_tokenizer(config.model.name))
    if model_config is not None and tokenizer is not None:
        problems += _check_max_length(config, model_config, tokenizer)
    _collect(problems, lambda: check_reachable(config.storage_url, config.workers))
    if config.checkpoint_store is not None:
        # Write, read and delete a small object, in seconds: what every trial will do.
        _collect(problems, lambda: check_store(str(config.checkpoint_root)))
    if model_config is not None:
        problems += _check_directories(config, model_config)
    if "lora" in config.space.methods():
        _collect(problems, require_peft)
    splits = _collect(problems, lambda: load_splits(config.dataset))
    notices: list[str] = [notice for notice in (grid_notice(config),) if notice]
    warm_start, warm_problems = plan_warm_start(
        config, split_fingerprints(splits) if splits is not None else None
    )
    problems += warm_problems
    if splits is not None:
        problems += _check_batch_sizes(config, len(splits.train))
        if model_config is not None:
            notice = _head_notice(config, model_config, splits.label_names)
            notices += [notice] if notice else []
            lora_problems, lora_notice = _check_lora(config, splits.label_names)
            problems += lora_problems
            notices += [lora_notice] if lora_notice else []
    if problems:
        lines = "\n".join(f"  {problem}" for problem in problems)
        raise PreflightError(
            f"study {config.name!r} would fail every trial; nothing was written:\n{lines}"
        )
    return PreflightResult(
        tokenizer=tokenizer,
        splits=splits,
        notices=notices,
        model_fingerprint=model_fingerprint(model_config),
        warm_start=warm_start,
    )
