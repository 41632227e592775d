"""``Trainer.hyperparameter_search(backend="optuna")`` as its users run it: the one harness
behind the peer side of the trial-loop benchmark (``benchmarks.trial_loop``: fixed trials
enqueued, pruning off, taking turns with sweeper) and the peers benchmark
(``benchmarks.peer_sides``: sweeper's search space sampled, Optuna's ``MedianPruner``).

The set-up is the transformers documentation's: a ``model_init``, the splits tokenized once
with ``map`` (unpadded: the Trainer pads each batch with ``DataCollatorWithPadding``), an
optuna ``hp_space``, ``compute_objective`` returning ``eval_loss``, ``direction="minimize"``.
A Trainer callback keeps each trial's evaluations, training span and training examples
(:class:`TrialRecord`); each benchmark writes from them what it compares. What differs
between the two is a :class:`Search`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrialRecord:
    """One trial, as the Trainer's callbacks report it."""

    # Every evaluation: {"step", "examples", "metrics" (the Trainer's eval_* dict)}.
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0  # Trainer.train's span, evaluations included
    examples: int = 0  # training examples seen: steps x batch size
    ended_at: float | None = None  # seconds from the search's start to the end of training

    def last_loss(self) -> float | None:
        return self.evaluations[-1]["metrics"].get("eval_loss") if self.evaluations else None


@dataclass
class Search:
    """What a benchmark's search sets: its data, Trainer arguments, space, budget, pruner."""

    model_dir: str
    label_names: Sequence[str]
    max_length: int
    # The raw train and validation splits (datasets with "text" and "label"), read inside
    # the timed span, as a user's script reads them.
    load_splits: Callable[[], tuple[Any, Any]]
    arguments: Any  # TrainingArguments, from training_arguments()
    space: Callable[[Any], dict[str, Any]]  # the hp_space: an optuna trial's parameters
    n_trials: int
    study_name: str
    pruner: Any  # an optuna pruner, passed through to optuna.create_study
    sampler: Any = None  # an optuna sampler; None: Optuna's default
    enqueued: list[dict[str, Any]] = field(default_factory=list)  # trials run first, as given
    trial_ended: Callable[[int, TrialRecord], None] | None = None  # after each trial's training


@dataclass
class SearchRun:
    study: Any  # the optuna study the search ran
    best_run: Any  # hyperparameter_search's BestRun
    records: dict[int, TrialRecord]  # by trial number
    wall_seconds: float  # tokenizer, data and tokenization included
    train_rows: int

    def record(self, number: int) -> TrialRecord:
        return self.records.get(number) or TrialRecord()


def training_arguments(output_dir: Any, eval_steps: int, **settings: Any) -> Any:
    """TrainingArguments as these users write them: evaluation and logging every
    ``eval_steps``, no reporting integrations, no progress bars, then ``settings``."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        eval_strategy="steps",
        eval_steps=eval_steps,
        logging_strategy="steps",
        logging_steps=eval_steps,
        report_to="none",
        disable_tqdm=True,
        **settings,
    )


def load_tokenized(
    model_dir: str, splits: tuple[Any, Any], max_length: int
) -> tuple[Any, Any, Any]:
    """The tokenizer, and the train and validation splits tokenized (unpadded)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        return dict(tokenizer(batch["text"], truncation=True, max_length=max_length))

    train, validation = (
        split.map(encode, batched=True, remove_columns=["text"]) for split in splits
    )
    return tokenizer, train, validation


def classifier_init(model_dir: str, label_names: Sequence[str]) -> Callable[..., Any]:
    """The Trainer's ``model_init``: the pretrained model with a fresh classification head."""
    from transformers import AutoModelForSequenceClassification

    def load(trial: Any = None) -> Any:
        return AutoModelForSequenceClassification.from_pretrained(
            model_dir,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: index for index, name in enumerate(label_names)},
        )

    return load


def accuracy(prediction: Any) -> dict[str, float]:
    import numpy as np

    logits, labels = prediction
    return {"accuracy": float(np.mean(np.argmax(logits, axis=-1) == labels))}


def examples_of(args: Any, state: Any) -> int:
    return int(
        state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps
    )


def without_printer(trainer: Any) -> Any:
    """Without the dict the Trainer prints at every log when tqdm is off: the benchmarks
    print their own lines."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


class Ledger:
    """The trials' records, kept by the Trainer callback :meth:`callback` returns (the
    search's ``hp_space`` opens each trial's record: :meth:`open`)."""

    def __init__(self, started: float, trial_ended: Callable[[int, TrialRecord], None] | None):
        self.records: dict[int, TrialRecord] = {}
        self.current = -1
        self._started = started
        self._train_began = 0.0
        self._trial_ended = trial_ended

    def open(self, number: int) -> None:
        self.current = number
        self.records[number] = TrialRecord()

    def train_began(self) -> None:
        self._train_began = time.perf_counter()

    def evaluated(self, args: Any, state: Any, metrics: dict[str, Any]) -> None:
        self.records[self.current].evaluations.append(
            {"step": state.global_step, "examples": examples_of(args, state), "metrics": metrics}
        )

    def train_ended(self, args: Any, state: Any) -> None:
        """Also for a pruned trial: hyperparameter_search ends training before it raises
        TrialPruned."""
        now = time.perf_counter()
        record = self.records[self.current]
        record.train_seconds = now - self._train_began
        record.examples = examples_of(args, state)
        record.ended_at = round(now - self._started, 2)
        if self._trial_ended is not None:
            self._trial_ended(self.current, record)

    def callback(self) -> Any:
        from transformers import TrainerCallback

        ledger = self

        class Record(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
                ledger.train_began()

            def on_train_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
                ledger.train_ended(args, state)

            def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # type: ignore[no-untyped-def]
                ledger.evaluated(args, state, dict(metrics or {}))

        return Record()


def run_search(search: Search) -> SearchRun:
    """``search`` through ``Trainer.hyperparameter_search``: the clock runs from loading the
    tokenizer to the search's return; ``search.enqueued`` go into the optuna study first."""
    import optuna
    from transformers import DataCollatorWithPadding, Trainer

    started = time.perf_counter()
    tokenizer, train, validation = load_tokenized(
        search.model_dir, search.load_splits(), search.max_length
    )
    ledger = Ledger(started, search.trial_ended)

    def hp_space(trial: optuna.Trial) -> dict[str, Any]:
        ledger.open(trial.number)
        return search.space(trial)

    trainer = Trainer(
        model=None,
        args=search.arguments,
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        model_init=classifier_init(search.model_dir, search.label_names),
        compute_metrics=accuracy,
        callbacks=[ledger.callback()],
    )
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name=search.study_name, direction="minimize")
    for params in search.enqueued:
        study.enqueue_trial(params)
    best_run = without_printer(trainer).hyperparameter_search(
        hp_space=hp_space,
        compute_objective=lambda metrics: metrics["eval_loss"],
        n_trials=search.n_trials,
        direction="minimize",
        backend="optuna",
        storage=storage,
        study_name=search.study_name,
        load_if_exists=True,  # the study above, with its enqueued trials
        sampler=search.sampler,
        pruner=search.pruner,
    )
    wall = time.perf_counter() - started
    return SearchRun(study, best_run, ledger.records, wall, len(train))
