"""The parts of the GPU path that run on a CPU: half-precision checkpoints load as fp32, and
the GPU benchmark's trial probe and bare loop (``benchmarks/gpu.py``) measure one real
sweeper trial against the bare loop on the same batches."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from benchmarks import available
from benchmarks.gpu import GpuBusy, add_arguments, throughput, write_throughput_split
from sweeper.trial.models import load_classifier


def test_a_half_precision_checkpoint_trains_in_full_precision(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """transformers 5 loads a checkpoint in its stored dtype; a trial's weights must be fp32
    (mixed precision is the Trainer's autocast, not half-precision weights)."""
    half = tmp_path / "half"
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir))
    model.to(torch.float16).save_pretrained(half)
    stored = AutoModelForSequenceClassification.from_pretrained(str(half))
    assert stored.dtype == torch.float16  # what a plain load gives
    assert load_classifier(str(half), ["negative", "positive"]).dtype == torch.float32


def test_gpu_benchmark_is_registered_with_its_options() -> None:
    module = available()["gpu"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--quick", "--minilm", "/models/minilm", "--time-budget", "60"])
    assert module.NAME == "gpu" and args.quick and args.minilm == "/models/minilm"
    assert args.time_budget == 60.0 and args.steps == "1,2,3,4"


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


def effect_lengths(result: dict[str, Any]) -> int:
    return int(result["in_effect"]["training_batch_lengths_distinct"])


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_gpu_benchmark_quick_runs_on_this_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m benchmarks gpu --quick`: every step at smoke-test size, results as JSON."""
    from benchmarks.__main__ import main

    monkeypatch.setenv("OUT", str(tmp_path))
    assert main(["gpu", "--quick", "--steps", "1,2,3"]) == 0
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert results["quick"] is True
    for label in ("distilbert-shaped", "minilm"):
        assert results["step2_throughput"][label]["same_batches_in_same_order"] is True
    runs = results["step3_trials_per_hour"]["runs"]
    assert {key: run["finished_trials"] for key, run in runs.items()} == {"1": 2, "2": 2}
    assert runs["2"]["workers_seen"] == 2
    assert results["step4_trial_loop"] == "not asked"


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
