"""Steps 5-7 of the GPU benchmark (``benchmarks.gpu``) and its summary: what the speed
levers changed, measured with ``benchmarks.gpu_measure``.

- **Step 5, profile**: ``torch.profiler`` over a few warm steps of a sweeper trial and of
  the bare loop on the same batches; per step: wall and CPU time, device time, kernel
  launches, ``aten::_to_copy`` calls, the top ops by self CPU time; and what sweeper's
  side spends beyond the bare loop's.
- **Step 6, levers**: step 2's measurement of the lever model again with each speed lever
  of ``training`` flipped alone, against a bare loop with the same lever where the bare
  loop has it, and the evaluation time at two evaluation batch sizes.
- **Step 7, TF32**: torch's TF32 switches as its legacy and new readers see them after a
  sweeper trial (``sweeper.trial.speed.tf32_readings``), and whether they agree.
- **The summary**: every target, measured (met or missed) or not measured; the target
  against the H200's numbers before the speed levers names where they were read from.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, Protocol

from benchmarks.gpu_measure import (
    NOT_RUN,
    TARGET_OVER_TODAY,
    TARGET_THROUGHPUT_RATIO,
    TARGET_TRIALS_PER_HOUR_GAIN,
    Bench,
    Clock,
    judged,
    measure,
    on_full_gpu,
    on_gpu,
    ratio_of,
    synchronize,
    today_reference,
)


class Session(Protocol):
    """What steps 5 and 6 need of the run (``benchmarks.gpu.Session``): its clock, whether
    a part still fits, a result written at once, and work whose failure is recorded."""

    clock: Clock

    def fits(self, step: int, minimum: float | None = None) -> bool: ...

    def set(self, key: str, value: Any) -> None: ...

    def attempt(self, step: int, label: str, work: Callable[[], Any]) -> Any: ...


# --- step 7: TF32 ---------------------------------------------------------------------------------

# What each reader of tf32_readings() says about TF32, and for which backend.
TF32_MEANING: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "get_float32_matmul_precision": ("matmul", lambda value: value != "highest"),
    "cuda.matmul.allow_tf32": ("matmul", bool),
    "cuda.matmul.fp32_precision": ("matmul", lambda value: value == "tf32"),
    "cudnn.allow_tf32": ("conv", bool),
    "cudnn.conv.fp32_precision": ("conv", lambda value: value == "tf32"),
}


def tf32_agreement(readings: dict[str, Any]) -> dict[str, Any]:
    """Whether no reader raised and the readers of each backend (matrix products,
    convolutions) say the same; what they say."""
    raising = sorted(name for name, value in readings.items() if str(value).startswith("raises"))
    said: dict[str, set[bool]] = {"matmul": set(), "conv": set()}
    for name, value in readings.items():
        if name not in raising and name in TF32_MEANING:
            backend, meaning = TF32_MEANING[name]
            said[backend].add(bool(meaning(value)))
    return {
        "raising": raising,
        "none_raises": not raising,
        "agree": not raising and all(len(values) <= 1 for values in said.values()),
        "matmul_tf32": next(iter(said["matmul"])) if len(said["matmul"]) == 1 else None,
        "conv_tf32": next(iter(said["conv"])) if len(said["conv"]) == 1 else None,
    }


def tf32_step(readings: dict[str, Any]) -> dict[str, Any]:
    """Step 7: the readings taken right after step 2's sweeper trial of the lever model."""
    import torch

    from sweeper.settings.config import TrainingConfig
    from sweeper.trial.speed import resolve_speed

    expected = resolve_speed(TrainingConfig()).tf32
    agreement = tf32_agreement(readings)
    return {
        "read_after": "step 2's sweeper trial of the lever model",
        "expected_tf32": expected,
        "readings": readings,
        **agreement,
        "as_expected": (agreement["matmul_tf32"] == expected)
        if torch.cuda.is_available()
        else None,
    }


# --- step 5: the per-step profile -----------------------------------------------------------------

# The host calls that launch work on the GPU (the runtime's and the driver's names).
LAUNCHES = (
    "cudaLaunchKernel",
    "cudaLaunchKernelExC",
    "cuLaunchKernel",
    "cuLaunchKernelEx",
    "cudaGraphLaunch",
)
TOP_OPS = 10


def new_profiler() -> Any:
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    return profile(activities=activities)


