"""Export the best trial's kept checkpoint as a model directory a pipeline loads.

:func:`export_best` is the entry point. It writes the model (with the study's label names
as ``id2label``, so predictions read ``positive``, not ``LABEL_1``), the tokenizer and the
model card, and nothing of the Trainer's resume state (optimizer, scheduler, RNG), so
``transformers.pipeline("text-classification", model=DIR)`` works on the directory as is.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna

from sweeper.attributes import (
    BEST_CHECKPOINT_ATTR,
    LABEL_NAMES_ATTR,
)
from sweeper.errors import CheckpointStoreError, ExportError
from sweeper.records.confirmation import load_confirmation, load_confirmed_run, on_validation
from sweeper.trial.checkpoints import fetch_checkpoint, is_store_url
from sweeper.views.card import CARD_FILE, best_or_error, render_card


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
    if not (path / "config.json").is_file():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise ExportError(
            f"best_checkpoint={str(path)!r}{where} of trial #{best.number} holds no model "
            f"(no config.json): it was deleted or moved, or the sweep ran in another directory; "
            f"run export from the directory the sweep ran in, or restore the checkpoint"
        )
    return best, path


def export_best(study: optuna.Study, target: Path, force: bool = False) -> Path:
    """Write the best trial's kept checkpoint (model, tokenizer, card) to ``target``."""
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
        return _export(study, best, checkpoint, target)


def _export(
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    checkpoint: Path,
    target: Path,
) -> Path:
    """Load the checkpoint (with the study's label names) and save it, tokenizer and card."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    label_names = [str(name) for name in study.user_attrs.get(LABEL_NAMES_ATTR) or []]
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint))
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    except (OSError, ValueError) as exc:
        raise ExportError(
            f"best_checkpoint={str(checkpoint)!r} of trial #{best.number} cannot be loaded: {exc}"
        ) from exc
    if label_names:
        if len(label_names) != model.config.num_labels:
            raise ExportError(
                f"study label_names={label_names} has {len(label_names)} labels but the "
                f"checkpoint's classifier has {model.config.num_labels} outputs"
            )
        model.config.id2label = dict(enumerate(label_names))
        model.config.label2id = {name: index for index, name in enumerate(label_names)}
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    # The card of what was exported (render_card picks the confirmed winner's run itself).
    card = render_card(study) if confirmed_export(study) else render_card(study, best)
    (target / CARD_FILE).write_text(card, encoding="utf-8")
    return target


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
