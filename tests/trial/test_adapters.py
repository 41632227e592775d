"""LoRA trials (sweeper.trial.adapters): which modules train, what their checkpoints hold,
and a stopped LoRA trial resumed from its adapter checkpoint."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open
from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

from sweeper.errors import ModelError
from sweeper.settings.study_file import load_study_config
from sweeper.trial.adapters import (
    AdapterSettings,
    check_targets,
    kept_trainable,
    load_trained,
    parameter_counts,
    wrap_with_adapters,
)
from sweeper.trial.data import prepare_data
from sweeper.trial.models import load_pretrained_classifier
from sweeper.trial.training import train_trial

LABELS = ["negative", "positive"]
LORA_PARAMS = {
    "method": "lora",
    "learning_rate": 5e-3,
    "per_device_train_batch_size": 16,
    "num_train_epochs": 2,
    "seed": 42,
    "warmup_ratio": 0.0,
    "weight_decay": 0.0,
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.1,
    "lora_target_modules": "auto",
}


def _settings(targets: str = "auto", extra: tuple[str, ...] = ()) -> AdapterSettings:
    return AdapterSettings(
        r=4, alpha=8, dropout=0.0, target_modules=targets, bias="none", modules_to_save=extra
    )


@pytest.fixture(scope="module")
def tiny_distilbert(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A DistilBERT encoder saved without a head (as distilbert-base-uncased is): its
    classifier and pre_classifier are newly initialised when loaded for classification."""
    directory = tmp_path_factory.mktemp("tiny-distilbert")
    config = DistilBertConfig(
        vocab_size=AutoTokenizer.from_pretrained(str(tiny_model_dir)).vocab_size,
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
    )
    DistilBertModel(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(directory)
    return directory


def test_distilbert_gets_q_lin_v_lin_and_trains_its_new_pre_classifier(
    tiny_distilbert: Path,
) -> None:
    loaded = load_pretrained_classifier(str(tiny_distilbert), LABELS)
    assert set(loaded.new_modules) == {"pre_classifier", "classifier"}
    model = wrap_with_adapters(loaded.model, _settings(), loaded.new_modules)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    adapters = {name for name in trainable if ".lora_" in name}
    assert adapters and all(("q_lin" in n or "v_lin" in n) for n in adapters)
    # 2 layers x (q_lin, v_lin) x (A, B)
    assert len(adapters) == 2 * 2 * 2
    kept = trainable - adapters
    assert {name.split(".")[2] for name in kept} == {"pre_classifier", "classifier"}
    # Counted: the adapters (r=4 on four 32x32 projections: 4*32 + 32*4 each), the 32x32
    # pre_classifier and the 32x2 classifier, with their biases; against the base model's.
    expected = 4 * (4 * 32 + 32 * 4) + (32 * 32 + 32) + (32 * 2 + 2)
    base = sum(
        p.numel()
        for p in load_pretrained_classifier(str(tiny_distilbert), LABELS).model.parameters()
    )
    assert parameter_counts(model) == (expected, base)


def test_the_head_always_trains_even_when_the_checkpoint_has_one(tiny_model_dir: Path) -> None:
    loaded = load_pretrained_classifier(str(tiny_model_dir), LABELS)
    assert loaded.new_modules == ()  # the tiny BERT was saved with its classifier
    assert kept_trainable(loaded.model, loaded.new_modules, ()) == ["classifier"]
    model = wrap_with_adapters(loaded.model, _settings(), loaded.new_modules)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert any("classifier" in name for name in trainable)
    assert {name.split(".")[-4] for name in trainable if ".lora_" in name} == {"query", "value"}


@pytest.mark.parametrize(
    ("targets", "extra", "message"),
    [
        (
            "q_lin,v_lin",
            (),
            r"lora\.target_modules='q_lin,v_lin': the model has no module q_lin, v_lin; its "
            r"layers LoRA can wrap are \['dense', 'key', 'query', 'value'\]: set "
            r"lora\.target_modules to some of them, or to auto",
        ),
        (
            "query,values",
            (),
            r"the model has no module values; its layers LoRA can wrap are",
        ),
        (
            "auto",
            ("pre_classifier",),
            r"lora\.modules_to_save names 'pre_classifier', which is not a module of the "
            r"model; its top-level modules are \['bert', 'classifier', 'dropout'\]",
        ),
    ],
    ids=["distilbert-names-on-bert", "one-misspelt", "unknown-module-to-save"],
)
def test_modules_the_model_lacks_are_named_with_those_it_has(
    tiny_model_dir: Path, targets: str, extra: tuple[str, ...], message: str
) -> None:
    loaded = load_pretrained_classifier(str(tiny_model_dir), LABELS)
    with pytest.raises(ModelError, match=message):
        check_targets(loaded.model, targets)
        kept_trainable(loaded.model, loaded.new_modules, extra)


def _adapter_keys(checkpoint: Path) -> list[str]:
    with safe_open(str(checkpoint / "adapter_model.safetensors"), "pt") as handle:
        return list(handle.keys())


def _prepared(tmp_path: Path, write_study: Callable[..., Path]) -> tuple[Any, Any]:
    config = load_study_config(
        write_study(
            model={"method": "lora"},
            resume_checkpoint_minutes=0,
            keep_all_checkpoints=True,
            evaluation={"strategy": "steps", "steps": 3},
        )
    )
    tokenizer = AutoTokenizer.from_pretrained(config.model.name)
    data = prepare_data(config.dataset, tokenizer, config.model.max_length, tmp_path / "cache")
    return config, data


def test_a_lora_trial_trains_and_keeps_only_its_adapters_and_head(
    tmp_path: Path, write_study: Callable[..., Path]
) -> None:
    config, data = _prepared(tmp_path, write_study)
    outcome = train_trial(config, LORA_PARAMS, data, tmp_path / "trial")
    assert 0 < outcome.trainable_parameters < outcome.total_parameters / 20
    assert outcome.best_checkpoint is not None
    kept = Path(outcome.best_checkpoint)
    files = {path.name for path in kept.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert not files & {"model.safetensors", "pytorch_model.bin", "config.json"}
    keys = _adapter_keys(kept)
    assert keys and all(".lora_" in key or ".classifier." in key for key in keys)
    assert any(".classifier." in key for key in keys)
    adapter_config = json.loads((kept / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4 and adapter_config["lora_alpha"] == 8
    assert sorted(adapter_config["target_modules"]) == ["query", "value"]
    assert outcome.checkpoint_bytes is not None and outcome.save_seconds
    # The kept checkpoint scores as the trial did: base model + adapters (load_trained).
    model = load_trained(kept, config.model.name, data.label_names)
    assert parameter_counts(model)[1] == outcome.total_parameters


def test_a_stopped_lora_trial_resumes_from_its_adapter_checkpoint_at_the_same_step_and_loss(
    tmp_path: Path, write_study: Callable[..., Path]
) -> None:
    config, data = _prepared(tmp_path, write_study)
    whole = train_trial(config, LORA_PARAMS, data, tmp_path / "whole")
    evaluations: list[int] = []

    def count(grid_point: int, value: float) -> bool:
        evaluations.append(grid_point)
        return False

    stopped = train_trial(
        config,
        LORA_PARAMS,
        data,
        tmp_path / "stopped",
        on_evaluation=count,
        stop_requested=lambda: len(evaluations) >= 2,
    )
    assert stopped.interrupted_at_step is not None
    checkpoint = tmp_path / "stopped" / f"checkpoint-{stopped.interrupted_at_step}"
    assert (checkpoint / "adapter_model.safetensors").is_file()
    resumed = train_trial(
        config, LORA_PARAMS, data, tmp_path / "stopped", resume_from_checkpoint=checkpoint
    )
    assert resumed.resumed_from_step == stopped.interrupted_at_step
    steps = [row["step"] for row in whole.history]
    assert [row["step"] for row in resumed.history] == steps
    for row, expected in zip(resumed.history, whole.history, strict=True):
        assert row["validation_loss"] == pytest.approx(expected["validation_loss"], abs=1e-5)
