"""The parts of the GPU benchmark that run on a CPU: its trial probe and bare loop
(``benchmarks/gpu.py``) measure one real sweeper trial against the bare loop on the same
batches; its profile, TF32 check and summary (``benchmarks/gpu_speed.py``) read what they
should, and judge no target on a CPU."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import available
from benchmarks.gpu import (
    DEFAULT_STEPS,
    GpuBusy,
    add_arguments,
    throughput,
    write_throughput_split,
)
from benchmarks.gpu_speed import (
    LEVERS,
    new_profiler,
    profile_difference,
    profile_summary,
    summarize,
    tf32_agreement,
)
from tests.support.quick_benchmarks import QUICK_RUN_TEST_TIMEOUT


def test_gpu_benchmark_is_registered_with_its_options() -> None:
    module = available()["gpu"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--quick", "--minilm", "/models/minilm", "--time-budget", "60"])
    assert module.NAME == "gpu" and args.quick and args.minilm == "/models/minilm"
    assert args.time_budget == 60.0 and args.steps == DEFAULT_STEPS == "1,2,3,5,6,7"


def test_throughput_probe_and_bare_loop_see_the_same_batches(
    tiny_model_dir: Path, imdb_csv: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    rows = write_throughput_split(imdb_csv, data_dir, validation_rows=16, repeats=2, cap=40)
    assert rows == {"train_rows": 80, "validation_rows": 16}
    busy = GpuBusy()
    # 512 tokens: most reviews are shorter, so batches hold padding to count apart.
    sizes = {"max_length": 512, "batch_size": 8, "warmup_steps": 2}
    result = throughput("tiny", str(tiny_model_dir), data_dir, tmp_path, sizes, busy)
    json.dumps(result)  # what the benchmark writes must be JSON

    assert result["same_batches_in_same_order"] is True
    first_pass = result["first_pass_over_every_shape"]
    assert first_pass["batches"] == effect_lengths(result) > 1
    assert first_pass["cold_seconds"] > 0 and first_pass["warm_seconds"] > 0
    sweeper, bare = result["sweeper"], result["bare"]
    assert sweeper["steps"] == 10 and sweeper["steps_measured"] == bare["steps_measured"] == 8
    # The same batches: the same tokens, padded and not, on both sides.
    assert sweeper["padded_tokens"] == bare["padded_tokens"] > sweeper["nonpad_tokens"] > 0
    assert sweeper["nonpad_tokens"] == bare["nonpad_tokens"]
    assert result["ratio_sweeper_over_bare"] > 0
    assert sweeper["warmup_seconds"] > 0 and sweeper["trial_wall_seconds"] > 0
    assert result["speed"]["device"] == ("gpu" if torch.cuda.is_available() else "cpu")
    effect = result["in_effect"]
    assert effect["model.config._attn_implementation"] == "sdpa"
    assert effect["model.dtype"] == "torch.float32"
    if torch.cuda.is_available():
        assert effect["trainer.args.bf16"] or effect["trainer.args.fp16"]
        assert effect["data_collator.pad_to_multiple_of"] == 8
        assert effect["training_batch_lengths_all_multiples_of_8"] is True
        assert busy.error is None
    else:  # full precision on a CPU, and no padding multiple
        assert not effect["trainer.args.bf16"] and not effect["trainer.args.fp16"]
        assert effect["classifier_output_dtype_in_training"] == ["torch.float32"]
        assert effect["data_collator.pad_to_multiple_of"] is None
        assert sweeper["gpu_busy_share"] is None and busy.error is not None
        # A CPU's numbers say nothing of a GPU: no target is judged from them.
        assert result["target_met"] is None and result["over_today"]["met"] is None


def effect_lengths(result: dict[str, Any]) -> int:
    return int(result["in_effect"]["training_batch_lengths_distinct"])


@pytest.mark.timeout(QUICK_RUN_TEST_TIMEOUT)
@pytest.mark.slow
def test_gpu_benchmark_quick_runs_on_this_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m benchmarks gpu --quick`: every default step at smoke-test size, results as
    JSON, no target judged on a CPU."""
    from benchmarks.__main__ import main

    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "results"))
    assert main(["gpu", "--quick"]) == 0
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert results["quick"] is True
    for label in ("distilbert-shaped", "minilm"):
        assert results["step2_throughput"][label]["same_batches_in_same_order"] is True
    runs = results["step3_trials_per_hour"]["runs"]
    assert {key: run["finished_trials"] for key, run in runs.items()} == {"1": 2, "2": 2}
    assert runs["2"]["workers_seen"] == 2
    for run in runs.values():  # process start to the first trial's start
        assert 0 < run["startup_seconds"] < run["wall_seconds"]
        assert len(run["startup_seconds_per_worker"]) == run["workers_seen"]
    assert results["step4_trial_loop"] == "not asked"
    check_profile(results["step5_profile"])
    check_levers(results["step6_levers"])
    tf32 = results["step7_tf32"]
    assert tf32["none_raises"] is True and tf32["agree"] is True
    assert tf32["expected_tf32"] is False and tf32["as_expected"] is None  # no GPU
    summary = results["summary"]
    assert summary["targets_judged"] is False
    assert len(summary["targets"]) == 6
    for target in summary["targets"]:
        assert target["met"] is None and target["measured"] is None
        assert target["status"].startswith("not measured")
    assert set(summary["steps"].values()) == {"measured", "not asked"}


