"""The GPU path, measured in one script that fits a few minutes of a lent GPU.

``python -m benchmarks gpu [--minilm DIR]`` (``make bench-gpu``) runs its steps within
``--time-budget`` seconds (360 by default: a rerun fits 15 minutes of lent device time) and
writes every result as soon as it is measured (``benchmarks/results/latest/gpu.json``, and
``$OUT/gpu.json`` when ``OUT`` is set), so a run cut off still reports what it measured. A
step (or a lever, or a run) that no longer fits, with the time the later steps need kept
back, is recorded as ``"not run: time"``. ``summary`` lists every target of issues 11 and
20 as met, missed or not measured. The steps, in the order they run:

1. **In effect.** Mixed precision (bf16/fp16), TF32, SDPA attention and the padding multiple,
   read back from a real sweeper trial (``sweeper.trial.training.train_trial``) at training time:
   the Trainer's arguments and optimizer, the model's dtype and attention implementation, the
   torch precision switches, the dtype of the classifier's output under autocast, and the
   padded length of every training batch; plus an fp32 matrix product timed to show whether
   TF32 really runs.
2. **Throughput.** One sweeper trial with the device's default speed levers
   (``sweeper.trial.speed``) against a bare PyTorch loop (autocast, AdamW, linear schedule,
   gradient clipping as the Trainer does) on the same batches in the same order (the bare
   loop iterates the Trainer's own training dataloader; the padded length of every batch is
   compared), from the same initial weights. Tokens per second over the steps after a
   warm-up, padded and non-padding tokens counted; the ratio sweeper/bare (target: at
   least 0.9x) and sweeper's padded tokens/s over the H200's before the speed levers (at
   least 1.25x; read from ``benchmarks/results/gpu-h200.json``, whose commit and state of
   ``sweeper/`` are written and printed beside it); the GPU's busy share (NVML) while each
   side trains. Models: a distilbert-shaped BERT (6 layers, hidden 768, 12 heads,
   intermediate 3072, random weights, the MiniLM tokenizer's vocabulary) and the pretrained
   MiniLM.
7. **TF32** as torch's legacy and new readers see it after the MiniLM sweeper trial
   (``sweeper.trial.speed.tf32_readings``), and whether they all agree (none raises).
5. **Profile.** ``torch.profiler`` over a few warm steps of a sweeper trial and of the bare
   loop on the same batches: per step, wall and CPU time, device time, kernel launches,
   ``aten::_to_copy`` calls, the top ops by self CPU time, and what sweeper's side spends
   beyond the bare loop's.
6. **Levers.** The MiniLM throughput of step 2 again with each speed lever flipped alone
   (loader workers 0/2, persistent workers off, padding to none/8/32/64, blocking copies,
   ``torch_compile``), each against a bare loop with the same lever where the bare loop has
   it (padding: the lever's own batches; copies; compilation), and the evaluation time at
   ``eval_batch_size`` 32 and 128. ``torch_compile`` runs last and only when the time it
   needs is left (a full budget rarely leaves it: ``--steps 6`` measures it alone).
3. **Trials per hour** on one SQLite study of 12 MiniLM trials (about 10 s each on an H200)
   with 1 and 4 trials per GPU, through the real ``sweeper worker --gpus 0 --trials-per-gpu
   N``, over the command's wall time (start-up included; target: at least 1.8x at 4) and
   over the trials' span, with each run's start-up (process start to its first trial).
4. **The trial loop** (``benchmarks.trial_loop``: sweeper against
   ``Trainer.hyperparameter_search``) at a GPU-sized setting. Dropped from the default run
   when steps 5-7 came (it no longer fits the six minutes); ``--steps 4`` runs it.

On a machine without a GPU, ``--quick`` runs every step at smoke-test size (step 3 then
uses ``SWEEPER_FAKE_GPU_COUNT=1``, the test-only fake GPU, so the same command path runs;
steps 5 and 6 use the small distilbert stand-in, and ``torch_compile`` is skipped: inductor's
C++ build takes minutes on two cores). Targets are only judged on a full-size GPU run:
elsewhere they read "not measured", never met.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    LABEL_COLUMN,
    MINILM,
    TEXT,
    Results,
    environment,
    full_precision_copy,
    quiet,
    random_bert,
    results_dir,
    run_command,
)
from benchmarks.gpu_measure import (
    NOT_RUN,
    TARGET_ACCURACY_GAP,
    TARGET_OVER_TODAY,
    TARGET_THROUGHPUT_RATIO,
    TARGET_TRIAL_LOOP_RATIO,
    TARGET_TRIALS_PER_HOUR_GAIN,
    Bench,
    Clock,
    GpuBusy,
    judged,
    measure,
    on_full_gpu,
    study_document,
    today_reference,
)
from benchmarks.gpu_speed import step_levers, step_profile, summarize, tf32_step

NAME = "gpu"
HELP = (
    "the GPU path: mixed precision/TF32/SDPA/padding in effect, sweeper trial vs a bare bf16 "
    "loop in tokens/s, a per-step profile, each speed lever on and off, trials per hour at "
    "1 and 4 trials per GPU"
)

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "data" / "imdb-3k.csv.gz"

FULL: dict[str, Any] = {
    "full_size": True,
    "time_budget": 360.0,
    "max_length": 256,
    "batch_size": 32,
    "validation_rows": 300,
    # Step 2: the training split (all rows but the validation ones) repeated this often.
    "repeats": {"distilbert-shaped": 2, "minilm": 2},
    "warmup_steps": 10,
    "distil_shape": {"hidden": 768, "layers": 6, "heads": 12, "intermediate": 3072},
    # Steps 5 and 6
    "lever_model": "minilm",
    "profile_steps": 15,
    "eval_repeats": 3,
    "compile_lever": True,
    # Step 3
    "per_gpu": (1, 4),
    "study_trials": 12,
    "study_train_rows": 2000,
    "study_validation_rows": 250,
    "study_epochs": 6,
    # Step 4
    "loop_train_rows": 2000,
    "loop_validation_rows": 500,
    "loop_trials": 4,
}
QUICK: dict[str, Any] = {
    "full_size": False,
    "time_budget": 900.0,
    "max_length": 64,
    "batch_size": 8,
    "validation_rows": 16,
    "train_rows_cap": 48,
    "repeats": {"distilbert-shaped": 1, "minilm": 1},
    "warmup_steps": 2,
    # distilbert's shape takes minutes a step on a busy 2-core CPU: a small stand-in.
    "distil_shape": {"hidden": 128, "layers": 2, "heads": 2, "intermediate": 256},
    "lever_model": "distilbert-shaped",
    "profile_steps": 3,
    "eval_repeats": 1,
    "compile_lever": False,
    "per_gpu": (1, 2),
    "study_trials": 2,
    "study_train_rows": 32,
    "study_validation_rows": 16,
    "study_epochs": 1,
    "loop_train_rows": 64,
    "loop_validation_rows": 32,
    "loop_trials": 1,
}
# The steps in the order they run, and what each needs at full size on an H200: the least
# time worth starting it with, and what it is expected to take (kept back for it while the
# steps before it run). Quick runs ignore both.
ORDER = (2, 7, 5, 6, 3, 4)
# Step 3 at 1 per GPU: 12 trials of about 10 s and the start-up, about 140 s; at 4, about 75 s.
STEP_MINIMUM_SECONDS = {2: 20.0, 7: 0.0, 5: 10.0, 6: 6.0, 3: 60.0, 4: 45.0}
STEP_NEEDS_SECONDS = {2: 25.0, 7: 0.0, 5: 12.0, 6: 30.0, 3: 230.0, 4: 45.0}
DEFAULT_STEPS = "1,2,3,5,6,7"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test sizes that run on a CPU in a few minutes",
    )
    parser.add_argument(
        "--minilm",
        default=MINILM,
        help="the pretrained MiniLM: a model directory or package:... (default %(default)s)",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="IMDb-style CSV")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds for all steps; a step that no longer fits is recorded as not run "
        "(default 360, --quick 900)",
    )
    parser.add_argument(
        "--steps",
        default=DEFAULT_STEPS,
        help="which steps to run (default %(default)s; 4, the trial loop, only when named; "
        "step 1 is read from step 2's trials, and 5-7 measure step 2's MiniLM set-up, which "
        "runs for them when step 2 is not asked)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")


# --- data and models ----------------------------------------------------------------------------


def write_throughput_split(
    source: Path, directory: Path, validation_rows: int, repeats: int, cap: int | None
) -> dict[str, int]:
    """validation.csv: ``validation_rows`` seeded rows; train.csv: the rest (capped), repeated
    ``repeats`` times so a fast GPU trains long enough to time."""
    import pandas as pd

    frame = pd.read_csv(source)[[TEXT, LABEL_COLUMN]].sample(frac=1.0, random_state=42)
    validation, train = frame.iloc[:validation_rows], frame.iloc[validation_rows:]
    if cap is not None:
        train = train.iloc[:cap]
    directory.mkdir(parents=True, exist_ok=True)
    pd.concat([train] * repeats).to_csv(directory / "train.csv", index=False)
    validation.to_csv(directory / "validation.csv", index=False)
    return {"train_rows": len(train) * repeats, "validation_rows": len(validation)}


def build_distil_shaped(minilm_dir: Path, directory: Path, shape: dict[str, int]) -> Path:
    """A BERT of distilbert's size with random weights (seed 0) and MiniLM's tokenizer."""
    return random_bert(
        directory,
        hidden=shape["hidden"],
        layers=shape["layers"],
        heads=shape["heads"],
        intermediate=shape["intermediate"],
        tokenizer_source=minilm_dir,
    )


# --- step 1 and 2: a sweeper trial, probed, against a bare loop ---------------------------------


def fp32_matmul_tflops() -> float | None:
    """An fp32 4096^3 matrix product as it runs now, in TFLOP/s: several times the GPU's
    plain-fp32 (CUDA core) rate only when TF32 tensor cores really do the work."""
    import torch

    if not torch.cuda.is_available():
        return None
    a = torch.randn(4096, 4096, device="cuda")
    b = torch.randn(4096, 4096, device="cuda")
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return round(10 * 2 * 4096**3 / seconds / 1e12, 1)


def throughput(
    label: str,
    model_dir: str,
    data_dir: Path,
    scratch: Path,
    sizes: dict[str, Any],
    busy: GpuBusy,
    *,
    bench: Bench | None = None,
) -> dict[str, Any]:
    """Step 2: one sweeper trial (probed) with the default levers and the bare loop on the
    same batches, after a cold and a warm pass over every batch shape."""
    bench = bench or Bench(label, model_dir, data_dir, scratch, sizes, busy)
    result, batches = measure(bench, repeat_first_pass=True)
    bench.baseline = result
    bench.baseline_lengths = [int(batch["input_ids"].shape[1]) for batch in batches]
    bench.baseline_batches = batches
    judge = on_full_gpu(sizes)
    ratio = result.get("ratio_sweeper_over_bare")
    reference = today_reference()
    today = reference["padded_tokens_per_s"].get(label)
    measured = result["sweeper"].get("padded_tokens_per_s")
    over_today = round(measured / today, 4) if judge and today and measured else None
    return result | {
        "target_ratio_at_least": TARGET_THROUGHPUT_RATIO,
        "target_met": judged(judge, ratio, TARGET_THROUGHPUT_RATIO),
        "over_today": {
            "today_padded_tokens_per_s": today,
            "today_source": dict(reference["source"]),
            "ratio": over_today,
            "target_at_least": TARGET_OVER_TODAY,
            "met": judged(judge, over_today, TARGET_OVER_TODAY),
        },
    }


# --- step 3: trials per hour with N trials per GPU ---------------------------------------------


def study_times(trials: list[Any], started: float, ended: float) -> dict[str, Any]:
    """From the finished trials' start and end in the storage (local wall-clock times):
    the span from the first start to the last end, the start-up (process start to the
    first trial's start; per worker, to each worker's first trial) and the shut-down."""
    starts = [t.datetime_start.timestamp() for t in trials if t.datetime_start]
    ends = [t.datetime_complete.timestamp() for t in trials if t.datetime_complete]
    durations = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.datetime_start and t.datetime_complete
    ]
    first_by_worker: dict[Any, float] = {}
    for trial in trials:
        if trial.datetime_start:
            worker = trial.user_attrs.get("worker")
            moment = trial.datetime_start.timestamp()
            first_by_worker[worker] = min(first_by_worker.get(worker, moment), moment)
    span = max(ends) - min(starts) if starts and ends else None
    return {
        "first_start_to_last_finish_seconds": round(span, 2) if span else None,
        "startup_seconds": round(min(starts) - started, 2) if starts else None,
        "startup_seconds_per_worker": sorted(
            round(moment - started, 2) for moment in first_by_worker.values()
        ),
        "shutdown_seconds": round(ended - max(ends), 2) if ends else None,
        "mean_trial_seconds": round(sum(durations) / len(durations), 2) if durations else None,
    }


def trials_per_hour(
    per_gpu: int,
    document: dict[str, Any],
    scratch: Path,
    runs: Path,
    timeout: float,
    fake_gpu: bool,
    busy: GpuBusy,
) -> dict[str, Any]:
    """``sweeper worker STUDY --gpus 0 --trials-per-gpu N`` on the study ``document`` until
    its budget is met or ``timeout`` seconds pass."""
    import optuna
    import yaml
    from optuna.trial import TrialState

    name = f"tph-{per_gpu}"
    study_file, log_path = scratch / f"{name}.yaml", scratch / f"{name}.log"
    study_file.write_text(yaml.safe_dump(document), encoding="utf-8")
    print(f"[gpu] step 3: {per_gpu} trial(s) per GPU, cap {timeout:.0f} s", flush=True)
    command = [sys.executable, "-m", "sweeper", "worker", str(study_file), "--gpus", "0"]
    command += ["--trials-per-gpu", str(per_gpu), "--no-progress"]
    env = dict(os.environ)
    if fake_gpu:
        env["SWEEPER_FAKE_GPU_COUNT"] = "1"
    busy.start()
    ran = run_command(command, env, timeout, log_path)
    share = busy.stop()
    wall = ran["ended"] - ran["started"]
    storage_url = f"sqlite:///{(runs / name / 'study.db').resolve()}"
    study = optuna.load_study(study_name=name, storage=storage_url)
    finished = [
        trial
        for trial in study.get_trials(deepcopy=False)
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]
    times = study_times(finished, ran["started"], ran["ended"])
    span = times["first_start_to_last_finish_seconds"]
    tail = log_path.read_text(errors="replace").splitlines()[-8:]
    return {
        "trials_per_gpu": per_gpu,
        "exit_code": ran["exit_code"],
        "cut_off_at_time_cap": ran["cut_off"],
        "finished_trials": len(finished),
        "workers_seen": len({t.user_attrs.get("worker") for t in finished}),
        "wall_seconds": round(wall, 2),
        **times,
        "trials_per_hour_wall": round(len(finished) / wall * 3600, 1) if finished else 0.0,
        "trials_per_hour_span": round(len(finished) / span * 3600, 1) if span else None,
        "gpu_busy_share": share,
        "log_tail": tail if ran["exit_code"] != 0 else tail[-2:],
    }


def tph_documents(
    minilm: str, data_dir: Path, runs: Path, sizes: dict[str, Any]
) -> dict[int, dict[str, Any]]:
    """One study per trials-per-GPU setting: the same trials, a fresh storage each."""
    documents = {}
    for per_gpu in sizes["per_gpu"]:
        documents[per_gpu] = study_document(
            f"tph-{per_gpu}",
            data_dir,
            minilm,
            sizes["max_length"],
            sizes["batch_size"],
            runs,
            n_trials=sizes["study_trials"],
            learning_rate={"low": 1e-5, "high": 1e-4, "log": True},
            epochs=sizes["study_epochs"],
        )
    return documents


def run_cap(per_gpu: int, runs_left: list[int], seconds: float) -> float:
    """This run's share of ``seconds``: as the runs left should take, 1 trial per GPU about
    twice as long as more (a GPU shared by two or more is at best about twice as fast)."""
    weight = {n: 1.0 / min(n, 2) for n in runs_left}
    return seconds * weight[per_gpu] / sum(weight.values())


def tph_setup(
    minilm: str, source: Path, scratch: Path, sizes: dict[str, Any]
) -> tuple[dict[str, Any], dict[int, dict[str, Any]], Path]:
    """Step 3's data split, its studies (tokenized once, before the clock: every run reads
    the same cache) and the record the runs go into."""
    import torch

    from benchmarks.trial_loop import write_split
    from sweeper.settings.config import StudyConfig
    from sweeper.trial.data import prepare_data
    from sweeper.trial.models import load_tokenizer

    data_dir = scratch / "tph-data"
    write_split(
        source, data_dir, sizes["study_train_rows"], sizes["study_validation_rows"], seed=42
    )
    runs = scratch / "tph-runs"
    step: dict[str, Any] = {
        "model": minilm,
        "trials_per_run": sizes["study_trials"],
        "train_rows": sizes["study_train_rows"],
        "validation_rows": sizes["study_validation_rows"],
        "epochs": sizes["study_epochs"],
        "max_length": sizes["max_length"],
        "batch_size": sizes["batch_size"],
        "storage": "sqlite",
        "fake_gpu": not torch.cuda.is_available(),
        "runs": {},
    }
    documents = tph_documents(minilm, data_dir, runs, sizes)
    first = StudyConfig.model_validate(next(iter(documents.values())))
    prepare_data(
        first.dataset, load_tokenizer(minilm), sizes["max_length"], runs / "cache" / "tokenized"
    )
    return step, documents, runs


def step_trials_per_hour(session: Session) -> dict[str, Any]:
    """Step 3: one run of the study per trials-per-GPU setting, each within its share of
    the time left (less what the later steps need), then the gains over 1 per GPU."""
    sizes, scratch = session.sizes, session.scratch
    step, documents, runs = tph_setup(session.minilm, session.args.data, scratch, sizes)
    runs_left = list(sizes["per_gpu"])
    for per_gpu in sizes["per_gpu"]:
        cap = run_cap(per_gpu, runs_left, session.clock.left() - session.reserve(3))
        runs_left.remove(per_gpu)
        record: Any = NOT_RUN
        if cap >= 20:
            document, fake_gpu = documents[per_gpu], step["fake_gpu"]
            record = trials_per_hour(per_gpu, document, scratch, runs, cap, fake_gpu, session.busy)
            print(f"[gpu]   {json.dumps(record)}", flush=True)
        step["runs"][str(per_gpu)] = record
        session.set("step3_trials_per_hour", step)
    judge = not step["fake_gpu"] and bool(sizes.get("full_size"))
    step |= tph_gains(step["runs"], judge=judge)
    return step


def tph_gains(runs: dict[str, Any], judge: bool) -> dict[str, Any]:
    """Trials/hour of each run over 1 trial per GPU's, by wall time and by span; the
    target: at 4 per GPU, by wall time."""
    base = runs.get("1")
    gains: dict[str, Any] = {}
    for key, run in runs.items():
        if isinstance(run, dict) and isinstance(base, dict):
            for rate in ("trials_per_hour_wall", "trials_per_hour_span"):
                if run.get(rate) and base.get(rate):
                    gains.setdefault(rate, {})[key] = round(run[rate] / base[rate], 3)
    top = gains.get("trials_per_hour_wall", {}).get("4")
    cut = any(isinstance(run, dict) and run["cut_off_at_time_cap"] for run in runs.values())
    return {
        "gain_over_1_per_gpu": gains,
        "target": {
            "gain_at_4_at_least": TARGET_TRIALS_PER_HOUR_GAIN,
            "measure": "trials_per_hour_wall (process start to exit)",
            "measured": top if judge else None,
            "met": judged(judge, top, TARGET_TRIALS_PER_HOUR_GAIN),
            "a_run_was_cut_off": cut,
        },
    }


# --- step 4: the trial loop at GPU size ----------------------------------------------------------


TRIAL_KEYS = ("learning_rate", "validation_loss", "accuracy", "train_seconds", "eval_seconds")


def step_trial_loop(minilm: str, source: Path, sizes: dict[str, Any]) -> dict[str, Any]:
    """Step 4: ``benchmarks.trial_loop`` at this run's sizes, read back from its results."""
    from benchmarks import trial_loop

    args = argparse.Namespace(
        quick=False,
        data=source,
        model=minilm,
        train_rows=sizes["loop_train_rows"],
        validation_rows=sizes["loop_validation_rows"],
        max_length=sizes["max_length"],
        trials=sizes["loop_trials"],
        learning_rates=",".join(f"{lr:g}" for lr in trial_loop.DEFAULT_LEARNING_RATES),
        batch_size=32,
        eval_batch_size=32,
        epochs=1,
        seed=42,
        evals_per_epoch=2,
        order="interleaved",
        first=trial_loop.SWEEPER,
        keep=False,
    )
    trial_loop.run(args)
    recorded = json.loads((results_dir() / f"{trial_loop.NAME}.json").read_text())
    summary = recorded["summary"]
    ratio, gap = summary["ratio"], summary["accuracy_gap"]
    judge = on_full_gpu(sizes)
    return {
        "settings": recorded["settings"],
        "summary": summary,
        "target": {
            "ratio_at_most": TARGET_TRIAL_LOOP_RATIO,
            "accuracy_within": TARGET_ACCURACY_GAP,
            "ratio_met": ratio <= TARGET_TRIAL_LOOP_RATIO if judge else None,
            "quality_met": (not math.isnan(gap) and gap <= TARGET_ACCURACY_GAP) if judge else None,
        },
        "per_trial": {
            side: [
                {key: t.get(key) for key in TRIAL_KEYS} for t in recorded["sides"][side]["trials"]
            ]
            for side in recorded["sides"]
        },
    }


