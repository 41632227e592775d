"""The GPU benchmark's measurement layer (``benchmarks.gpu`` runs the steps,
``benchmarks.gpu_speed`` steps 5-7): one probed sweeper trial against a bare PyTorch loop on
the same batches, and what both sides share.

- the time budget (``Clock``) and the GPU's busy share (``GpuBusy``, NVML);
- the targets, and the reference they are judged against before the speed levers
  (``today_reference``: read from a committed H200 run, with where it came from);
- the probe a sweeper trial carries (what is in effect, tokens/s after the warm-up) and the
  bare loop (``bare_loop``);
- one model's set-up (``Bench``) and one measurement of it (``measure``).
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import LABEL_NAMES, REPO_ROOT, split_dataset_section

NOT_RUN = "not run: time"

# The targets docs/benchmarks/gpu.md reports against: a trial near bare-loop speed, and the
# speed levers (sweeper.trial.speed).
TARGET_THROUGHPUT_RATIO = 0.9  # sweeper trial tokens/s at least 0.9x the bare loop's
TARGET_TRIAL_LOOP_RATIO = 0.7  # sweeper at most 0.7x hyperparameter_search's wall time
TARGET_ACCURACY_GAP = 0.02  # "equal quality": best accuracies within 2 points
TARGET_OVER_TODAY = 1.25  # sweeper's padded tokens/s at least 1.25x today_reference()'s
TARGET_TRIALS_PER_HOUR_GAIN = 1.8  # 4 trials per GPU: trials/hour by wall time over 1's
# The H200 run before the speed levers: its step 2 is what TARGET_OVER_TODAY is judged against.
TODAY_RESULTS = Path(__file__).resolve().parent / "results" / "gpu-h200.json"
TODAY_MODELS = ("minilm", "distilbert-shaped")


@functools.cache
def today_reference() -> dict[str, Any]:
    """Sweeper's padded tokens/s per model in step 2 of ``TODAY_RESULTS`` (read on first
    use) and where they come from (``source``): the file, the commit it was measured at, how
    many files under sweeper/ then differed from that commit, and all of it in words
    (``label``, written and printed beside the numbers wherever they are used)."""
    recorded = json.loads(TODAY_RESULTS.read_text(encoding="utf-8"))
    git = recorded["environment"]["git"]
    changed = len(git.get("sweeper_changed_files") or [])
    path = TODAY_RESULTS.relative_to(REPO_ROOT).as_posix()
    tree = f"uncommitted changes to {changed} files under sweeper/" if changed else "a clean tree"
    step2 = recorded["step2_throughput"]
    return {
        "padded_tokens_per_s": {
            label: float(step2[label]["sweeper"]["padded_tokens_per_s"]) for label in TODAY_MODELS
        },
        "source": {
            "file": path,
            "commit": git["commit"],
            "sweeper_uncommitted_files": changed,
            "label": f"step 2 of {path}, measured at commit {str(git['commit'])[:7]} with {tree}",
        },
    }


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


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def on_full_gpu(sizes: dict[str, Any]) -> bool:
    """Whether targets are judged: a full-size run (not --quick) on a GPU."""
    return bool(sizes.get("full_size")) and on_gpu()


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


# --- a study file --------------------------------------------------------------------------------


def search_space(batch_size: int, learning_rate: Any = 5e-5, epochs: int = 1) -> dict[str, Any]:
    """A trial's hyperparameters (a study's search space where ``learning_rate`` is a range)."""
    return {
        "learning_rate": learning_rate,
        "per_device_train_batch_size": batch_size,
        "num_train_epochs": epochs,
        "seed": 42,
        "warmup_ratio": 0.0,
        "weight_decay": 0.0,
    }


def study_document(
    name: str,
    data_dir: Path,
    model: str,
    max_length: int,
    batch_size: int,
    runs: Path,
    n_trials: int,
    learning_rate: Any = 5e-5,
    epochs: int = 1,
) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": split_dataset_section(data_dir),
        "model": {"name": model, "max_length": max_length},
        "search_space": search_space(batch_size, learning_rate, epochs),
        "evaluation": {"strategy": "epoch"},
        "pruner": {"type": "none"},
        "sampler": {"type": "random", "seed": 0},
        "budget": {"n_trials": n_trials},
        "workers": {"poll_seconds": 0.5},
        "output_dir": str(runs),
    }


# --- a sweeper trial, probed, and the bare loop ------------------------------------------------


def _precision_switches() -> dict[str, Any]:
    """torch's TF32 switches as they stand: sweeper's readings of both APIs, and the new
    process-wide switch transformers sets."""
    import torch

    from sweeper.trial.speed import tf32_readings

    generic = getattr(torch.backends, "fp32_precision", None)
    return {**tf32_readings(), "fp32_precision": generic}


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
            self.warmup_seconds: float | None = None
            self._begin = 0.0
            self._t0: float | None = None
            self._counting = False

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._begin = time.perf_counter()
            self.readings = trial_readings(args, kwargs)
            hook_probe(self, kwargs.get("model"), compiled=bool(args.torch_compile))

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
                synchronize()
                self._t0 = time.perf_counter()
                self.warmup_seconds = round(self._t0 - self._begin, 3)
                self._counting = True
                busy.start()
            if state.global_step == state.max_steps and self._t0 is not None:
                synchronize()
                self.window = (self._t0, time.perf_counter())
                self.measured_steps = state.global_step - warmup_steps
                self._counting = False
                self.busy_share = busy.stop()

    return Probe()


def hook_probe(probe: Any, model: Any, compiled: bool) -> None:
    """The probe's hooks: on the model's inputs (run as they are, outside a compiled graph:
    no guard on the probe's state) and, uncompiled, on the classifier's output."""
    import torch

    assert model is not None
    model.register_forward_pre_hook(torch.compiler.disable(probe._count), with_kwargs=True)
    head = getattr(model, "classifier", None)
    if head is not None and not compiled:  # no graph break inside a compiled model
        head.register_forward_hook(probe._head)


def trial_readings(args: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """What the Trainer of a trial has in effect at train begin (its callback arguments)."""
    model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
    inner = getattr(optimizer, "optimizer", optimizer)
    return {
        "trainer.args.bf16": args.bf16,
        "trainer.args.fp16": args.fp16,
        "trainer.args.tf32": args.tf32,
        "trainer.args.optim": str(args.optim),
        "trainer.args.dataloader_num_workers": args.dataloader_num_workers,
        "trainer.args.dataloader_persistent_workers": args.dataloader_persistent_workers,
        "trainer.args.dataloader_pin_memory": args.dataloader_pin_memory,
        "trainer.args.per_device_eval_batch_size": args.per_device_eval_batch_size,
        "trainer.args.torch_compile": args.torch_compile,
        "optimizer": type(inner).__name__,
        "optimizer_fused": inner.defaults.get("fused") if inner is not None else None,
        "model.dtype": str(getattr(model, "dtype", None)),
        "model.device": str(getattr(model, "device", None)),
        "model.config._attn_implementation": getattr(
            getattr(model, "config", None), "_attn_implementation", None
        ),
        "data_collator.pad_to_multiple_of": _collator_pad_multiple(kwargs.get("train_dataloader")),
        **_precision_switches(),
    }


def _bare_model(model_dir: str, params: dict[str, Any], total: int, compile_model: bool) -> Any:
    """The bare loop's model (compiled if asked), fused AdamW and linear schedule, seeded
    as the sweeper trial's."""
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
        fused=True,  # as the Trainer's adamw_torch_fused, on a CPU too
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, (total - step) / max(1, total))
    )
    runner = torch.compile(model) if compile_model else model
    return device, model, runner, optimizer, schedule


