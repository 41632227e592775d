"""LoRA sweeps of the tiny BERT through the command line: a study that searches the method
(both kinds of trial on one grid), a LoRA study confirmed and exported, and every bad LoRA
input refused with one line, exit 2 and nothing written."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sweeper.launch.cli import main
from sweeper.records.confirmation import load_confirmation
from sweeper.study.sweep import load_existing_study

BOTH = {"choices": ["full", "lora"]}
GRID = {"strategy": "examples", "examples": 32}
FIXED = {"per_device_train_batch_size": 16, "num_train_epochs": 1, "seed": 42}


def _space(learning_rate: Any) -> dict[str, Any]:
    return {
        "learning_rate": learning_rate,
        "per_device_train_batch_size": {"choices": [16, 32]},
        "num_train_epochs": 1,
        "seed": {"choices": [42, 7]},
        "warmup_ratio": 0.0,
        "weight_decay": 0.0,
    }


def test_a_study_searching_the_method_trains_both_kinds_on_one_grid(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_study(
        "both",
        model={"method": BOTH},
        lora={"r": {"choices": [4, 8]}},
        search_space=_space(
            {
                "full": {"low": 1e-4, "high": 1e-3, "log": True},
                "lora": {"low": 1e-3, "high": 1e-2, "log": True},
            }
        ),
        evaluation=GRID,
        baselines=[
            {"name": "full", "params": {"learning_rate": 5e-4, **FIXED}},
            {"name": "lora", "params": {"method": "lora", "learning_rate": 5e-3, **FIXED}},
        ],
        budget={"n_trials": 4},
        keep_all_checkpoints=True,
    )
    assert main(["sweep", str(path), "--no-progress"]) == 0
    storage = f"sqlite:///{tmp_path / 'runs' / 'both' / 'study.db'}"
    trials = load_existing_study("both", storage).get_trials()
    by_method: dict[str, list[Any]] = {"full": [], "lora": []}
    for trial in trials:
        by_method[trial.params["method"]].append(trial)
    assert by_method["full"] and by_method["lora"]
    for method, group in by_method.items():
        for trial in group:
            assert f"{method}_learning_rate" in trial.params
            assert ("lora_r" in trial.params) == (method == "lora")
    full, lora = by_method["full"][0], by_method["lora"][0]
    # One grid: the same evaluation points for both (every 32 examples of 1 epoch).
    assert set(full.intermediate_values) == set(lora.intermediate_values)
    assert full.user_attrs["trainable_parameters"] == full.user_attrs["total_parameters"]
    assert lora.user_attrs["total_parameters"] == full.user_attrs["total_parameters"]
    assert 0 < lora.user_attrs["trainable_parameters"] < full.user_attrs["total_parameters"] / 20
    assert lora.user_attrs["checkpoint_bytes"] < full.user_attrs["checkpoint_bytes"] / 2
    assert main(["report", str(path)]) == 0
    assert (tmp_path / "runs" / "both" / "report.html").is_file()


def test_a_lora_sweep_is_confirmed_on_fresh_seeds(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    """The baseline names no rank: the sweep samples one, and its confirmation re-runs
    train with that rank (what the sweep trained), scored on the test split."""
    path = write_study(
        "adapters",
        dataset={"test_fraction": 0.2},
        model={"method": "lora"},
        lora={"r": {"choices": [4, 8]}},
        search_space=_space({"low": 1e-3, "high": 1e-2, "log": True}),
        evaluation=GRID,
        baselines=[{"name": "peft", "params": {"learning_rate": 5e-3, **FIXED}}],
        budget={"n_trials": 2},
    )
    assert main(["sweep", str(path), "--no-progress"]) == 0
    assert main(["confirm", str(path), "--top", "1", "--seeds", "2", "--no-progress"]) == 0
    storage = f"sqlite:///{tmp_path / 'runs' / 'adapters' / 'study.db'}"
    study = load_existing_study("adapters", storage)
    confirmation = load_confirmation(study)
    assert confirmation is not None
    swept = next(t for t in study.get_trials() if t.user_attrs.get("baseline") == "peft")
    baseline = confirmation.config("baseline:peft")
    assert baseline.params["lora_r"] == swept.params["lora_r"]
    assert all(r.test is not None for r in baseline.runs)
    run = confirmation.export_run
    kept = Path(str(run.best_checkpoint))
    assert (kept / "adapter_model.safetensors").is_file() and not (kept / "config.json").exists()
    # Scored on the test split from the adapters on the base model.
    assert all(r.test is not None and r.test.loss is not None for r in confirmation.winning.runs)


NO_PEFT = (
    "import sys; sys.modules['peft'] = None; "
    "from sweeper.launch.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"lora": {"target_modules": ["q_lin", "v_lin"]}},
            r"lora\.target_modules='q_lin,v_lin': the model has no module q_lin, v_lin; its "
            r"layers LoRA can wrap are \['dense', 'key', 'query', 'value'\]",
        ),
        ({"lora": {"r": 0}}, r"lora\.r: is the rank of each adapter's update and must lie in"),
        ({"lora": {"target_modules": []}}, r"lora\.target_modules: expected module names"),
        (
            {"lora": {"modules_to_save": ["pre_classifier"]}},
            r"lora\.modules_to_save names 'pre_classifier', which is not a module of the model",
        ),
        ({"peft": "missing"}, r"model\.method asks for LoRA trials, but peft is not installed; "),
    ],
    ids=["targets-the-model-lacks", "rank-zero", "no-targets", "unknown-module", "no-peft"],
)
def test_bad_lora_input_is_one_line_exit_2_and_nothing_written(
    write_study: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, Any],
    message: str,
) -> None:
    no_peft = change.pop("peft", None) is not None
    path = write_study("bad", model={"method": "lora"}, **change)
    if no_peft:
        result = subprocess.run(
            [sys.executable, "-c", NO_PEFT, "sweep", str(path), "--no-progress"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        code, err = result.returncode, result.stderr
        assert "pip install 'sweeper[lora]'" in err
    else:
        code, err = main(["sweep", str(path), "--no-progress"]), capsys.readouterr().err
    assert code == 2
    problems = [line for line in err.splitlines() if re.search(message, line)]
    assert len(problems) == 1, err
    assert not (tmp_path / "runs").exists()  # no storage, no checkpoint, no cache