# --- the run -------------------------------------------------------------------------------------


def device_description() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"device": "cpu", "threads": torch.get_num_threads()}
    properties = torch.cuda.get_device_properties(0)
    return {
        "device": "cuda",
        "name": torch.cuda.get_device_name(0),
        "capability": list(torch.cuda.get_device_capability(0)),
        "memory_gib": round(properties.total_memory / 2**30, 1),
        "multiprocessors": properties.multi_processor_count,
        "cuda": torch.version.cuda,
        "bf16_supported": torch.cuda.is_bf16_supported(),
    }


STEP_KEYS = {
    1: "step1_in_effect",
    2: "step2_throughput",
    3: "step3_trials_per_hour",
    4: "step4_trial_loop",
    5: "step5_profile",
    6: "step6_levers",
    7: "step7_tf32",
}


@dataclass
class Session:
    """One run of the benchmark: its sizes, clock, results and the steps asked."""

    args: argparse.Namespace
    sizes: dict[str, Any]
    clock: Clock
    busy: GpuBusy
    results: Results
    scratch: Path
    minilm: str
    steps: set[int]
    failures: int = 0
    benches: dict[str, Bench] = field(default_factory=dict)

    @property
    def quick(self) -> bool:
        return bool(self.args.quick)

    def reserve(self, step: int) -> float:
        """Seconds kept back for the asked steps that run after ``step`` (full size only)."""
        if self.quick:
            return 0.0
        later = ORDER[ORDER.index(step) + 1 :]
        return sum(STEP_NEEDS_SECONDS[s] for s in later if s in self.steps)

    def spare(self, step: int) -> float:
        """Seconds ``step`` may use now: what is left less what the later steps need."""
        return math.inf if self.quick else self.clock.left() - self.reserve(step)

    def fits(self, step: int, minimum: float | None = None) -> bool:
        needed = STEP_MINIMUM_SECONDS[step] if minimum is None else minimum
        return self.quick or self.spare(step) >= needed

    def set(self, key: str, value: Any) -> None:
        """A result, and the summary brought up to date with it, written at once."""
        self.results.payload[key] = value
        self.refresh()

    def refresh(self) -> None:
        self.results.set("summary", summarize(self.results.payload))

    def run_step(self, step: int, label: str, work: Callable[[], Any]) -> None:
        """Step ``step``, when asked and when it fits: ``work()``, its result (or its
        failure) written at once."""
        if step in self.steps and self.fits(step):
            print(f"[gpu] step {step}: {label}, {self.clock.left():.0f} s left", flush=True)
            self.set(STEP_KEYS[step], self.attempt(step, label, work))

    def attempt(self, step: int, label: str, work: Callable[[], Any]) -> Any:
        """``work()``; a failure is recorded as the step's result and counted, not raised."""
        import torch

        try:
            return work()
        except Exception as exc:
            self.failures += 1
            print(f"[gpu] step {step} {label} failed: {exc!r}", flush=True)
            if isinstance(exc, torch.OutOfMemoryError):
                torch.cuda.empty_cache()
            return f"failed: {exc.__class__.__name__}: {exc}"


