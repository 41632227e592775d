"""A worker's start-up and a trial's fixed cost, through the real ``sweeper sweep`` command.

``python -m benchmarks overhead`` (``make bench BENCH_ARGS=overhead``) writes a study of
short MiniLM trials (random sampler, no pruning, fixed batch size and epochs: every trial
trains the same steps), tokenizes its data once, then runs ``sweeper sweep`` in a fresh
process through :mod:`benchmarks.probe`, which clocks every Trainer event. Measured:

- **start-up**: from starting the process to the first training step of the first trial,
  cut into imports (Python, torch, transformers, sweeper), opening the study (config, the
  pre-flight check, the tokenized data, the storage: up to the first trial's start in the
  storage) and the first trial's own set-up (model, Trainer: up to its first step);
- **a trial's fixed cost**: its time in the storage (start to end) less its training
  steps (step begin to step end), its evaluations (their own ``eval_runtime``) and its
  checkpoint saves (an evaluation's end to the save's end: a cost per save, reported
  apart with the number of saves), cut into set-up (start to the first step: model,
  Trainer, loader), between steps (data loading and logging) and the end (the last event
  to the trial's end in the storage: clean-up, the storage writes). The first trial is
  reported apart (it warms up the process).

The same command measures any commit: run it from a worktree of an older one (with this
file and :mod:`benchmarks.probe` copied in) for a before-and-after on one machine.

Results go to ``benchmarks/results/latest/overhead.json`` after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import MINILM, REPO_ROOT, Results, environment, run_command

NAME = "overhead"
HELP = (
    "a worker's start-up (process start to first training step) and a trial's fixed cost "
    "(trial time outside its steps and evaluations), through the real `sweeper sweep`"
)
DEFAULT_DATA = REPO_ROOT / "data" / "imdb-3k.csv.gz"

# 16 steps of 16 reviews and 8 evaluations a trial (2 epochs of 128, every 32 examples):
# short trials, whose validation loss, as in the model cards, stops improving part-way.
FULL = {
    "trials": 6,
    "train_rows": 128,
    "validation_rows": 64,
    "max_length": 64,
    "batch_size": 16,
    "epochs": 2,
    "eval_examples": 32,
    "runs": 2,
}
QUICK = {**FULL, "trials": 2, "train_rows": 64, "validation_rows": 32, "epochs": 1, "runs": 1}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="2 tiny trials, one run")
    parser.add_argument("--model", default=MINILM, help="model.name of the study")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="a CSV with review,sentiment")
    for key in FULL:
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to sweeper sweep as --set (e.g. a lever: training.dataloader_workers=0)",
    )
    parser.add_argument("--label", default="", help="a name for this run in the results")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")


def sizes_of(args: argparse.Namespace) -> dict[str, int]:
    base = QUICK if args.quick else FULL
    return {
        key: int(getattr(args, key)) if getattr(args, key, None) is not None else value
        for key, value in base.items()
    }


def study_document(
    name: str, data: Path, model: str, sizes: dict[str, int], runs: Path
) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": {
            "path": str(data),
            "text_column": "review",
            "label_column": "sentiment",
            "label_names": ["negative", "positive"],
            "validation_fraction": 0.2,
            "split_seed": 42,
            "max_train_rows": sizes["train_rows"],
            "max_validation_rows": sizes["validation_rows"],
        },
        "model": {"name": model, "max_length": sizes["max_length"]},
        "search_space": {
            "learning_rate": {"low": 2e-5, "high": 3e-4, "log": True},
            "per_device_train_batch_size": sizes["batch_size"],
            "num_train_epochs": sizes["epochs"],
            "seed": 42,
            "warmup_ratio": 0.0,
            "weight_decay": 0.0,
        },
        "evaluation": {"strategy": "examples", "examples": sizes["eval_examples"]},
        "pruner": {"type": "none"},
        "sampler": {"type": "random", "seed": 0},
        "budget": {"n_trials": sizes["trials"]},
        "output_dir": str(runs),
    }


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trial_costs(start: float, end: float, events: list[dict[str, Any]]) -> dict[str, float]:
    """Where one trial's time went, from its events between its start and end."""
    inside = [e for e in events if start <= e["t"] <= end]
    steps = between = evaluations = saves = 0.0
    first_step: float | None = None
    last: dict[str, Any] | None = None
    for event in inside:
        kind = event["event"]
        if kind == "step_begin":
            first_step = event["t"] if first_step is None else first_step
            if last is not None and last["event"] == "step_end":
                between += event["t"] - last["t"]
        elif kind == "step_end" and last is not None and last["event"] == "step_begin":
            steps += event["t"] - last["t"]
        elif kind == "evaluate":
            evaluations += event["runtime"]
        elif kind == "save" and last is not None and last["event"] in ("evaluate", "step_end"):
            saves += event["t"] - last["t"]
        last = event
    total = end - start
    setup = (first_step - start) if first_step is not None else total
    ending = end - inside[-1]["t"] if inside else 0.0
    outside = total - steps - evaluations
    return {
        "seconds": round(total, 3),
        "steps_seconds": round(steps, 3),
        "evaluation_seconds": round(evaluations, 3),
        # Everything but training steps and evaluations, checkpoints included ...
        "outside_steps_and_evaluations_seconds": round(outside, 3),
        # ... and the trial's own fixed cost: that, less its checkpoint saves (a cost per
        # evaluation, reported apart).
        "fixed_seconds": round(outside - saves, 3),
        "setup_seconds": round(setup, 3),
        "between_steps_seconds": round(between, 3),
        "save_seconds": round(saves, 3),
        "end_seconds": round(ending, 3),
        "steps": sum(1 for e in inside if e["event"] == "step_end"),
        "evaluations": sum(1 for e in inside if e["event"] == "evaluate"),
        "saves": sum(1 for e in inside if e["event"] == "save"),
    }


