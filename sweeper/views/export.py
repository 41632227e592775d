"""Export the best trial's kept checkpoint as a model directory a pipeline loads.

:func:`export_best` is the entry point. It writes the model (with the study's label names
as ``id2label``, so predictions read ``positive``, not ``LABEL_1``), the tokenizer and the
model card, and nothing of the Trainer's resume state (optimizer, scheduler, RNG), so
``transformers.pipeline("text-classification", model=DIR)`` works on the directory as is.

A LoRA trial's checkpoint holds its adapters and the modules it trained in full, not the base
weights. By default the export loads the base model where this machine finds it (the study's
stored ``model.name``), puts the adapters on it with peft (``PeftModel.from_pretrained``) and
merges them into its weights (``merge_and_unload``): a plain transformers model, which a
``pipeline`` loads with no peft installed. With ``adapter=True`` (``--adapter``) it writes
the adapters alone, as peft saves them (adapter_config.json, adapter_model.safetensors), for
``PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(BASE,
num_labels=N), DIR)``; their config's ``base_model_name_or_path`` is where this machine
loaded the base (the training machine's path is no use elsewhere).

Why not leave an adapter directory to transformers' own loading: with peft 0.21 (the newest
release, 0.21.2, as of this writing) installed, transformers 5.25's
``AutoModelForSequenceClassification.from_pretrained(adapter_dir)`` (and so ``pipeline``) does
load it: it reads adapter_config.json, loads the base from its ``base_model_name_or_path``
(an OSError "Repo id must be in the form ..." where that path is another machine's) and
injects the adapters, with the PeftModel's logits, but with the base config's labels
(``LABEL_0``, ``LABEL_1``). Every adapter method of the model it gives (``save_pretrained``,
``active_adapters``, ``set_adapter``, ``disable_adapters``, ``get_adapter_state_dict``, ...)
then raises ``ValueError: The version of PEFT you are using is not compatible, please use a
version >= 0.22.0`` (transformers' ``MIN_PEFT_VERSION``), a peft newer than any release. peft's
own ``PeftModel.from_pretrained``, onto a base built with the study's labels, has none of
these problems; the merged export needs neither.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna

from sweeper.attributes import (
    BEST_CHECKPOINT_ATTR,
    LABEL_NAMES_ATTR,
)
from sweeper.errors import CheckpointStoreError, ExportError, SweeperError
from sweeper.records.confirmation import (
    companion_name,
    load_confirmation,
    load_confirmed_run,
    on_validation,
)
from sweeper.settings.stored import stored_config
from sweeper.trial.adapters import is_adapter_checkpoint, load_trained, require_peft
from sweeper.trial.checkpoints import fetch_checkpoint, holds_model, is_store_url
from sweeper.views.card import CARD_FILE, ExportedAdapters, best_or_error, render_card


def _checkpoint_of(
    study: optuna.Study, cache: Path | None = None
) -> tuple[optuna.trial.FrozenTrial, Path]:
    """The trial to export and its kept checkpoint directory, or an error that says what to
    do: with a confirmation, the confirmed winner's median seed (a trial of the companion
    study, :attr:`Confirmation.export_run`), else the sweep's best trial. A checkpoint in an
    object store is downloaded, verified against its manifest, into ``cache``."""
    confirmed = load_confirmed_run(study)
    best = confirmed[1] if confirmed is not None else best_or_error(study)
    stored = best.user_attrs.get(BEST_CHECKPOINT_ATTR)
    if not stored:
        raise ExportError(
            f"best_checkpoint=None for trial #{best.number} of study {study.study_name!r}: the "
            f"trial kept no checkpoint, so there is nothing to export; rerun the sweep with "
            f"checkpoints enabled"
        )
    if is_store_url(stored):
        try:
            return best, fetch_checkpoint(str(stored), cache or Path(tempfile.mkdtemp()))
        except CheckpointStoreError as error:
            raise ExportError(
                f"best_checkpoint of trial #{best.number} cannot be fetched: {error}; check the "
                "store's credentials (AWS_ACCESS_KEY_ID, ..., or GOOGLE_APPLICATION_CREDENTIALS)"
            ) from None
    path = Path(str(stored))
    if not holds_model(path):
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise ExportError(
            f"best_checkpoint={str(path)!r}{where} of trial #{best.number} holds no model "
            f"(no config.json, nor a LoRA trial's adapter_config.json): it was deleted or "
            f"moved, or the sweep ran in another directory; "
            f"run export from the directory the sweep ran in, or restore the checkpoint"
        )
    return best, path


# What each form of export writes (transformers' and peft's file names) that another form
# must not leave behind in a --force'd directory: a stale config.json beside adapters makes transformers load both (the weights
# with the adapters applied once more), a stale adapter_config.json beside a model the same.
FULL_MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json")
FULL_MODEL_PATTERNS = ("model-*.safetensors", "pytorch_model*.bin")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")

ExportForm = Literal["full", "merged", "adapter"]


@dataclass(frozen=True)
class Exported:
    """What :func:`export_best` wrote: where, which trial, in which form (a full fine-tune's
    model, a LoRA trial's adapters merged into its base, or the adapters alone) and, for a
    LoRA trial, the base model as this machine loaded it."""

    target: Path
    trial: optuna.trial.FrozenTrial
    form: ExportForm
    base_model: str | None = None
    num_labels: int = 0

    def what(self) -> str:
        """What was exported, for the line the CLI prints."""
        if self.form == "merged":
            return f"merged LoRA adapters onto {self.base_model} (a plain transformers model)"
        if self.form == "adapter":
            return f"the LoRA adapter only (base model {self.base_model})"
        return "the fine-tuned model"

    def how_to_load(self) -> str:
        if self.form == "adapter":
            return (
                "peft.PeftModel.from_pretrained(transformers.AutoModelForSequenceClassification"
                f'.from_pretrained("{self.base_model}", num_labels={self.num_labels}), '
                f'"{self.target}")'
            )
        return f'transformers.pipeline("text-classification", model="{self.target}")'


def export_best(
    study: optuna.Study, target: Path, force: bool = False, adapter: bool = False
) -> Exported:
    """Write the best trial's kept checkpoint (model, tokenizer, card) to ``target``: a LoRA
    trial's adapters merged into its base model, or with ``adapter`` the adapters alone
    (an error for a full fine-tune, before anything is written)."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ExportError(f"--to={str(target)!r} is a file; give a directory to export into")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise ExportError(
            f"--to={str(target)!r} is not empty; choose a new directory or pass --force to "
            f"overwrite the files there"
        )
    with tempfile.TemporaryDirectory(prefix="sweeper-export-") as cache:
        best, checkpoint = _checkpoint_of(study, Path(cache))
        if adapter and not is_adapter_checkpoint(checkpoint):
            raise ExportError(
                f"--adapter: {_which_trial(study, best)} is a full fine-tune (its checkpoint "
                f"{str(checkpoint)!r} holds every weight and no LoRA adapters), so there is no "
                "adapter to export; export it without --adapter"
            )
        if is_adapter_checkpoint(checkpoint):
            return _export_lora(study, best, checkpoint, target, adapter)
        return _export(study, best, checkpoint, target)


