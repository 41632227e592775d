"""The Trainer a trial builds: how it batches the data it trains and evaluates on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from transformers import AutoTokenizer

from sweeper.config import load_study_config
from sweeper.data import prepare_data
from sweeper.models import load_classifier
from sweeper.training import build_trainer

PARAMS = {
    "learning_rate": 1e-3,
    "per_device_train_batch_size": 16,
    "num_train_epochs": 1,
    "seed": 42,
    "warmup_ratio": 0.0,
    "weight_decay": 0.0,
}


def test_evaluation_runs_longest_first_and_training_batches_group_by_length(
    tmp_path: Path, write_study: Callable[..., Path]
) -> None:
    config = load_study_config(
        write_study(model={"max_length": 512}, training={"eval_batch_size": 8})
    )
    tokenizer = AutoTokenizer.from_pretrained(config.model.name)
    data = prepare_data(config.dataset, tokenizer, config.model.max_length, tmp_path / "cache")
    model = load_classifier(config.model.name, data.label_names)
    trainer = build_trainer(config, PARAMS, data, model, tmp_path / "trial")

    lengths = data.validation["length"]
    eval_widths = [batch["input_ids"].shape[1] for batch in trainer.get_eval_dataloader()]
    # Every row once, in the stored (longest-first) order: each batch pads to its first row,
    # the least padding any order of these rows allows.
    assert sum(len(batch["labels"]) for batch in trainer.get_eval_dataloader()) == len(lengths)
    assert eval_widths == [max(lengths[i : i + 8]) for i in range(0, len(lengths), 8)]
    assert eval_widths == sorted(eval_widths, reverse=True)
    assert len(set(eval_widths)) > 2  # the data has reviews of many lengths

    # Training batches are shuffled, but grouped by length: less padding than random batches.
    def padded_tokens(widths_and_sizes: list[tuple[int, int]]) -> int:
        return sum(width * size for width, size in widths_and_sizes)

    grouped = padded_tokens(
        [(b["input_ids"].shape[1], len(b["labels"])) for b in trainer.get_train_dataloader()]
    )
    train_lengths = data.train["length"]
    in_stored_order = padded_tokens(
        [
            (max(train_lengths[i : i + 16]), len(train_lengths[i : i + 16]))
            for i in range(0, len(train_lengths), 16)
        ]
    )
    assert grouped < in_stored_order