def session_of(args: argparse.Namespace) -> Session:
    """The run's sizes, scratch directory, fp32 MiniLM and results (written at once)."""
    from sweeper.trial.models import resolve_local_path

    sizes = dict(QUICK if args.quick else FULL)
    budget = float(args.time_budget or sizes["time_budget"])
    clock = Clock(budget)
    steps = {int(part) for part in str(args.steps).split(",") if part.strip()}
    scratch = Path(tempfile.mkdtemp(prefix="sweeper-bench-gpu-"))
    given = resolve_local_path(args.minilm)
    minilm = str(full_precision_copy(given, scratch) if given else args.minilm)
    busy = GpuBusy()
    asked = {n: NOT_RUN if n in steps else "not asked" for n in STEP_KEYS}
    if steps & {1, 2, 5, 6, 7}:
        asked[1] = NOT_RUN
    payload = {
        "benchmark": NAME,
        "quick": bool(args.quick),
        "time_budget_seconds": budget,
        "settings": {k: v for k, v in sizes.items() if k != "time_budget"}
        | {"minilm": minilm, "minilm_given": args.minilm, "steps": sorted(steps)},
        "machine": device_description(),
        "environment": environment(("nvidia-ml-py", "pydantic", "sqlalchemy")),
        "nvml": busy.error or "ok",
        **{STEP_KEYS[n]: asked[n] for n in sorted(STEP_KEYS)},
    }
    results = Results(NAME, payload)
    return Session(args, sizes, clock, busy, results, scratch, minilm, steps)


