"""The speed levers (sweeper.trial.speed), TF32's two APIs, and which evaluations save."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer, TrainerCallback

from sweeper.errors import ConfigError
from sweeper.settings.config import TrainingConfig
from sweeper.settings.study_file import load_study_config
from sweeper.trial.data import prepare_data
from sweeper.trial.speed import compile_recompile_limit, resolve_speed
from sweeper.trial.training import build_training_arguments, train_trial


@pytest.mark.parametrize(
    ("training", "device", "expected"),
    [
        # auto takes the device's default
        (
            {},
            "cpu",
            {
                "dataloader_workers": 0,
                "persistent_workers": False,
                "pin_memory": False,
                "pad_to_multiple_of": None,
                "non_blocking": False,
                "eval_batch_size": 32,
            },
        ),
        (
            {},
            "gpu",
            {
                "dataloader_workers": 2,
                "persistent_workers": True,
                "pin_memory": True,
                "pad_to_multiple_of": 8,
                "non_blocking": True,
                "eval_batch_size": 128,
            },
        ),
        # a value in the study file is used as it is
        ({"dataloader_workers": 3, "eval_batch_size": 64}, "cpu", {"dataloader_workers": 3}),
        ({"pad_to_multiple_of": 64}, "gpu", {"pad_to_multiple_of": 64}),
        ({"pad_to_multiple_of": None}, "gpu", {"pad_to_multiple_of": None}),
        ({"persistent_workers": False}, "gpu", {"persistent_workers": False}),
        # persistent workers need workers; non-blocking copies need a GPU
        ({"dataloader_workers": 0}, "gpu", {"persistent_workers": False}),
        ({"non_blocking": True}, "cpu", {"non_blocking": False}),
        ({"eval_batch_size": 64}, "gpu", {"eval_batch_size": 64}),
        ({"torch_compile": True}, "cpu", {"torch_compile": True}),
    ],
)
def test_levers_resolve_per_device(
    training: dict[str, Any], device: str, expected: dict[str, Any]
) -> None:
    speed = resolve_speed(TrainingConfig.model_validate(training), device)
    assert {key: getattr(speed, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("dataloader_workers", -1, "greater than or equal to 0"),
        ("eval_batch_size", 0, "greater than 0"),
        ("pad_to_multiple_of", 0, "greater than 0"),
        ("non_blocking", "sometimes", "auto"),
    ],
)
def test_a_bad_lever_names_its_key(
    key: str, value: Any, message: str, write_study: Callable[..., Path]
) -> None:
    with pytest.raises(ConfigError, match=rf"training\.{key}.*{message}"):
        load_study_config(write_study(training={key: value}))


def test_the_trainer_gets_the_resolved_levers(
    tmp_path: Path, write_study: Callable[..., Path]
) -> None:
    config = load_study_config(write_study(training={"eval_batch_size": 16}))
    params = {"learning_rate": 1e-3, "per_device_train_batch_size": 16, "num_train_epochs": 1}
    args = build_training_arguments(config, {**params, "seed": 1}, tmp_path / "trial")
    assert args.per_device_eval_batch_size == 16
    assert args.dataloader_num_workers == 0 and args.dataloader_pin_memory is False
    assert args.tf32 is None  # sweeper sets TF32 itself (apply_tf32)


@pytest.mark.parametrize(
    ("max_length", "multiple", "limit"),
    [(256, 8, 34), (512, 64, 10), (64, None, 66), (32, 32, 8)],
)
def test_the_recompile_limit_fits_every_padded_length(
    max_length: int, multiple: int | None, limit: int
) -> None:
    assert compile_recompile_limit(max_length, multiple) == limit


TF32_BEFORE = {
    "nothing": "",
    # what transformers' enable_tf32 does (tf32=True, or torch_compile with bf16)
    "transformers on": 'torch.backends.fp32_precision = "tf32"',
    "transformers off": 'torch.backends.fp32_precision = "ieee"',
    "legacy on": "torch.backends.cuda.matmul.allow_tf32 = True",
    "on then off": "apply_tf32(True); apply_tf32(False)",
}


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("before", list(TF32_BEFORE))
def test_after_apply_tf32_both_apis_agree(before: str, enabled: bool) -> None:
    """After transformers sets TF32 through torch's new process-wide switch, torch's legacy
    readers raise ("mix of the legacy and new APIs"); after apply_tf32 every reader of
    both APIs answers, with one value. In a fresh process: the switches are global."""
    script = f"""
import json, torch
from sweeper.trial.speed import apply_tf32, tf32_readings
{TF32_BEFORE[before]}
apply_tf32({enabled})
print(json.dumps(tf32_readings()))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    readings = json.loads(done.stdout)
    assert readings == {
        "get_float32_matmul_precision": "high" if enabled else "highest",
        "cuda.matmul.allow_tf32": enabled,
        "cudnn.allow_tf32": enabled,
        "cuda.matmul.fp32_precision": "tf32" if enabled else "ieee",
        "cudnn.conv.fp32_precision": "tf32" if enabled else "ieee",
    }


def test_transformers_tf32_switch_breaks_the_legacy_readers() -> None:
    """Why apply_tf32 exists: the state transformers leaves makes a legacy reader raise."""
    script = """
import json, torch
from sweeper.trial.speed import tf32_readings
torch.backends.fp32_precision = "tf32"
print(json.dumps(tf32_readings()))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    readings = json.loads(done.stdout)
    assert str(readings["cuda.matmul.allow_tf32"]).startswith("raises: ")


class CountSaves(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps.append(state.global_step)


@pytest.mark.parametrize("minutes", [10.0, 0.0])
def test_an_evaluation_saves_only_when_it_is_the_best_so_far(
    minutes: float, tmp_path: Path, write_study: Callable[..., Path]
) -> None:
    """With resume_checkpoint_minutes not yet due, only evaluations that beat the trial's
    best save a checkpoint; with 0, every evaluation does, as before."""
    config = load_study_config(
        write_study(evaluation={"strategy": "steps", "steps": 1}),
        {"resume_checkpoint_minutes": minutes},
    )
    tokenizer = AutoTokenizer.from_pretrained(config.model.name)
    data = prepare_data(config.dataset, tokenizer, config.model.max_length, tmp_path / "cache")
    saves = CountSaves()
    params = {
        "learning_rate": 5e-2,  # high enough that some evaluations get worse
        "per_device_train_batch_size": 16,
        "num_train_epochs": 1,
        "seed": 42,
        "warmup_ratio": 0.0,
        "weight_decay": 0.0,
    }
    outcome = train_trial(config, params, data, tmp_path / "trial", callbacks=[saves])
    losses = [float(row["validation_loss"] or 0.0) for row in outcome.history]
    steps = [int(row["step"] or 0) for row in outcome.history]
    improving = [
        step
        for index, step in enumerate(steps)
        if all(losses[index] < earlier for earlier in losses[:index])
    ]
    assert len(improving) < len(outcome.history)  # the curve has evaluations that lose
    expected = improving if minutes else steps
    assert saves.steps == expected
    kept = outcome.best_checkpoint
    assert kept is not None and kept.endswith(f"checkpoint-{outcome.best_step}")
    assert Path(kept).is_dir()