def bare_loop(
    model_dir: str,
    batches: list[dict[str, Any]],
    params: dict[str, Any],
    mixed: dict[str, bool],
    warmup_steps: int,
    busy: GpuBusy,
    *,
    non_blocking: bool = True,
    compile_model: bool = False,
    profiler: Any = None,
) -> dict[str, Any]:
    """Plain PyTorch: autocast, AdamW, a linear schedule, gradient clipping at 1.0 (as the
    Trainer), on the given batches in their order, from the same initial weights. With
    ``profiler`` (a ``torch.profiler.profile``), the steps after the warm-up are profiled."""
    import torch

    total = len(batches)
    device, model, runner, optimizer, schedule = _bare_model(
        model_dir, params, total, compile_model
    )
    dtype = torch.bfloat16 if mixed["bf16"] else torch.float16
    autocast_on = mixed["bf16"] or mixed["fp16"]
    scaler = torch.amp.GradScaler("cuda", enabled=mixed["fp16"])
    padded = nonpad = 0
    started = 0.0
    for index, cpu_batch in enumerate(batches):
        if index == warmup_steps:
            synchronize()
            started = time.perf_counter()
            busy.start()
            if profiler is not None:
                profiler.start()
        if index >= warmup_steps:
            padded += int(cpu_batch["input_ids"].numel())
            nonpad += int(cpu_batch["attention_mask"].sum())
        batch = {k: v.to(device, non_blocking=non_blocking) for k, v in cpu_batch.items()}
        with torch.autocast(device.type, dtype=dtype, enabled=autocast_on):
            loss = runner(**batch).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize()
    seconds = time.perf_counter() - started
    if profiler is not None:
        profiler.stop()
    share = busy.stop()
    del model, runner, optimizer
    return rates(total - warmup_steps, seconds, padded, nonpad, share) | {
        "non_blocking": non_blocking,
        "compiled": compile_model,
    }