def make_profile_callback(start_after: int, steps: int) -> Any:
    """A TrainerCallback that profiles ``steps`` training steps after ``start_after`` of
    them, then ends the trial there (no evaluation, no checkpoint)."""
    from transformers import TrainerCallback

    class ProfileSteps(TrainerCallback):
        def __init__(self) -> None:
            self.profiler = new_profiler()
            self.lengths: list[int] = []
            self.seconds: float | None = None
            self._started: float | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            kwargs["model"].register_forward_pre_hook(self._count, with_kwargs=True)

        def _count(self, module: Any, args: Any, kwargs: Any) -> None:
            input_ids = kwargs.get("input_ids")
            if module.training and input_ids is not None:
                self.lengths.append(int(input_ids.shape[1]))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == start_after:
                synchronize()
                self._started = time.perf_counter()
                self.profiler.start()
            elif state.global_step == start_after + steps and self._started is not None:
                self._finish()
                control.should_training_stop = True

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.seconds is not None:  # stopped by this callback: nothing to evaluate
                control.should_evaluate = False
                control.should_save = False

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self._started is not None and self.seconds is None:
                self._finish()

        def _finish(self) -> None:
            assert self._started is not None
            synchronize()
            self.profiler.stop()
            self.seconds = time.perf_counter() - self._started

    return ProfileSteps()


def profile_summary(
    profiler: Any, steps: int, seconds: float
) -> tuple[dict[str, Any], dict[str, tuple[float, int]]]:
    """Per step: wall time (profiler overhead included), self CPU time of every host event,
    device time of every kernel and copy (None without a GPU), kernel launches, dtype
    conversions and copies, and the top ops by self CPU time; and every host op's self
    CPU time (microseconds) and calls, for the difference between two sides."""
    import torch
    from torch.autograd import DeviceType

    on_gpu = torch.cuda.is_available()
    averages = profiler.key_averages()
    host = [e for e in averages if e.device_type == DeviceType.CPU]
    device = [
        e
        for e in averages
        if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
    ]
    ops = {e.key: (float(e.self_cpu_time_total), int(e.count)) for e in host}
    calls = {name: count for name, (_, count) in ops.items()}

    def per_step(total: float) -> float:
        return round(total / steps, 3)

    summary = {
        "steps": steps,
        "wall_ms_per_step": per_step(seconds * 1000),
        "self_cpu_ms_per_step": per_step(sum(cpu for cpu, _ in ops.values()) / 1000),
        "device_ms_per_step": per_step(sum(e.self_device_time_total for e in device) / 1000)
        if on_gpu
        else None,
        "kernel_launches_per_step": per_step(sum(calls.get(name, 0) for name in LAUNCHES))
        if on_gpu
        else None,
        "kernels_per_step": per_step(sum(e.count for e in device)) if on_gpu else None,
        "to_copy_per_step": per_step(calls.get("aten::_to_copy", 0)),
        "copy__per_step": per_step(calls.get("aten::copy_", 0)),
        "host_events_per_step": per_step(sum(calls.values())),
        "top_ops_by_self_cpu": top_ops(ops, steps),
    }
    return summary, ops


def top_ops(
    ops: dict[str, tuple[float, int]], steps: int, prefix: str = ""
) -> list[dict[str, Any]]:
    """The ``TOP_OPS`` ops by self CPU time, per step (``prefix``: of the fields' names)."""
    ranked = sorted(ops.items(), key=lambda item: item[1][0], reverse=True)[:TOP_OPS]
    return [
        {
            "name": name,
            f"{prefix}self_cpu_ms_per_step": round(cpu / 1000 / steps, 3),
            f"{prefix}calls_per_step": round(count / steps, 2),
        }
        for name, (cpu, count) in ranked
    ]


SCALARS = (
    "wall_ms_per_step",
    "self_cpu_ms_per_step",
    "device_ms_per_step",
    "kernel_launches_per_step",
    "kernels_per_step",
    "to_copy_per_step",
    "copy__per_step",
    "host_events_per_step",
)