def _which_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    name = companion_name(study.study_name) if confirmed_export(study) else study.study_name
    return f"trial #{trial.number} of study {name!r}"


def _label_names(study: optuna.Study) -> list[str]:
    return [str(name) for name in study.user_attrs.get(LABEL_NAMES_ATTR) or []]


def _set_labels(model: Any, label_names: list[str], checkpoint: Path) -> None:
    """The study's label names as the model's ``id2label``/``label2id``."""
    if not label_names:
        return
    if len(label_names) != model.config.num_labels:
        raise ExportError(
            f"study label_names={label_names} has {len(label_names)} labels but the "
            f"classifier of checkpoint {str(checkpoint)!r} has {model.config.num_labels} outputs"
        )
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {name: index for index, name in enumerate(label_names)}


def _clear_other_form(target: Path, form: ExportForm) -> None:
    """Remove the model files of the other form from a --force'd ``target``."""
    names = list(FULL_MODEL_FILES if form == "adapter" else ADAPTER_FILES)
    if form == "adapter":
        names += [path.name for pattern in FULL_MODEL_PATTERNS for path in target.glob(pattern)]
    for name in names:
        (target / name).unlink(missing_ok=True)


def _load_tokenizer(checkpoint: Path, best: optuna.trial.FrozenTrial) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(checkpoint))
    except (OSError, ValueError) as exc:
        raise ExportError(
            f"best_checkpoint={str(checkpoint)!r} of trial #{best.number} cannot be loaded: {exc}"
        ) from exc


