"""A kept checkpoint scored on one split: the study's metrics, without a Trainer.

What ``sweeper confirm`` needs for the test split: the same numbers ``Trainer.evaluate``
gives (mean cross-entropy with the trial's label smoothing, and every computed metric of
:data:`sweeper.settings.metrics.METRICS`), from a plain length-sorted loop, with nothing
written to disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DataCollatorWithPadding

from sweeper.settings.metrics import METRICS, compute, evaluate_modules
from sweeper.trial.adapters import load_trained
from sweeper.trial.training import release_memory

# The columns a sequence classifier takes; a prepared split also has "length".
_MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "label")


def evaluate_checkpoint(
    checkpoint: Path,
    split: Any,
    *,
    tokenizer: Any,
    label_names: list[str],
    base_model: str,
    batch_size: int,
    label_smoothing: float = 0.0,
) -> dict[str, float]:
    """``{metric name: value}`` of the model saved in ``checkpoint`` on ``split`` (a
    tokenized split of :class:`sweeper.trial.data.PreparedData`), every entry of METRICS.
    A LoRA checkpoint's adapters are loaded onto ``base_model`` (the study's model.name)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    num_labels = len(label_names)
    model = load_trained(checkpoint, base_model, label_names)
    model.to(device).eval()
    columns = [name for name in _MODEL_COLUMNS if name in split.column_names]
    rows = split.select_columns(columns)
    collate = DataCollatorWithPadding(tokenizer)
    loss_sum, logits, references = 0.0, [], []
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                batch = collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
                labels = batch.pop("labels").to(device)
                output = model(**{key: value.to(device) for key, value in batch.items()})
                loss_sum += float(
                    torch.nn.functional.cross_entropy(
                        output.logits.float(),
                        labels,
                        reduction="sum",
                        label_smoothing=label_smoothing,
                    )
                )
                logits.append(output.logits.float().cpu().numpy())
                references.append(labels.cpu().numpy())
    finally:
        del model
        release_memory()
    predictions = np.argmax(np.concatenate(logits), axis=-1) if logits else np.array([])
    truth = np.concatenate(references) if references else np.array([])
    modules = evaluate_modules() or {}
    scores = {}
    for entry in METRICS:
        if entry.computation is None:  # the loss: the Trainer's mean cross-entropy
            scores[entry.name] = loss_sum / max(len(truth), 1)
        else:
            scores[entry.name] = compute(
                entry, predictions, truth, num_labels, modules.get(entry.name)
            )
    return scores