def bench_of(session: Session, label: str) -> Bench:
    """The model's set-up (its data split written, the distilbert-shaped model built)."""
    if label not in session.benches:
        sizes, scratch = session.sizes, session.scratch
        model_dir = session.minilm
        if label == "distilbert-shaped":
            model_dir = str(
                build_distil_shaped(Path(session.minilm), scratch / "distil", sizes["distil_shape"])
            )
        directory = scratch / "throughput-data" / label
        rows = write_throughput_split(
            session.args.data,
            directory,
            sizes["validation_rows"],
            sizes["repeats"][label],
            sizes.get("train_rows_cap"),
        )
        print(f"[gpu] {label}: {rows}", flush=True)
        bench = Bench(label, model_dir, directory, scratch, sizes, session.busy)
        session.benches[label] = bench
    return session.benches[label]


def run_throughput(session: Session) -> None:
    """Steps 1 and 2: each model's default-lever trial against the bare loop. Neither
    asked: only the lever model's, which steps 5-7 measure against."""
    labels = ["distilbert-shaped", "minilm"] if session.steps & {1, 2} else []
    lever_model = session.sizes["lever_model"]
    if session.steps & {5, 6, 7} and lever_model not in labels:
        labels.append(lever_model)
    in_effect: dict[str, Any] = {"fp32_matmul_tflops_now": None}
    measured: dict[str, Any] = {}
    for index, label in enumerate(labels):
        others = len(labels) - index - 1
        if session.spare(2) - others * STEP_NEEDS_SECONDS[2] < STEP_MINIMUM_SECONDS[2]:
            measured[label] = NOT_RUN
            continue
        print(f"[gpu] step 2: {label}, {session.clock.left():.0f} s left", flush=True)
        measured[label] = session.attempt(
            2, label, functools.partial(throughput_of, session, label)
        )
        if isinstance(measured[label], dict):
            in_effect[label] = measured[label].pop("in_effect")
            print(f"[gpu]   {json.dumps(measured[label])}", flush=True)
            print(f"[gpu]   in effect: {json.dumps(in_effect[label])}", flush=True)
            in_effect["fp32_matmul_tflops_now"] = fp32_matmul_tflops()
            session.set("step1_in_effect", in_effect)
        session.set("step2_throughput", measured)