def profile_difference(
    sweeper: tuple[dict[str, Any], dict[str, tuple[float, int]]],
    bare: tuple[dict[str, Any], dict[str, tuple[float, int]]],
    steps: int,
) -> dict[str, Any]:
    """Sweeper's side less the bare loop's, per step: every number, and the ops that cost
    sweeper the most self CPU time beyond the bare loop's."""
    (ours, our_ops), (theirs, their_ops) = sweeper, bare
    difference: dict[str, Any] = {
        key: round(ours[key] - theirs[key], 3)
        if ours[key] is not None and theirs[key] is not None
        else None
        for key in SCALARS
    }
    extra = {
        name: (
            our_ops.get(name, (0.0, 0))[0] - their_ops.get(name, (0.0, 0))[0],
            our_ops.get(name, (0.0, 0))[1] - their_ops.get(name, (0.0, 0))[1],
        )
        for name in set(our_ops) | set(their_ops)
    }
    difference["top_extra_ops_by_self_cpu"] = top_ops(extra, steps, prefix="extra_")
    return difference


def step_profile(session: Session, bench: Bench) -> dict[str, Any]:
    """Step 5: the default levers' trial of step 2 again, profiled after its warm-up and
    stopped after the profiled steps, then the bare loop on the same batches."""
    from sweeper.trial.training import precision_flags, release_memory, train_trial

    batches = bench.baseline_batches or []
    warmup = bench.warmup(len(batches))
    steps = max(1, min(int(bench.sizes["profile_steps"]), len(batches) - warmup - 1))
    config = bench.config()
    callback = make_profile_callback(warmup, steps)
    train_trial(
        config, bench.params(), bench.prepared(), bench.out_dir("profile"), callbacks=[callback]
    )
    release_memory()
    step: dict[str, Any] = {
        "model": bench.label,
        "warmup_steps": warmup,
        "profiled_steps": steps,
        "activities": ["cpu", "cuda"] if on_gpu() else ["cpu"],
        "note": "wall and CPU times include the profiler's own overhead, on both sides",
        "same_batches_in_same_order": callback.lengths
        == [int(b["input_ids"].shape[1]) for b in batches[: len(callback.lengths)]],
    }
    sweeper = profile_summary(callback.profiler, steps, callback.seconds or 0.0)
    step["sweeper"] = sweeper[0]
    session.set("step5_profile", step)
    profiler = new_profiler()
    mixed = precision_flags(config.training.mixed_precision)
    measured = bench.bare(batches[: warmup + steps], mixed, warmup, profiler=profiler)
    release_memory()
    bare = profile_summary(profiler, steps, measured["seconds"])
    step["bare"] = bare[0]
    step["sweeper_minus_bare"] = profile_difference(sweeper, bare, steps)
    return step


# --- step 6: each lever on and off ---------------------------------------------------------------

# name, the training section's setting, what the bare loop has of it: its batches
# (padding), its copies, its compilation, or nothing (None: the bare loop iterates batches
# collected beforehand, with no data loader); and the least seconds worth starting it with
# at full size (a trial and perhaps a bare loop; with no padding multiple, a first pass
# over every new length; compilation). In the order they run: torch_compile last.
LEVERS: tuple[tuple[str, dict[str, Any], str | None, float], ...] = (
    ("non_blocking=false", {"non_blocking": False}, "copies", 10.0),
    ("dataloader_workers=0", {"dataloader_workers": 0}, None, 8.0),
    ("dataloader_workers=2", {"dataloader_workers": 2}, None, 8.0),
    ("persistent_workers=false", {"persistent_workers": False}, None, 8.0),
    ("pad_to_multiple_of=8", {"pad_to_multiple_of": 8}, "batches", 12.0),
    ("pad_to_multiple_of=32", {"pad_to_multiple_of": 32}, "batches", 12.0),
    ("pad_to_multiple_of=64", {"pad_to_multiple_of": 64}, "batches", 12.0),
    ("pad_to_multiple_of=none", {"pad_to_multiple_of": None}, "batches", 30.0),
    ("torch_compile=true", {"torch_compile": True}, "compile", 90.0),
)
# The evaluation batch sizes compared (step 6), and the least seconds for it.
EVAL_MINIMUM_SECONDS = 6.0
# The bare loop compiled, after sweeper's compiled trial: the least seconds for it.
BARE_COMPILE_MINIMUM_SECONDS = 45.0
EVAL_BATCH_SIZES = (32, 128)
SWEEPER_KEYS = (
    "trial_wall_seconds",
    "train_seconds",
    "eval_seconds",
    "warmup_seconds",
    "steps_measured",
    "seconds",
    "padded_tokens_per_s",
    "nonpad_tokens_per_s",
    "gpu_busy_share",
    "accuracy",
)
BARE_KEYS = (
    "steps_measured",
    "seconds",
    "padded_tokens_per_s",
    "nonpad_tokens_per_s",
    "gpu_busy_share",
    "non_blocking",
    "compiled",
)
NO_LOADER = "the default's: the bare loop has no data loader (its batches are collected beforehand)"


