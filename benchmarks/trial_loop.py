"""The trial loop: sweeper against ``Trainer.hyperparameter_search(backend="optuna")``.

The same fixed trials run twice in one process, on the same rows, the same model and the
same evaluation schedule: once through sweeper (``sweeper.study.sweep.run_study`` on a
``StudyConfig`` whose baselines are the trials) and once through transformers'
``hyperparameter_search`` set up as its documentation shows (a ``model_init``, a dataset
tokenized once with ``map``, dynamic padding with ``DataCollatorWithPadding``, an optuna
``hp_space``), with the trials enqueued in the optuna study it runs: the harness of
``benchmarks.hyperparameter_search``, which the peers benchmark shares.

By default the two sides take turns trial by trial (sweeper trial 0, hyperparameter_search
trial 0, sweeper trial 1, ...): the machine is shared, and a burst of load from elsewhere
then lands on both sides alike. Each side's wall time is the sum of its own turns, its
setup (tokenizer, data, tokenization) included. ``--order sequential`` runs one side after
the other instead.

Printed: each side's wall time and their ratio, the best accuracy and validation loss of
each, the number of evaluations each ran (neither side may do less work than the other),
and sweeper's share of wall time outside training and evaluation.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import (
    LABEL_COLUMN,
    LABEL_NAMES,
    MINILM,
    MINILM_PACKAGE,
    REPO_ROOT,
    TEXT,
    environment,
    quiet,
    split_dataset_section,
    write_results,
)
from benchmarks.hyperparameter_search import Search, TrialRecord, run_search, training_arguments

NAME = "trial-loop"
HELP = (
    "sweeper's trial loop against Trainer.hyperparameter_search(backend='optuna'): "
    "same trials, data and model; wall time, quality, evaluations, sweeper overhead"
)

DEFAULT_DATA = REPO_ROOT / "data" / "imdb-3k.csv.gz"
DEFAULT_LEARNING_RATES = (1e-5, 3e-5, 5e-5, 1e-4)
SWEEPER, HF = "sweeper", "hyperparameter_search"

# The targets docs/benchmarks/trial-loop.md reports against.
TARGET_RATIO, TARGET_OVERHEAD, TARGET_ACCURACY_GAP = 0.8, 0.03, 0.02

QUICK = {"train_rows": 200, "validation_rows": 100, "max_length": 128, "trials": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke-test sizes: {QUICK['train_rows']}/{QUICK['validation_rows']} rows, max "
        f"length {QUICK['max_length']}, {QUICK['trials']} trials (explicit options still win)",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="IMDb-style CSV")
    parser.add_argument("--model", default=MINILM, help="model directory or package:...")
    parser.add_argument("--train-rows", type=int, default=None, help="default 1000")
    parser.add_argument("--validation-rows", type=int, default=None, help="default 500")
    parser.add_argument("--max-length", type=int, default=None, help="default 256")
    parser.add_argument(
        "--trials", type=int, default=None, help="how many of --learning-rates to run (default all)"
    )
    parser.add_argument(
        "--learning-rates",
        default=",".join(f"{lr:g}" for lr in DEFAULT_LEARNING_RATES),
        help="one trial per learning rate, enqueued in this order (default %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="train batch (default 32)")
    parser.add_argument("--eval-batch-size", type=int, default=32, help="default 32")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial (default 1)")
    parser.add_argument("--seed", type=int, default=42, help="trial seed and split seed")
    parser.add_argument(
        "--evals-per-epoch",
        type=int,
        default=2,
        help="evaluations per epoch on both sides, the last at the end of the epoch (default 2)",
    )
    parser.add_argument(
        "--order",
        choices=("interleaved", "sequential"),
        default="interleaved",
        help="take turns trial by trial (default), or run one side after the other",
    )
    parser.add_argument(
        "--first",
        choices=(SWEEPER, HF),
        default=SWEEPER,
        help="which side goes first (default %(default)s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")


def _resolve_sizes(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(getattr(args, "quick", False))
    learning_rates = [float(value) for value in str(args.learning_rates).split(",") if value]

    def pick(name: str, full: int | None) -> int | None:
        given = getattr(args, name)
        if given is not None:
            return int(given)
        return QUICK[name] if quick else full

    trials = pick("trials", len(learning_rates))
    assert trials is not None
    if not 1 <= trials <= len(learning_rates):
        raise SystemExit(f"--trials must lie in 1..{len(learning_rates)}, but got {trials}")
    return {
        "quick": quick,
        "train_rows": pick("train_rows", 1000),
        "validation_rows": pick("validation_rows", 500),
        "max_length": pick("max_length", 256),
        "learning_rates": learning_rates[:trials],
        "batch_size": int(args.batch_size),
        "eval_batch_size": int(args.eval_batch_size),
        "epochs": int(args.epochs),
        "seed": int(args.seed),
        "evals_per_epoch": int(args.evals_per_epoch),
    }


# --- the data both sides read ---------------------------------------------------------------------


def write_split(
    source: Path, directory: Path, train_rows: int, validation_rows: int, seed: int
) -> dict[str, dict[str, int]]:
    """A stratified, seeded split written as ``train.csv`` and ``validation.csv``: the one set
    of rows both sides train and validate on."""
    import pandas as pd

    frame = pd.read_csv(source)[[TEXT, LABEL_COLUMN]]
    if train_rows + validation_rows > len(frame):
        raise SystemExit(
            f"{source} holds {len(frame)} rows; asked for {train_rows}+{validation_rows}"
        )
    shuffled = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    groups = dict(tuple(shuffled.groupby(LABEL_COLUMN)))
    shares = {label: len(group) / len(frame) for label, group in groups.items()}

    def counts(total: int) -> dict[str, int]:
        wanted = {label: int(total * share) for label, share in shares.items()}
        for label in sorted(shares, key=lambda label: shares[label], reverse=True)[
            : total - sum(wanted.values())
        ]:
            wanted[label] += 1
        return wanted

    n_validation, n_train = counts(validation_rows), counts(train_rows)
    validation = pd.concat([groups[label].iloc[: n_validation[label]] for label in groups])
    train = pd.concat(
        [
            groups[label].iloc[n_validation[label] : n_validation[label] + n_train[label]]
            for label in groups
        ]
    )
    directory.mkdir(parents=True, exist_ok=True)
    train.sample(frac=1.0, random_state=seed).to_csv(directory / "train.csv", index=False)
    validation.sample(frac=1.0, random_state=seed).to_csv(directory / "validation.csv", index=False)
    return {
        "train": {str(k): int(v) for k, v in train[LABEL_COLUMN].value_counts().items()},
        "validation": {str(k): int(v) for k, v in validation[LABEL_COLUMN].value_counts().items()},
    }


def eval_steps_for(sizes: dict[str, Any]) -> int:
    steps_per_epoch = math.ceil(sizes["train_rows"] / sizes["batch_size"])
    return max(1, math.ceil(steps_per_epoch / sizes["evals_per_epoch"]))


# --- taking turns ---------------------------------------------------------------------------------


def fresh_accelerate_state() -> None:
    """Forget accelerate's process-wide state before a side's turn. Its first Trainer fixes
    the mixed precision for the whole process; on a GPU sweeper trains in bf16 and the
    documented hyperparameter_search set-up in fp32, and the second side's Trainer would
    fail ("AcceleratorState has already been initialized and cannot be changed")."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)