def check_profile(profile: dict[str, Any]) -> None:
    assert profile["same_batches_in_same_order"] is True
    for side in ("sweeper", "bare"):
        measured = profile[side]
        assert measured["steps"] == profile["profiled_steps"] > 0
        assert measured["wall_ms_per_step"] > 0 and measured["self_cpu_ms_per_step"] > 0
        assert measured["host_events_per_step"] > 0
        assert len(measured["top_ops_by_self_cpu"]) == 10
        assert measured["device_ms_per_step"] is None  # a CPU
        assert measured["kernel_launches_per_step"] is None
    extra = profile["sweeper_minus_bare"]
    assert extra["device_ms_per_step"] is None and len(extra["top_extra_ops_by_self_cpu"]) == 10


def check_levers(levers: dict[str, Any]) -> None:
    assert set(levers["levers"]) == {lever[0] for lever in LEVERS}
    default = levers["default"]
    assert default["speed"]["dataloader_workers"] == 0  # the CPU's defaults
    assert default["sweeper"]["nonpad_tokens_per_s"] > 0
    measured = {n: r for n, r in levers["levers"].items() if isinstance(r, dict)}
    # On a CPU: 2 loader workers and padding to 8/32/64 differ from the defaults.
    assert set(measured) == {
        "dataloader_workers=2",
        "pad_to_multiple_of=8",
        "pad_to_multiple_of=32",
        "pad_to_multiple_of=64",
    }
    for name, record in measured.items():
        assert record["sweeper"]["nonpad_tokens_per_s"] > 0, name
        assert record["nonpad_tokens_per_s_over_default"] > 0, name
        assert record["ratio_sweeper_over_bare"] > 0, name
        assert record["target_ratio_met"] is None and record["tf32_readers_agree"] is True
    assert levers["levers"]["dataloader_workers=2"]["speed"]["dataloader_workers"] == 2
    assert levers["levers"]["dataloader_workers=0"].startswith("same as the default")
    assert levers["levers"]["torch_compile=true"].startswith("not run: --quick")
    evaluation = levers["evaluation"]
    for size in (32, 128):
        assert evaluation[f"eval_batch_size={size}"]["seconds"] > 0
    assert evaluation["speedup_128_over_32"] > 0
    assert levers["fastest"]["nonpad_tokens_per_s"] > 0