def rates(
    steps: int, seconds: float, padded: int, nonpad: int, busy: float | None
) -> dict[str, Any]:
    return {
        "steps_measured": steps,
        "seconds": round(seconds, 3),
        "padded_tokens": padded,
        "nonpad_tokens": nonpad,
        "padded_tokens_per_s": round(padded / seconds, 1) if seconds > 0 else None,
        "nonpad_tokens_per_s": round(nonpad / seconds, 1) if seconds > 0 else None,
        "gpu_busy_share": busy,
    }


# --- one model's set-up, shared by steps 2, 5 and 6 ---------------------------------------------


@dataclass
class Bench:
    """One model's throughput set-up: its data (tokenized once), its trial's parameters,
    and the padded lengths this process has already run once (a new length pays a
    first-time cost on a GPU, which neither timed side should carry)."""

    label: str
    model_dir: str
    data_dir: Path
    scratch: Path
    sizes: dict[str, Any]
    busy: GpuBusy
    data: Any = None
    warmed: set[int] = field(default_factory=set)
    runs: int = 0
    # The default levers' measurement (step 2) and its batch lengths, for step 6.
    baseline: dict[str, Any] | None = None
    baseline_lengths: list[int] | None = None
    baseline_batches: list[dict[str, Any]] | None = None

    def config(self, training: dict[str, Any] | None = None) -> Any:
        """The trial's StudyConfig; ``training``: the study file's training section."""
        from sweeper.settings.config import StudyConfig

        document = study_document(
            f"throughput-{self.label}",
            self.data_dir,
            self.model_dir,
            self.sizes["max_length"],
            self.sizes["batch_size"],
            self.scratch / "runs",
            n_trials=1,
        )
        if training:
            document["training"] = dict(training)
        return StudyConfig.model_validate(document)

    def params(self) -> dict[str, Any]:
        return search_space(self.sizes["batch_size"])

    def bare(
        self, batches: list[dict[str, Any]], mixed: dict[str, bool], warmup: int, **options: Any
    ) -> dict[str, Any]:
        """``bare_loop`` on ``batches`` from this model's initial weights."""
        return bare_loop(
            self.model_dir, batches, self.params(), mixed, warmup, self.busy, **options
        )

    def prepared(self) -> Any:
        if self.data is None:
            from sweeper.trial.data import prepare_data
            from sweeper.trial.models import load_tokenizer

            self.data = prepare_data(
                self.config().dataset,
                load_tokenizer(self.model_dir),
                self.sizes["max_length"],
                self.scratch / "runs" / "cache" / "tokenized",
            )
        return self.data

    def out_dir(self, kind: str) -> Path:
        self.runs += 1
        return self.scratch / f"{kind}-{self.label}-{self.runs}"

    def warmup(self, steps: int) -> int:
        return min(self.sizes["warmup_steps"], max(1, steps // 4))


def trainer_batches(bench: Bench, config: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The Trainer's own training batches, in its order, from a Trainer built as the trial
    builds it (pinned on a GPU, as a loader with pinned memory hands them over)."""
    import torch
    from transformers import set_seed

    from sweeper.trial.models import load_classifier
    from sweeper.trial.training import build_trainer, release_memory

    data = bench.prepared()
    set_seed(42)
    order_model = load_classifier(bench.model_dir, data.label_names)
    order_trainer = build_trainer(config, params, data, order_model, bench.out_dir("order"))
    batches = []
    for batch in order_trainer.get_train_dataloader():
        cpu = {key: value.detach().to("cpu") for key, value in batch.items()}
        if torch.cuda.is_available():
            cpu = {key: value.pin_memory() for key, value in cpu.items()}
        batches.append(cpu)
    del order_trainer, order_model
    release_memory()
    return batches


def first_pass(
    bench: Bench, batches: list[dict[str, Any]], mixed: dict[str, bool], repeat: bool
) -> dict[str, Any]:
    """A process's first step at each batch shape is slow on a GPU (kernels loaded, cuDNN
    attention plans built per sequence length): one bare pass over one batch of every
    length this process has not run yet, timed (cold; with ``repeat`` again, warm), before
    either side is measured, so neither pays it inside its timed window (and the cost
    itself is on record)."""
    from sweeper.trial.training import release_memory

    first_of_each: dict[int, dict[str, Any]] = {}
    for batch in batches:
        length = int(batch["input_ids"].shape[1])
        if length not in bench.warmed:
            first_of_each.setdefault(length, batch)
    record: dict[str, Any] = {"batches": len(first_of_each)}
    if not first_of_each:
        return record
    shapes = list(first_of_each.values())
    cold = bench.bare(shapes, mixed, 0)
    record["cold_seconds"] = cold["seconds"]
    if repeat:
        warm = bench.bare(shapes, mixed, 0)
        record["warm_seconds"] = warm["seconds"]
        record["cold_minus_warm_seconds"] = round(cold["seconds"] - warm["seconds"], 3)
    bench.warmed |= set(first_of_each)
    release_memory()
    return record


def probed_trial(bench: Bench, config: Any, warmup: int) -> tuple[dict[str, Any], Any]:
    """One real sweeper trial (``train_trial``) with the probe: its outcome and tokens/s."""
    from sweeper.trial.speed import tf32_readings
    from sweeper.trial.training import release_memory, train_trial

    probe = make_probe(warmup, bench.busy)
    started = time.perf_counter()
    outcome = train_trial(
        config, bench.params(), bench.prepared(), bench.out_dir("sweeper"), callbacks=[probe]
    )
    trial_seconds = time.perf_counter() - started
    probe.tf32 = tf32_readings()  # right after the trial, before anything else runs
    release_memory()
    side: dict[str, Any] = {
        "trial_wall_seconds": round(trial_seconds, 3),
        "train_seconds": round(outcome.train_seconds, 3),
        "eval_seconds": round(outcome.eval_seconds, 3),
        "warmup_seconds": probe.warmup_seconds,
        "steps": outcome.planned_steps,
        "best_validation_loss": outcome.best_value,
        "accuracy": outcome.history[-1]["accuracy"] if outcome.history else None,
        "stop_reason": outcome.stop_reason,
    }
    if probe.window is not None:
        seconds = probe.window[1] - probe.window[0]
        nonpad = int(probe.nonpad.item() if hasattr(probe.nonpad, "item") else probe.nonpad)
        side |= rates(probe.measured_steps, seconds, probe.padded, nonpad, probe.busy_share)
    return side, probe


def ratio_of(numerator: dict[str, Any], denominator: Any, key: str = "padded_tokens_per_s") -> Any:
    top = numerator.get(key) if isinstance(numerator, dict) else None
    bottom = denominator.get(key) if isinstance(denominator, dict) else None
    return round(top / bottom, 4) if top and bottom else None


def measure(
    bench: Bench,
    training: dict[str, Any] | None = None,
    *,
    run_bare: bool = True,
    bare_options: dict[str, Any] | None = None,
    same_batches_as: list[int] | None = None,
    repeat_first_pass: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A probed sweeper trial with the ``training`` levers and the bare loop on its batches
    (none when ``run_bare`` is false, or when the batches' lengths equal
    ``same_batches_as``: that loop was measured already); the result and the batches."""
    from sweeper.trial.speed import resolve_speed
    from sweeper.trial.training import precision_flags, release_memory

    config = bench.config(training)
    batches = trainer_batches(bench, config, bench.params())
    lengths = [int(batch["input_ids"].shape[1]) for batch in batches]
    warmup = bench.warmup(len(batches))
    mixed = precision_flags(config.training.mixed_precision)
    passed = first_pass(bench, batches, mixed, repeat_first_pass)
    sweeper_side, probe = probed_trial(bench, config, warmup)
    result: dict[str, Any] = {
        "model": bench.label,
        "model_dir": bench.model_dir,
        "rows": {"train": len(bench.data.train), "validation": len(bench.data.validation)},
        "batch_size": bench.sizes["batch_size"],
        "max_length": bench.sizes["max_length"],
        "warmup_steps": warmup,
        "speed": asdict(resolve_speed(config.training)),
        "same_batches_in_same_order": lengths == probe.lengths,
        "first_pass_over_every_shape" if repeat_first_pass else "first_pass_over_new_shapes": (
            passed
        ),
        "sweeper": sweeper_side,
        "tf32_after_trial": probe.tf32,
    }
    if same_batches_as is not None and lengths == same_batches_as:
        run_bare = False
        result["bare"] = "the default's: the same batches"
    if run_bare:
        options = bare_options or {}
        result["bare"] = bench.bare(batches, mixed, warmup, **options)
        release_memory()
        result["ratio_sweeper_over_bare"] = ratio_of(sweeper_side, result["bare"])
    result["in_effect"] = in_effect(probe)
    return result, batches


def in_effect(probe: Any) -> dict[str, Any]:
    return {
        **probe.readings,
        "classifier_output_dtype_in_training": sorted(probe.head_dtypes),
        "training_batch_lengths_all_multiples_of_8": all(n % 8 == 0 for n in probe.lengths),
        "training_batch_lengths_distinct": len(set(probe.lengths)),
        "training_batch_lengths_shortest_five": sorted(set(probe.lengths))[:5],
    }


def judged(on_full_gpu: bool, value: Any, at_least: float) -> bool | None:
    """Whether a target is met: None (not measured) off a full-size GPU run or without a
    value, never True on a CPU."""
    if not on_full_gpu or value is None:
        return None
    return bool(value >= at_least)
