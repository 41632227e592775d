"""LoRA trials: the adapters ``model.method: lora`` wraps around the frozen pretrained model,
with peft's own API (``LoraConfig``, ``get_peft_model``, ``PeftModel.from_pretrained``).

A LoRA trial trains the adapters on ``lora.target_modules`` and, in full, the modules that
are not pretrained: the classification head always, every module the checkpoint did not
hold (newly initialised, such as DistilBERT's ``pre_classifier`` or the pooler of a
checkpoint saved without one) and ``lora.modules_to_save``. Its checkpoints hold those
alone (adapter_config.json and adapter_model.safetensors), never the base weights.

peft is an extra (``pip install 'sweeper[lora]'``): :func:`require_peft` says so before
anything runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sweeper.errors import ModelError
from sweeper.trial.models import ADAPTER_CONFIG_FILE, load_pretrained_classifier, meta_classifier

# The classification heads of transformers' sequence classifiers: "classifier" (BERT,
# DistilBERT, RoBERTa, DeBERTa, ...) and "score" (decoder models); peft keeps them trainable
# for a SEQ_CLS task as well.
HEAD_MODULES = ("classifier", "score")
# lora.target_modules: auto, per model_type. peft has defaults for BERT-likes but none for
# DistilBERT, whose attention projections are q_lin, k_lin, v_lin and out_lin.
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "xlm-roberta": ("query", "value"),
    "electra": ("query", "value"),
    "camembert": ("query", "value"),
    "distilbert": ("q_lin", "v_lin"),
    "deberta-v2": ("query_proj", "value_proj"),
}
PEFT_EXTRA = "pip install 'sweeper[lora]'"


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft 0.21 asks transformers 5 a question it has renamed (is_gradient_checkpointing):
    a FutureWarning a user can do nothing about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def peft_available() -> bool:
    return importlib.util.find_spec("peft") is not None


def require_peft(checkpoint: Path | None = None) -> None:
    """peft, or an error saying how to install it: for a study with LoRA trials, or for a
    kept LoRA checkpoint to load (confirm's test scores, export)."""
    if peft_available():
        return
    if checkpoint is None:
        raise ModelError(
            "model.method asks for LoRA trials, but peft is not installed; it is an extra: "
            f"{PEFT_EXTRA} (or set model.method: full)"
        )
    raise ModelError(
        f"checkpoint {str(checkpoint)!r} holds LoRA adapters, which load with peft, and peft "
        f"is not installed; it is an extra: {PEFT_EXTRA}"
    )


def is_adapter_checkpoint(checkpoint: Path) -> bool:
    return (Path(checkpoint) / ADAPTER_CONFIG_FILE).is_file()


def _adaptable_modules(model: Any) -> list[str]:
    """The short names of the layers LoRA can wrap (linear layers outside the head), sorted:
    what an error about ``lora.target_modules`` offers instead."""
    import torch

    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not _in_head(name)
    }
    return sorted(names)


def _in_head(name: str) -> bool:
    return name.split(".", 1)[0] in HEAD_MODULES


def _has_module(names: Iterable[str], wanted: str) -> bool:
    """Whether a module named ``wanted`` is among ``names``, by its dotted name or its last
    part, as peft matches target modules and modules to save."""
    return any(name == wanted or name.endswith(f".{wanted}") for name in names)


def target_modules(model: Any, setting: str) -> list[str]:
    """``lora.target_modules`` for ``model``: auto is the architecture's default."""
    if setting != "auto":
        return setting.split(",")
    model_type = str(getattr(model.config, "model_type", ""))
    if model_type in DEFAULT_TARGETS:
        return list(DEFAULT_TARGETS[model_type])
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    known = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    if not known:
        raise ModelError(
            f"lora.target_modules=auto has no default for model_type {model_type!r}; set "
            f"lora.target_modules to some of the model's layers: {_adaptable_modules(model)}"
        )
    return list(known)


def check_targets(model: Any, setting: str) -> list[str]:
    """The modules ``setting`` names, each of which must be a layer of ``model`` (by its
    short or dotted name, as peft matches them); else an error listing the ones it has."""
    targets = target_modules(model, setting)
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not _has_module(names, t)]
    if missing:
        raise ModelError(
            f"lora.target_modules={setting!r}: the model has no module {', '.join(missing)}; "
            f"its layers LoRA can wrap are {_adaptable_modules(model)}: set lora.target_modules "
            "to some of them, or to auto"
        )
    return targets


def kept_trainable(model: Any, new_modules: Iterable[str], extra: Iterable[str]) -> list[str]:
    """The modules a LoRA trial trains in full: the head, the newly initialised ones, and
    ``lora.modules_to_save`` (each checked to be a module of ``model``)."""
    names = {name for name, _ in model.named_modules() if name}  # not the root's ""
    for name in extra:
        if not _has_module(names, name):
            raise ModelError(
                f"lora.modules_to_save names {name!r}, which is not a module of the model; its "
                f"top-level modules are {sorted(n for n in names if n and '.' not in n)}"
            )
    heads = [name for name in HEAD_MODULES if name in names]
    kept = [*heads, *(m for m in new_modules if not _in_head(m)), *extra]
    return list(dict.fromkeys(kept))