def throughput_of(session: Session, label: str) -> dict[str, Any]:
    bench = bench_of(session, label)
    return throughput(
        label, bench.model_dir, bench.data_dir, bench.scratch, bench.sizes, bench.busy, bench=bench
    )


def run_steps(session: Session) -> None:
    if session.steps & {1, 2, 5, 6, 7}:
        run_throughput(session)
    if session.steps & {5, 6, 7}:
        run_lever_steps(session)
    session.run_step(3, "trials per hour", functools.partial(step_trials_per_hour, session))
    loop = functools.partial(step_trial_loop, session.minilm, session.args.data, session.sizes)
    session.run_step(4, "trial loop", loop)


def run_lever_steps(session: Session) -> None:
    """Steps 7, 5 and 6, on step 2's measurement of the lever model."""
    steps, label = session.steps, session.sizes["lever_model"]
    lever = session.benches.get(label)
    if lever is None or lever.baseline is None:
        for step in sorted(steps & {5, 6, 7}):
            session.set(STEP_KEYS[step], f"not run: no step 2 measurement of {label}")
        return
    if 7 in steps:
        session.set("step7_tf32", tf32_step(lever.baseline["tf32_after_trial"]))
    session.run_step(5, "profile", functools.partial(step_profile, session, lever))
    session.run_step(6, "levers", functools.partial(step_levers, session, lever))