class Turns:
    """Lets two threads run one at a time, handing over between trials, and times each side's
    turns. A side that finishes hands over for good; a side alone never waits."""

    def __init__(self, first: str, sides: tuple[str, str], interleave: bool):
        self._condition = threading.Condition()
        self._holder = first
        self._sides = sides
        self._interleave = interleave
        self._since: float | None = None
        self.seconds = dict.fromkeys(sides, 0.0)
        self.turns = dict.fromkeys(sides, 0)
        self.log: list[tuple[str, float]] = []  # (side, seconds) of every turn, in order
        self._finished: set[str] = set()

    def _other(self, side: str) -> str:
        return self._sides[1] if side == self._sides[0] else self._sides[0]

    def _close_turn(self, side: str) -> None:
        now = time.perf_counter()
        if self._since is not None:
            self.seconds[side] += now - self._since
            self.log.append((side, round(now - self._since, 3)))
        self._since = now

    def begin(self, side: str) -> None:
        with self._condition:
            self._condition.wait_for(lambda: self._holder == side)
            if self._since is None:
                self._since = time.perf_counter()
            self.turns[side] += 1
            fresh_accelerate_state()

    def hand_over(self, side: str) -> None:
        """Between two trials of ``side``: let the other side run one, then continue."""
        if not self._interleave:
            return
        with self._condition:
            other = self._other(side)
            if other in self._finished:
                return
            self._close_turn(side)
            self._holder = other
            self._condition.notify_all()
            self._condition.wait_for(lambda: self._holder == side)
            self.turns[side] += 1
            fresh_accelerate_state()

    def finish(self, side: str) -> None:
        with self._condition:
            self._close_turn(side)
            self._finished.add(side)
            other = self._other(side)
            if other not in self._finished:
                self._holder = other
            self._condition.notify_all()