def _export(
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    checkpoint: Path,
    target: Path,
) -> Exported:
    """Load a full fine-tune's checkpoint (with the study's label names) and save it,
    tokenizer and card."""
    from transformers import AutoModelForSequenceClassification

    label_names = _label_names(study)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint))
    except (OSError, ValueError) as exc:
        raise ExportError(
            f"best_checkpoint={str(checkpoint)!r} of trial #{best.number} cannot be loaded: {exc}"
        ) from exc
    tokenizer = _load_tokenizer(checkpoint, best)
    _set_labels(model, label_names, checkpoint)
    target.mkdir(parents=True, exist_ok=True)
    _clear_other_form(target, "full")
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    _write_card(study, best, target)
    return Exported(target, best, "full", num_labels=model.config.num_labels)


def _write_card(
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    target: Path,
    adapters: ExportedAdapters | None = None,
) -> None:
    # The card of what was exported (render_card picks the confirmed winner's run itself).
    trial = None if confirmed_export(study) else best
    (target / CARD_FILE).write_text(render_card(study, trial, adapters), encoding="utf-8")


def _load_adapters(
    study: optuna.Study, best: optuna.trial.FrozenTrial, checkpoint: Path
) -> tuple[Any, list[str]]:
    """The LoRA checkpoint on its base model (a peft ``PeftModel``), and the label names."""
    label_names = _label_names(study)
    if not label_names:
        raise ExportError(
            f"label_names=None: study {study.study_name!r} stored no label names, which the "
            f"head of {_which_trial(study, best)}'s LoRA adapters is rebuilt with; store them "
            "in the order of the classifier's outputs, e.g. "
            "study.set_user_attr('label_names', ['negative', 'positive'])"
        )
    base = stored_config(study.study_name, study.user_attrs).model.name
    try:
        require_peft(checkpoint)
    except SweeperError as error:  # what to install, not where the model is
        raise ExportError(str(error)) from None
    try:
        return load_trained(checkpoint, base, label_names), label_names
    except (SweeperError, OSError, ValueError) as exc:
        raise ExportError(
            f"best_checkpoint={str(checkpoint)!r} of {_which_trial(study, best)} holds LoRA "
            f"adapters, and they cannot be loaded onto the study's base model "
            f"model.name={base!r}: {exc}; make that model reachable from this machine"
        ) from exc


def _export_lora(
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    checkpoint: Path,
    target: Path,
    adapter_only: bool,
) -> Exported:
    """A LoRA checkpoint: its adapters merged into the base model, or alone (``adapter_only``)."""
    # First: without peft installed, this is the error that says to install it.
    model, label_names = _load_adapters(study, best, checkpoint)
    from peft.utils.other import ModulesToSaveWrapper

    tokenizer = _load_tokenizer(checkpoint, best)
    config = model.peft_config[model.active_adapter]
    base = model.get_base_model()
    # Where this machine loaded the base: what the exported adapter config names.
    base_path = str(base.name_or_path)
    adapters = ExportedAdapters(
        adapter_only=adapter_only,
        base_model=base_path,
        # A set of names as sweeper wraps them (a str would be a peft regex: kept whole).
        target_modules=(
            (config.target_modules,)
            if isinstance(config.target_modules, str)
            else tuple(sorted(config.target_modules))
        ),
        kept_modules=tuple(
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, ModulesToSaveWrapper)
        ),
        label_names=tuple(label_names),
    )
    _set_labels(base, label_names, checkpoint)
    target.mkdir(parents=True, exist_ok=True)
    form: ExportForm = "adapter" if adapter_only else "merged"
    _clear_other_form(target, form)
    if adapter_only:
        config.base_model_name_or_path = base_path
        # peft adds its task's heads to the list on every load: once each is enough.
        config.modules_to_save = list(dict.fromkeys(config.modules_to_save or []))
        model.save_pretrained(str(target))
    else:
        model.merge_and_unload().save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    _write_card(study, best, target, adapters)
    return Exported(target, best, form, base_path, len(label_names))


def confirmed_export(study: optuna.Study) -> str | None:
    """What ``sweeper export`` says it exported when the study is confirmed; None otherwise."""
    confirmation = load_confirmation(study)
    if confirmation is None:
        return None
    winner, run = confirmation.winning, confirmation.export_run
    return (
        f"the confirmed winner {winner.id} ({winner.name}'s configuration, best mean "
        f"{confirmation.metric} over {len(confirmation.seeds)} seeds), seed {run.seed}: the "
        f"median {on_validation(confirmation.metric)} of its seeds (trial #{run.trial} of "
        f"{study.study_name}.confirm)"
    )