def pick(side: Any, keys: tuple[str, ...]) -> Any:
    return {key: side.get(key) for key in keys} if isinstance(side, dict) else side


def lever_record(
    result: dict[str, Any], baseline: dict[str, Any], setting: dict[str, Any], full: bool
) -> dict[str, Any]:
    """A lever's measurement, and how it compares with the default levers' (step 2)."""
    bare = result.get("bare", NO_LOADER)
    against = bare if isinstance(bare, dict) else baseline["bare"]
    ratio = ratio_of(result["sweeper"], against)
    return {
        "setting": setting,
        "speed": result["speed"],
        "sweeper": pick(result["sweeper"], SWEEPER_KEYS),
        "bare": pick(bare, BARE_KEYS),
        "ratio_sweeper_over_bare": ratio,
        "target_ratio_met": judged(full, ratio, TARGET_THROUGHPUT_RATIO),
        "nonpad_tokens_per_s_over_default": ratio_of(
            result["sweeper"], baseline["sweeper"], "nonpad_tokens_per_s"
        ),
        "padded_tokens_per_s_over_default": ratio_of(result["sweeper"], baseline["sweeper"]),
        "trial_wall_seconds_over_default": ratio_of(
            result["sweeper"], baseline["sweeper"], "trial_wall_seconds"
        ),
        "training_batch_lengths_distinct": result["in_effect"]["training_batch_lengths_distinct"],
        "first_pass_over_new_shapes": result.get("first_pass_over_new_shapes"),
        "same_batches_in_same_order": result["same_batches_in_same_order"],
        "tf32_after_trial": result["tf32_after_trial"],
        "tf32_readers_agree": tf32_agreement(result["tf32_after_trial"])["agree"],
    }


def measure_lever(
    session: Session, bench: Bench, setting: dict[str, Any], applies: str | None
) -> dict[str, Any]:
    """The sweeper trial with the lever, and the bare loop with it where the bare loop has
    it (compiled only when the time for it is left)."""
    from sweeper.trial.training import precision_flags, release_memory

    assert bench.baseline is not None
    result, batches = measure(
        bench,
        setting,
        run_bare=applies in ("copies", "batches"),
        bare_options={"non_blocking": False} if applies == "copies" else None,
        same_batches_as=bench.baseline_lengths if applies == "batches" else None,
    )
    if applies == "compile":
        result["bare"] = NOT_RUN + " (the bare loop, compiled)"
        if session.fits(6, BARE_COMPILE_MINIMUM_SECONDS):
            mixed = precision_flags(bench.config(setting).training.mixed_precision)
            result["bare"] = bench.bare(batches, mixed, result["warmup_steps"], compile_model=True)
            release_memory()
    full = on_full_gpu(bench.sizes)
    return lever_record(result, bench.baseline, setting, full)


def one_lever(
    session: Session,
    bench: Bench,
    lever: tuple[str, dict[str, Any], str | None, float],
) -> Any:
    from sweeper.trial.speed import resolve_speed

    name, setting, applies, minimum = lever
    default = resolve_speed(bench.config().training)
    if resolve_speed(bench.config(setting).training) == default:
        return "same as the default on this device (the same levers resolved)"
    if applies == "compile" and not bench.sizes["compile_lever"]:
        return "not run: --quick (inductor's C++ build takes minutes on a small CPU)"
    if not session.fits(6, minimum):
        return NOT_RUN
    print(f"[gpu] step 6: {name}, {session.clock.left():.0f} s left", flush=True)
    record = session.attempt(
        6, name, functools.partial(measure_lever, session, bench, setting, applies)
    )
    print(f"[gpu]   {name}: {record if isinstance(record, str) else lever_line(record)}")
    return record