# --- sweeper --------------------------------------------------------------------------------------


def sweeper_config(sizes: dict[str, Any], data_dir: Path, model: str, runs: Path) -> Any:
    from sweeper.settings.config import StudyConfig

    return StudyConfig.model_validate(
        {
            "name": "trial-loop",
            "dataset": split_dataset_section(data_dir),
            "model": {"name": model, "max_length": sizes["max_length"]},
            "search_space": {
                "learning_rate": {"low": 1e-6, "high": 1e-3, "log": True},
                "per_device_train_batch_size": sizes["batch_size"],
                "num_train_epochs": sizes["epochs"],
                "seed": sizes["seed"],
                "warmup_ratio": 0.0,
                "weight_decay": 0.0,
            },
            "baselines": [
                {"name": f"lr {lr:g}", "params": {"learning_rate": lr}}
                for lr in sizes["learning_rates"]
            ],
            "training": {"eval_batch_size": sizes["eval_batch_size"]},
            "evaluation": {"strategy": "steps", "steps": eval_steps_for(sizes)},
            "objective": {"metric": "validation_loss"},
            "pruner": {"type": "none"},
            "budget": {"n_trials": len(sizes["learning_rates"])},
            "output_dir": str(runs),
        }
    )


def run_sweeper(
    sizes: dict[str, Any], data_dir: Path, model: str, scratch: Path, turns: Turns
) -> dict[str, Any]:
    turns.begin(SWEEPER)
    from sweeper.study.sweep import run_study

    config = sweeper_config(sizes, data_dir, model, scratch / "sweeper-runs")
    started = time.perf_counter()
    try:
        study = run_study(
            config,
            show_progress=False,
            extra_callbacks=[lambda study, trial: turns.hand_over(SWEEPER)],
        )
    finally:
        turns.finish(SWEEPER)
    span = time.perf_counter() - started
    trials = []
    for trial in study.get_trials():
        history = trial.user_attrs.get("history", [])
        best_step = trial.user_attrs.get("best_step")
        best_row = next((row for row in history if row["step"] == best_step), None)
        trials.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "learning_rate": trial.params.get("learning_rate"),
                "evaluations": len(history),
                "validation_loss": trial.value,
                "accuracy": best_row["accuracy"] if best_row else None,
                "best_step": best_step,
                "train_seconds": trial.user_attrs.get("train_seconds", 0.0),
                "eval_seconds": trial.user_attrs.get("eval_seconds", 0.0),
                "history": history,
            }
        )
    return {"trials": trials, "span_seconds": span}


# --- Trainer.hyperparameter_search, through benchmarks.hyperparameter_search ----------------------


def fixed_trials(sizes: dict[str, Any]) -> list[dict[str, Any]]:
    """Optuna's way to run chosen trials: these go into the study the search loads."""
    return [
        {
            "learning_rate": lr,
            "per_device_train_batch_size": sizes["batch_size"],
            "num_train_epochs": sizes["epochs"],
            "seed": sizes["seed"],
        }
        for lr in sizes["learning_rates"]
    ]


def csv_splits(data_dir: Path) -> tuple[Any, Any]:
    """``train.csv`` and ``validation.csv`` as datasets of text and label ids."""
    import pandas as pd
    from datasets import Dataset

    label_ids = {name: index for index, name in enumerate(LABEL_NAMES)}

    def load(split: str) -> Any:
        frame = pd.read_csv(data_dir / f"{split}.csv")
        return Dataset.from_dict(
            {"text": frame[TEXT].tolist(), "label": frame[LABEL_COLUMN].map(label_ids).tolist()}
        )

    return load("train"), load("validation")


def hf_space(turns: Turns) -> Callable[[Any], dict[str, Any]]:
    """The hp_space: the documentation's ranges (the enqueued trials fix the values); each
    trial after the first hands the turn to sweeper before it starts."""

    def space(trial: Any) -> dict[str, Any]:
        if trial.number > 0:
            turns.hand_over(HF)  # the previous trial is done: sweeper's turn
        return {
            "learning_rate": trial.suggest_float("learning_rate", 1e-6, 1e-3, log=True),
            "per_device_train_batch_size": trial.suggest_categorical(
                "per_device_train_batch_size", [8, 16, 32, 64]
            ),
            "num_train_epochs": trial.suggest_int("num_train_epochs", 1, 5),
            "seed": trial.suggest_categorical("seed", [42, 7, 1234]),
        }

    return space


