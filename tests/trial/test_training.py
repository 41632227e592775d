"""The Trainer a trial builds: how it batches the data it trains and evaluates on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from transformers import AutoTokenizer

from sweeper.settings.study_file import load_study_config
from sweeper.trial.data import prepare_data
from sweeper.trial.models import load_classifier
from sweeper.trial.training import build_trainer, train_trial

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


def test_warmup_ratio_ramps_the_learning_rate_over_that_share_of_the_steps(
    tmp_path: Path, write_study: Callable[..., Path]
) -> None:
    """transformers 5 reads warmup_steps below 1 as a share of the steps: 0.25 of 8 is 2."""
    config = load_study_config(write_study())
    tokenizer = AutoTokenizer.from_pretrained(config.model.name)
    data = prepare_data(config.dataset, tokenizer, config.model.max_length, tmp_path / "cache")
    model = load_classifier(config.model.name, data.label_names)
    params = {**PARAMS, "warmup_ratio": 0.25}
    trainer = build_trainer(config, params, data, model, tmp_path / "trial")
    trainer.create_optimizer_and_scheduler(num_training_steps=8)
    assert trainer.lr_scheduler is not None and trainer.optimizer is not None
    rates = []
    for _ in range(8):
        rates.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    peak = params["learning_rate"]
    assert rates[0] == 0.0 and 0.0 < rates[1] < peak  # warming up over 2 steps
    assert rates[2] == peak  # then the linear decay starts from the peak
    assert rates[3] < rates[2] and rates[7] < rates[3]


def test_a_row_without_a_logged_training_loss_has_none(
    tmp_path: Path, write_study: Callable[..., Path]
) -> None:
    """12 steps, evaluated every 5: steps 5 and 10 logged a training loss, the extra
    evaluation at the last step (12) did not, and must not repeat step 10's."""
    config = load_study_config(write_study(evaluation={"strategy": "steps", "steps": 5}))
    tokenizer = AutoTokenizer.from_pretrained(config.model.name)
    data = prepare_data(config.dataset, tokenizer, config.model.max_length, tmp_path / "cache")
    outcome = train_trial(config, PARAMS, data, tmp_path / "trial")
    assert [row["step"] for row in outcome.history] == [5, 10, 12]
    losses = [row["training_loss"] for row in outcome.history]
    assert losses[0] is not None and losses[1] is not None and losses[2] is None


def test_evaluate_checkpoint_gives_what_trainer_evaluate_gives(
    tmp_path: Path, write_study: Callable[..., Path]
) -> None:
    """sweeper.trial.evaluation scores a saved checkpoint on a split without a Trainer; its
    loss (with label smoothing) and metrics are the Trainer's."""
    import math

    from sweeper.trial.evaluation import evaluate_checkpoint

    config = load_study_config(write_study(training={"eval_batch_size": 8}))
    tokenizer = AutoTokenizer.from_pretrained(config.model.name)
    data = prepare_data(config.dataset, tokenizer, config.model.max_length, tmp_path / "cache")
    model = load_classifier(config.model.name, data.label_names)
    params = {**PARAMS, "label_smoothing_factor": 0.1}
    trainer = build_trainer(config, params, data, model, tmp_path / "trial")
    trainer.train()
    checkpoint = tmp_path / "kept"
    trainer.save_model(str(checkpoint))
    expected = trainer.evaluate()

    scores = evaluate_checkpoint(
        checkpoint,
        data.validation,
        tokenizer=tokenizer,
        label_names=data.label_names,
        base_model=config.model.name,
        batch_size=8,
        label_smoothing=0.1,
    )
    assert math.isclose(scores["validation_loss"], expected["eval_loss"], rel_tol=1e-4)
    assert scores["accuracy"] == expected["eval_accuracy"]
    assert math.isclose(scores["f1"], expected["eval_f1"], rel_tol=1e-9)
    assert not list(checkpoint.parent.glob("test-evaluation*"))  # nothing written