def lever_line(record: dict[str, Any]) -> str:
    sweeper = record["sweeper"]
    return (
        f"{sweeper.get('nonpad_tokens_per_s')} non-pad tokens/s, "
        f"{record['nonpad_tokens_per_s_over_default']}x the default's, "
        f"{record['ratio_sweeper_over_bare']}x the bare loop's"
    )


def evaluation_times(bench: Bench) -> dict[str, Any]:
    """The validation split evaluated by Trainers that differ only in eval_batch_size (one
    model): each once to warm up, then timed ``eval_repeats`` times in turn; the fastest."""
    from sweeper.trial.models import load_classifier
    from sweeper.trial.training import build_trainer, release_memory

    data = bench.prepared()
    model = load_classifier(bench.model_dir, data.label_names)
    trainers = {
        size: build_trainer(
            bench.config({"eval_batch_size": size}),
            bench.params(),
            data,
            model,
            bench.out_dir("eval"),
        )
        for size in EVAL_BATCH_SIZES
    }
    for trainer in trainers.values():
        trainer.evaluate()  # first time: loader workers, batch shapes
    seconds: dict[int, list[float]] = {size: [] for size in trainers}
    for _ in range(int(bench.sizes["eval_repeats"])):
        for size, trainer in trainers.items():
            synchronize()
            started = time.perf_counter()
            trainer.evaluate()
            synchronize()
            seconds[size].append(time.perf_counter() - started)
    del trainers, model
    release_memory()
    rows = len(data.validation)
    record: dict[str, Any] = {"rows": rows, "repeats": int(bench.sizes["eval_repeats"])}
    for size, times in seconds.items():
        record[f"eval_batch_size={size}"] = {
            "seconds": round(min(times), 4),
            "all_seconds": [round(value, 4) for value in times],
            "rows_per_s": round(rows / min(times), 1),
        }
    record["speedup_128_over_32"] = round(min(seconds[32]) / min(seconds[128]), 3)
    return record


def step_levers(session: Session, bench: Bench) -> dict[str, Any]:
    """Step 6: the evaluation batch sizes (cheap), then each lever alone (torch_compile
    last: the costliest), and the fastest setting."""
    baseline = bench.baseline
    assert baseline is not None
    step: dict[str, Any] = {
        "model": bench.label,
        "rows": baseline["rows"],
        "steps": baseline["sweeper"].get("steps"),
        "measure": "tokens/s after the warm-up, as step 2; each lever flipped alone",
        "default": {
            "speed": baseline["speed"],
            "sweeper": pick(baseline["sweeper"], SWEEPER_KEYS),
            "bare": pick(baseline["bare"], BARE_KEYS),
            "ratio_sweeper_over_bare": baseline.get("ratio_sweeper_over_bare"),
        },
        "levers": {lever[0]: NOT_RUN for lever in LEVERS},
        "evaluation": NOT_RUN,
    }
    session.set("step6_levers", step)
    if session.fits(6, EVAL_MINIMUM_SECONDS):
        step["evaluation"] = session.attempt(
            6, "evaluation", functools.partial(evaluation_times, bench)
        )
        session.set("step6_levers", step)
    for lever in LEVERS:
        step["levers"][lever[0]] = one_lever(session, bench, lever)
        session.set("step6_levers", step)
    step["fastest"] = fastest_lever(step, bench.label)
    return step


def fastest_lever(step: dict[str, Any], label: str) -> dict[str, Any]:
    """The setting with the most non-padding tokens/s: the default or one lever flipped."""
    candidates = {"default": step["default"]["sweeper"]}
    for name, record in step["levers"].items():
        if isinstance(record, dict):
            candidates[name] = record["sweeper"]
    name, sweeper = max(
        candidates.items(), key=lambda item: item[1].get("nonpad_tokens_per_s") or 0.0
    )
    default = step["default"]["sweeper"]
    return {
        "setting": name,
        "nonpad_tokens_per_s": sweeper.get("nonpad_tokens_per_s"),
        "nonpad_tokens_per_s_over_default": ratio_of(sweeper, default, "nonpad_tokens_per_s"),
        "padded_tokens_per_s": sweeper.get("padded_tokens_per_s"),
    }


# --- the summary ----------------------------------------------------------------------------------