def run_hyperparameter_search(
    sizes: dict[str, Any], data_dir: Path, model: str, scratch: Path, turns: Turns
) -> dict[str, Any]:
    turns.begin(HF)
    import optuna

    from sweeper.trial.models import resolve_local_path

    trials = fixed_trials(sizes)
    try:
        search = run_search(
            Search(
                model_dir=str(resolve_local_path(model) or model),
                label_names=LABEL_NAMES,
                max_length=sizes["max_length"],
                load_splits=lambda: csv_splits(data_dir),
                arguments=training_arguments(
                    scratch / "hf-search",
                    eval_steps_for(sizes),
                    per_device_eval_batch_size=sizes["eval_batch_size"],
                ),
                space=hf_space(turns),
                n_trials=len(trials),
                study_name="hf",
                pruner=optuna.pruners.NopPruner(),  # pruning off, as on the sweeper side
                enqueued=trials,
            )
        )
    finally:
        turns.finish(HF)
    return {
        "trials": [
            hf_trial(trial, search.record(trial.number)) for trial in search.study.get_trials()
        ],
        "span_seconds": search.wall_seconds,
    }


def hf_trial(trial: Any, record: TrialRecord) -> dict[str, Any]:
    """One hyperparameter_search trial, in the fields of a sweeper trial."""
    history = [{"step": row["step"], **row["metrics"]} for row in record.evaluations]
    eval_seconds = sum(row.get("eval_runtime", 0.0) for row in history)
    return {
        "number": trial.number,
        "state": trial.state.name,
        "learning_rate": trial.params.get("learning_rate"),
        "evaluations": len(history),
        # hyperparameter_search scores a trial by its last evaluation
        "validation_loss": trial.value,
        "accuracy": history[-1].get("eval_accuracy") if history else None,
        "train_seconds": round(record.train_seconds - eval_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "history": history,
    }


# --- the run --------------------------------------------------------------------------------------


def _best(trials: list[dict[str, Any]]) -> dict[str, Any]:
    scored = [t for t in trials if t["validation_loss"] is not None]
    return min(scored, key=lambda t: t["validation_loss"]) if scored else {}


def device_text() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def run_sides(
    args: argparse.Namespace, sizes: dict[str, Any], data_dir: Path, scratch: Path, turns: Turns
) -> tuple[dict[str, Any], float]:
    """Both sides, taking turns in two threads or one after the other: each side's results,
    and the wall time of the two together. A side's failure is raised once both are done."""
    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}

    def side(name: str, function: Any) -> None:
        try:
            results[name] = function(sizes, data_dir, args.model, scratch, turns)
        except BaseException as exc:  # reported below, after the other side finished
            errors[name] = exc
            turns.finish(name)

    started = time.perf_counter()
    if args.order == "interleaved":
        worker = threading.Thread(target=side, args=(HF, run_hyperparameter_search))
        worker.start()
        side(SWEEPER, run_sweeper)
        worker.join()
    else:  # one side after the other: hand_over does nothing, finish passes the turn
        order = [(SWEEPER, run_sweeper), (HF, run_hyperparameter_search)]
        if args.first == HF:
            order.reverse()
        for name, function in order:
            side(name, function)
    total = time.perf_counter() - started
    for name, exc in errors.items():
        print(f"[trial-loop] {name} failed: {exc!r}", flush=True)
    if errors:
        raise next(iter(errors.values()))
    return results, total