def run(args: argparse.Namespace) -> int:
    import torch
    import transformers  # noqa: F401

    import sweeper.study.sweep  # noqa: F401

    quiet()
    if not args.quick and not torch.cuda.is_available():
        print(
            "[gpu] no GPU here (CUDA is unavailable): the full GPU benchmark needs one; "
            "`python -m benchmarks gpu --quick` runs its smoke test on a CPU",
            flush=True,
        )
        return 0
    session = session_of(args)
    session.refresh()
    machine = json.dumps(session.results.payload["machine"])
    print(f"[gpu] {machine}; budget {session.clock.budget:.0f} s", flush=True)
    try:
        run_steps(session)
    finally:
        session.set("elapsed_seconds", round(session.clock.elapsed(), 1))
        if args.keep:
            print(f"[gpu] scratch kept at {session.scratch}")
        else:
            shutil.rmtree(session.scratch, ignore_errors=True)
    for target in session.results.payload["summary"]["targets"]:
        against = f"; against {target['reference']}" if "reference" in target else ""
        line = f"{target['status']}: {target['target']} ({target['measured']}){against}"
        print(f"[gpu] {line}", flush=True)
    path = session.results.save()
    print(f"[gpu] results written to {path} after {session.clock.elapsed():.0f} s", flush=True)
    return 1 if session.failures else 0