def target_row(name: str, value: Any, met: bool | None, why_not: str | None) -> dict[str, Any]:
    if why_not is not None or value is None:
        reason = why_not or "its step did not measure it"
        return {"target": name, "measured": None, "met": None, "status": f"not measured: {reason}"}
    return {"target": name, "measured": value, "met": met, "status": "met" if met else "missed"}


def at_least_row(name: str, value: Any, at_least: float, why_not: str | None) -> dict[str, Any]:
    """The row of a target met by a value of at least ``at_least``."""
    return target_row(name, value, judged(why_not is None, value, at_least), why_not)


def throughput_targets(payload: dict[str, Any], why_not: str | None) -> list[dict[str, Any]]:
    measured = payload.get("step2_throughput")
    reference = today_reference()
    rows = []
    for label in ("minilm", "distilbert-shaped"):
        result = measured.get(label) if isinstance(measured, dict) else None
        result = result if isinstance(result, dict) else {}
        rows.append(
            at_least_row(
                f"{label}: sweeper tokens/s at least {TARGET_THROUGHPUT_RATIO}x the bare "
                "loop's, the same (default) levers on both sides",
                result.get("ratio_sweeper_over_bare"),
                TARGET_THROUGHPUT_RATIO,
                why_not,
            )
        )
        today = reference["padded_tokens_per_s"][label]
        over = at_least_row(
            f"{label}: sweeper padded tokens/s at least {TARGET_OVER_TODAY}x "
            f"before the speed levers ({today:,.0f} on the H200)",
            (result.get("over_today") or {}).get("ratio"),
            TARGET_OVER_TODAY,
            why_not,
        )
        rows.append(over | {"reference": reference["source"]["label"]})
    return rows


def later_targets(payload: dict[str, Any], why_not: str | None) -> list[dict[str, Any]]:
    tph = payload.get("step3_trials_per_hour")
    gain = tph["target"]["measured"] if isinstance(tph, dict) and "target" in tph else None
    rows = [
        at_least_row(
            f"trials/hour by wall time at 4 trials per GPU at least "
            f"{TARGET_TRIALS_PER_HOUR_GAIN}x 1 per GPU's",
            gain,
            TARGET_TRIALS_PER_HOUR_GAIN,
            why_not,
        )
    ]
    tf32 = payload.get("step7_tf32")
    agree = tf32.get("agree") if isinstance(tf32, dict) else None
    levers = payload.get("step6_levers")
    if agree is not None and isinstance(levers, dict):
        for record in levers["levers"].values():
            if isinstance(record, dict):
                agree = agree and record["tf32_readers_agree"]
    rows.append(
        target_row(
            "TF32: torch's legacy and new readers agree and none raises, after every sweeper trial",
            agree,
            agree,
            why_not,
        )
    )
    loop = payload.get("step4_trial_loop")
    if isinstance(loop, dict):
        rows.append(
            target_row(
                "trial loop: sweeper at most 0.7x hyperparameter_search's wall time",
                loop["summary"]["ratio"],
                loop["target"]["ratio_met"],
                why_not,
            )
        )
    return rows


def summarize(payload: dict[str, Any]) -> dict[str, Any]:
    """Every target (met, missed or not measured), the levers at a glance, each step's
    state. Targets are judged on a full-size GPU run only."""
    on_gpu = payload["machine"].get("device") == "cuda"
    why_not = None if on_gpu and not payload["quick"] else ("no GPU" if not on_gpu else "--quick")
    levers = payload.get("step6_levers")
    glance: Any = levers if isinstance(levers, str) else {}
    if isinstance(levers, dict):
        for name, record in levers["levers"].items():
            glance[name] = (
                {
                    "nonpad_tokens_per_s_over_default": record["nonpad_tokens_per_s_over_default"],
                    "ratio_sweeper_over_bare": record["ratio_sweeper_over_bare"],
                }
                if isinstance(record, dict)
                else record
            )
        evaluation = levers["evaluation"]
        glance["eval_batch_size 128 over 32 (speed-up)"] = (
            evaluation["speedup_128_over_32"] if isinstance(evaluation, dict) else evaluation
        )
    return {
        "targets_judged": why_not is None,
        "targets": throughput_targets(payload, why_not) + later_targets(payload, why_not),
        "levers": glance,
        "steps": {
            key: "measured" if isinstance(value, dict) else str(value)[:80]
            for key, value in payload.items()
            if key.startswith("step")
        },
    }