def mean_of(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {key: round(statistics.fmean(row[key] for row in rows), 3) for key in rows[0]}


def _elapsed(since: float | None, until: float | None) -> float | None:
    """Seconds from ``since`` to ``until`` (None when either was not seen)."""
    return round(until - since, 3) if since and until else None


def one_run(
    study_file: Path, name: str, storage_url: str, scratch: Path, sets: list[str]
) -> dict[str, Any]:
    import optuna
    from optuna.trial import TrialState

    events_path = scratch / f"{name}.events.jsonl"
    marks_path = scratch / f"{name}.marks.json"
    command = [sys.executable, "-m", "benchmarks.probe", "sweep", str(study_file), "--no-progress"]
    for item in sets:
        command += ["--set", item]
    env = dict(os.environ, SWEEPER_PROBE_EVENTS=str(events_path))
    env["SWEEPER_PROBE_MARKS"] = str(marks_path)
    log_path = scratch / f"{name}.log"
    ran = run_command(command, env, None, log_path, cwd=REPO_ROOT)
    started, code = ran["started"], ran["exit_code"]
    wall = ran["ended"] - started
    if code != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"[{NAME}] sweeper sweep exited {code}:\n" + "\n".join(tail))
    events = read_events(events_path)
    marks = json.loads(marks_path.read_text()) if marks_path.is_file() else {}
    study = optuna.load_study(study_name=name, storage=storage_url)
    windows = sorted(
        (t.datetime_start.timestamp(), t.datetime_complete.timestamp())
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE and t.datetime_start and t.datetime_complete
    )
    costs = [trial_costs(start, end, events) for start, end in windows]
    first_step = next((e["t"] for e in events if e["event"] == "step_begin"), None)
    first_trial_start = windows[0][0] if windows else None
    imported = marks.get("imported")
    startup: dict[str, Any] = {
        "process_start_to_first_step_seconds": _elapsed(started, first_step),
        "imports_seconds": _elapsed(started, imported),
        "open_study_seconds": _elapsed(imported, first_trial_start),
        "first_trial_setup_seconds": _elapsed(first_trial_start, first_step),
    }
    return {
        "wall_seconds": round(wall, 3),
        "trials": len(windows),
        "startup": startup,
        "first_trial": costs[0] if costs else None,
        "later_trials_mean": mean_of(costs[1:]),
        "per_trial": costs,
    }


def run(args: argparse.Namespace) -> int:
    import yaml

    from sweeper.settings.config import StudyConfig
    from sweeper.trial.data import prepare_data
    from sweeper.trial.models import load_tokenizer

    sizes = sizes_of(args)
    results = Results(
        NAME,
        {
            "benchmark": NAME,
            "environment": environment(),
            "sizes": sizes,
            "model": args.model,
            "sets": args.set,
            "label": args.label,
            "runs": [],
        },
    )
    scratch = Path(tempfile.mkdtemp(prefix="sweeper-overhead-"))
    runs_dir = scratch / "runs"
    documents = [
        study_document(f"overhead-{i}", Path(args.data).resolve(), args.model, sizes, runs_dir)
        for i in range(sizes["runs"])
    ]
    # Tokenized once before any clock runs: every run reads the same cache, as a worker
    # does whose study another worker (or an earlier run) already tokenized.
    config = StudyConfig.model_validate(documents[0])
    prepare_data(
        config.dataset,
        load_tokenizer(args.model),
        sizes["max_length"],
        runs_dir / "cache" / "tokenized",
    )
    for document in documents:
        name = document["name"]
        study_file = scratch / f"{name}.yaml"
        study_file.write_text(yaml.safe_dump(document), encoding="utf-8")
        storage_url = f"sqlite:///{(runs_dir / name / 'study.db').resolve()}"
        print(f"[{NAME}] {name}: sweeper sweep, {sizes['trials']} trials", flush=True)
        measured = one_run(study_file, name, storage_url, scratch, args.set)
        results.payload["runs"].append(measured)
        results.save()
        print(f"[{NAME}]   start-up {json.dumps(measured['startup'])}", flush=True)
        print(f"[{NAME}]   first trial {json.dumps(measured['first_trial'])}", flush=True)
        print(f"[{NAME}]   later trials {json.dumps(measured['later_trials_mean'])}", flush=True)
    results.set("summary", summarize(results.payload["runs"]))
    print(f"[{NAME}] summary {json.dumps(results.payload['summary'])}", flush=True)
    if not args.keep:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    else:
        print(f"[{NAME}] scratch kept at {scratch}")
    print(f"[{NAME}] results written to {results.save()}")
    return 0


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over runs: the start-up, and the later trials' means."""

    def median(values: list[Any]) -> float | None:
        present = [value for value in values if value is not None]
        return round(statistics.median(present), 3) if present else None

    later = [r["later_trials_mean"] for r in runs if r["later_trials_mean"]]
    startup = [r["startup"] for r in runs]
    return {
        "startup_seconds": median([s["process_start_to_first_step_seconds"] for s in startup]),
        "startup_imports_seconds": median([s["imports_seconds"] for s in startup]),
        "startup_open_study_seconds": median([s["open_study_seconds"] for s in startup]),
        "startup_first_trial_setup_seconds": median(
            [s["first_trial_setup_seconds"] for s in startup]
        ),
        **{
            f"trial_{key}": median([trial.get(key) for trial in later])
            for key in (
                "seconds",
                "fixed_seconds",
                "outside_steps_and_evaluations_seconds",
                "save_seconds",
                "saves",
                "evaluations",
            )
        },
    }