@dataclass(frozen=True)
class AdapterSettings:
    """One LoRA trial's adapters: its hyperparameters and the study's lora section."""

    r: int
    alpha: int
    dropout: float
    target_modules: str
    bias: Literal["none", "all", "lora_only"]
    modules_to_save: tuple[str, ...]

    @classmethod
    def of(cls, params: Mapping[str, Any], lora: Any) -> AdapterSettings:
        return cls(
            r=int(params["lora_r"]),
            alpha=int(params["lora_alpha"]),
            dropout=float(params["lora_dropout"]),
            target_modules=str(params["lora_target_modules"]),
            bias=lora.bias,
            modules_to_save=tuple(lora.modules_to_save),
        )


def wrap_with_adapters(model: Any, settings: AdapterSettings, new_modules: Iterable[str]) -> Any:
    """``model`` as a peft model: frozen, with adapters on the target modules and the kept
    modules trainable."""
    require_peft()
    from peft import LoraConfig, TaskType, get_peft_model

    lora_config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=check_targets(model, settings.target_modules),
        bias=settings.bias,
        # peft adds the heads ("classifier", "score") to a SEQ_CLS config's list itself.
        modules_to_save=[
            name
            for name in kept_trainable(model, new_modules, settings.modules_to_save)
            if name not in HEAD_MODULES
        ],
    )
    with _quiet_peft():
        return get_peft_model(model, lora_config)


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable parameters, the model's parameters): of a peft model, what trains (the
    adapters and the kept modules' trained copies) against its base model's own parameters
    (the adapters and those copies are not counted twice)."""
    trainable = total = 0
    for name, parameter in model.named_parameters():
        trainable += parameter.numel() if parameter.requires_grad else 0
        if ".lora_" not in name and ".modules_to_save." not in name:
            total += parameter.numel()
    return trainable, total


def load_trained(checkpoint: Path, base_model: str, label_names: list[str]) -> Any:
    """The classifier a kept checkpoint holds: a full one as saved, an adapter one as the
    study's base model (``base_model``, where this machine finds it) with the adapters and
    kept modules loaded onto it (peft's ``PeftModel.from_pretrained``)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    if not is_adapter_checkpoint(checkpoint):
        return AutoModelForSequenceClassification.from_pretrained(
            str(checkpoint), dtype=torch.float32
        )
    require_peft(checkpoint)
    from peft import PeftModel

    base = load_pretrained_classifier(base_model, label_names).model
    with _quiet_peft():
        return PeftModel.from_pretrained(base, str(checkpoint))


def most_trainable(
    model_config: Any, lora: Any, ranks: Iterable[int], target_sets: Iterable[str], new: Any = ()
) -> int:
    """The most parameters a LoRA trial of this study trains (its largest rank on its largest
    set of target modules), counted on the meta device: what its checkpoints hold."""
    most = 0
    for targets in target_sets:
        settings = AdapterSettings(
            r=max(int(r) for r in ranks),
            alpha=1,
            dropout=0.0,
            target_modules=str(targets),
            bias=lora.bias,
            modules_to_save=tuple(lora.modules_to_save),
        )
        wrapped = wrap_with_adapters(meta_classifier(model_config), settings, new)
        most = max(most, parameter_counts(wrapped)[0])
    return most


def check_adapters(
    loaded: Any, lora: Any, ranks: list[int], target_sets: list[str]
) -> tuple[list[str], str]:
    """The pre-flight of a study with LoRA trials, on the loaded pretrained classifier: one
    problem per target-module set the model lacks (and per unknown lora.modules_to_save),
    and a line saying what its trials train and keep."""
    problems = []
    for targets in target_sets:
        try:
            check_targets(loaded.model, targets)
        except ModelError as error:
            problems.append(str(error))
    try:
        kept = kept_trainable(loaded.model, loaded.new_modules, lora.modules_to_save)
    except ModelError as error:
        problems.append(str(error))
        kept = []
    if problems:
        return problems, ""
    total = parameter_counts(loaded.model)[1]
    try:
        most = most_trainable(loaded.model.config, lora, ranks, target_sets, loaded.new_modules)
    except (TypeError, ValueError) as error:  # peft refuses what it cannot wrap
        return [
            f"lora: peft cannot build these adapters on {loaded.model.__class__.__name__}: {error}"
        ], ""
    new = [m for m in kept if m in loaded.new_modules]
    shown = " or ".join(", ".join(target_modules(loaded.model, t)) for t in target_sets)
    notice = (
        f"LoRA trials train at most {most:,} of {total:,} parameters ({most / total:.2%}): "
        f"adapters of rank up to {max(ranks)} on {shown}, and in full {', '.join(kept)}"
        + (f" ({', '.join(new)} newly initialised)" if new else "")
        + "; their checkpoints hold those alone, never the base weights"
    )
    return problems, notice