def run(args: argparse.Namespace) -> int:
    # Both sides' libraries are imported before the clock starts, so neither pays for them.
    import datasets  # noqa: F401
    import transformers  # noqa: F401

    import sweeper.study.sweep  # noqa: F401

    quiet()
    sizes = _resolve_sizes(args)
    scratch = Path(tempfile.mkdtemp(prefix="sweeper-bench-trial-loop-"))
    env = environment((MINILM_PACKAGE,))
    device = device_text()
    print(
        f"[trial-loop] {len(sizes['learning_rates'])} trials (lr {sizes['learning_rates']}), "
        f"batch {sizes['batch_size']}, {sizes['epochs']} epoch(s), {sizes['train_rows']} train / "
        f"{sizes['validation_rows']} validation rows, max length {sizes['max_length']}, "
        f"evaluation every {eval_steps_for(sizes)} steps; {device}; order {args.order}, "
        f"{args.first} first",
        flush=True,
    )
    try:
        data_dir = scratch / "data"
        balance = write_split(
            args.data, data_dir, sizes["train_rows"], sizes["validation_rows"], sizes["seed"]
        )
        turns = Turns(args.first, (SWEEPER, HF), args.order == "interleaved")
        results, total = run_sides(args, sizes, data_dir, scratch, turns)
    finally:
        if args.keep:
            print(f"[trial-loop] scratch kept at {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    summary = {**summarize(sizes, results, turns.seconds), "total_seconds": round(total, 2)}
    _print_summary(summary, results)
    path = write_results(
        NAME,
        {
            "benchmark": NAME,
            "settings": {**sizes, "order": args.order, "first": args.first, "model": args.model},
            "label_balance": balance,
            "device": device,
            "environment": env,
            "load_average_after": list(os.getloadavg()),
            "summary": summary,
            "turns": turns.log,
            "sides": results,
        },
    )
    print(f"[trial-loop] results written to {path}")
    return 0


def summarize(
    sizes: dict[str, Any], results: dict[str, Any], seconds: dict[str, float]
) -> dict[str, Any]:
    sweeper_trials, hf_trials = results[SWEEPER]["trials"], results[HF]["trials"]
    best_s, best_h = _best(sweeper_trials), _best(hf_trials)
    wall_s, wall_h = seconds[SWEEPER], seconds[HF]
    inside = sum(t["train_seconds"] + t["eval_seconds"] for t in sweeper_trials)
    overhead = (wall_s - inside) / wall_s if wall_s else float("nan")
    ratio = wall_s / wall_h if wall_h else float("nan")
    gap = (
        abs(best_s["accuracy"] - best_h["accuracy"])
        if best_s.get("accuracy") is not None and best_h.get("accuracy") is not None
        else float("nan")
    )
    return {
        "wall_seconds": {SWEEPER: round(wall_s, 2), HF: round(wall_h, 2)},
        "ratio": round(ratio, 4),
        "best": {
            SWEEPER: {k: best_s.get(k) for k in ("learning_rate", "accuracy", "validation_loss")},
            HF: {k: best_h.get(k) for k in ("learning_rate", "accuracy", "validation_loss")},
        },
        "accuracy_gap": round(gap, 4),
        "evaluations": {
            SWEEPER: sum(t["evaluations"] for t in sweeper_trials),
            HF: sum(t["evaluations"] for t in hf_trials),
        },
        "trials": {SWEEPER: len(sweeper_trials), HF: len(hf_trials)},
        "sweeper_train_eval_seconds": round(inside, 2),
        "sweeper_overhead_share": round(overhead, 4),
        "targets": {
            "ratio_at_most": TARGET_RATIO,
            "overhead_below": TARGET_OVERHEAD,
            "accuracy_within": TARGET_ACCURACY_GAP,
            "ratio_met": ratio <= TARGET_RATIO,
            "overhead_met": overhead < TARGET_OVERHEAD,
            "quality_met": gap <= TARGET_ACCURACY_GAP,
        },
    }


def _print_summary(summary: dict[str, Any], results: dict[str, Any]) -> None:
    print("\n[trial-loop] per trial")
    print(
        f"  {'side':<22}{'#':>3}{'lr':>9}{'evals':>7}{'val loss':>10}{'accuracy':>10}"
        f"{'train s':>9}{'eval s':>8}"
    )
    for name in (SWEEPER, HF):
        for t in results[name]["trials"]:
            loss = "-" if t["validation_loss"] is None else f"{t['validation_loss']:.4f}"
            accuracy = "-" if t["accuracy"] is None else f"{t['accuracy']:.4f}"
            print(
                f"  {name:<22}{t['number']:>3}{t['learning_rate'] or 0:>9.0e}{t['evaluations']:>7}"
                f"{loss:>10}{accuracy:>10}{t['train_seconds'] or 0:>9.1f}{t['eval_seconds'] or 0:>8.1f}"
            )
    wall, best, targets = summary["wall_seconds"], summary["best"], summary["targets"]
    print("\n[trial-loop] summary")
    for name in (SWEEPER, HF):
        b = best[name]
        print(
            f"  {name:<22} wall {wall[name]:8.1f}s   best accuracy {b['accuracy']:.4f}   "
            f"validation loss {b['validation_loss']:.4f}   evaluations "
            f"{summary['evaluations'][name]}"
        )
    print(
        f"  ratio sweeper/{HF}: {summary['ratio']:.3f} (target <= {TARGET_RATIO}: "
        f"{'met' if targets['ratio_met'] else 'NOT met'})"
    )
    print(
        f"  accuracy gap: {summary['accuracy_gap'] * 100:.1f} points (within "
        f"{TARGET_ACCURACY_GAP * 100:.0f}: {'yes' if targets['quality_met'] else 'NO'})"
    )
    print(
        f"  sweeper outside training and evaluation: {summary['sweeper_overhead_share'] * 100:.2f}% "
        f"of its wall time (target < {TARGET_OVERHEAD * 100:.0f}%: "
        f"{'met' if targets['overhead_met'] else 'NOT met'})",
        flush=True,
    )