def test_tf32_agreement_reads_both_apis() -> None:
    agreeing = {
        "get_float32_matmul_precision": "high",
        "cuda.matmul.allow_tf32": True,
        "cuda.matmul.fp32_precision": "tf32",
        "cudnn.allow_tf32": True,
        "cudnn.conv.fp32_precision": "tf32",
    }
    assert tf32_agreement(agreeing) | {"raising": []} == {
        "raising": [],
        "none_raises": True,
        "agree": True,
        "matmul_tf32": True,
        "conv_tf32": True,
    }
    split = agreeing | {"cuda.matmul.fp32_precision": "ieee"}
    assert tf32_agreement(split)["agree"] is False
    assert tf32_agreement(split)["matmul_tf32"] is None
    raising = agreeing | {"get_float32_matmul_precision": "raises: mix of the legacy and new"}
    verdict = tf32_agreement(raising)
    assert verdict["raising"] == ["get_float32_matmul_precision"]
    assert verdict["none_raises"] is False and verdict["agree"] is False


def test_profile_summary_counts_per_step() -> None:
    """A small profiled loop: its casts counted per step, no device fields on a CPU."""
    model = torch.nn.Linear(16, 4)

    def profiled(casts: int) -> tuple[dict[str, Any], dict[str, tuple[float, int]]]:
        profiler = new_profiler()
        profiler.start()
        for _ in range(4):
            x = torch.randn(8, 16)
            for _ in range(casts):
                x = x.double().float()
            model(x).sum().backward()
        profiler.stop()
        return profile_summary(profiler, 4, 0.01)

    plain, casting = profiled(0), profiled(3)
    assert casting[0]["to_copy_per_step"] - plain[0]["to_copy_per_step"] == 6
    assert casting[0]["wall_ms_per_step"] == 2.5 and casting[0]["self_cpu_ms_per_step"] > 0
    extra = profile_difference(casting, plain, 4)
    assert extra["to_copy_per_step"] == 6
    assert "aten::_to_copy" in {op["name"] for op in extra["top_extra_ops_by_self_cpu"]}
    if not torch.cuda.is_available():
        assert casting[0]["device_ms_per_step"] is None and extra["kernels_per_step"] is None


def test_summary_judges_no_target_without_a_full_gpu_run() -> None:
    made_up = {
        "quick": False,
        "machine": {"device": "cpu"},
        "step2_throughput": {
            "minilm": {"ratio_sweeper_over_bare": 0.95, "over_today": {"ratio": 1.3}}
        },
        "step3_trials_per_hour": "not run: time",
        "step7_tf32": {"agree": True},
    }
    summary = summarize(made_up)
    assert summary["targets_judged"] is False
    assert all(row["met"] is None and row["measured"] is None for row in summary["targets"])
    on_gpu = summarize(made_up | {"machine": {"device": "cuda"}})
    status = {row["target"].split(":")[0]: row["status"] for row in on_gpu["targets"]}
    assert on_gpu["targets_judged"] is True
    assert [row["met"] for row in on_gpu["targets"][:2]] == [True, True]
    assert on_gpu["targets"][2]["status"].startswith("not measured")  # distilbert: not run
    assert status["TF32"] == "met" and on_gpu["steps"]["step3_trials_per_hour"] == "not run: time"


def test_trial_loop_turns_start_from_a_fresh_accelerate_state() -> None:
    """On a GPU sweeper's Trainer fixes bf16 for the process and the documented
    hyperparameter_search Trainer then asks for fp32: accelerate refuses unless its state is
    reset between turns. Run in a child process, so this process's state stays as it is."""
    import subprocess
    import sys

    script = """
from accelerate import Accelerator
from benchmarks.trial_loop import fresh_accelerate_state
Accelerator(mixed_precision="bf16", cpu=True)
try:
    Accelerator(mixed_precision="no", cpu=True)
except ValueError as error:
    print("refused:", "cannot be changed" in str(error))
fresh_accelerate_state()
print("after reset:", Accelerator(mixed_precision="no", cpu=True).mixed_precision)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.split("\n")[:2] == ["refused: True", "after reset: no"], done.stdout
