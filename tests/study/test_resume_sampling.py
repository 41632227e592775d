"""A resumed study continues its search instead of repeating its first draws."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from sweeper.runtime.storage import open_storage
from sweeper.settings.config import StudyConfig
from sweeper.settings.hyperparameters import suggest_params
from sweeper.study.sweep import open_study


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_resumed_seeded_sampler_does_not_repeat_the_first_trials(
    tmp_path: Path, sampler: str
) -> None:
    config = StudyConfig.model_validate(
        {
            "name": "resumed",
            "dataset": {"path": "reviews.csv", "text_column": "text", "label_column": "label"},
            "model": {"name": "some-model", "max_length": 64},
            "sampler": {"type": sampler, "seed": 5},
            "storage": f"sqlite:///{tmp_path / 'study.db'}",
        }
    )
    drawn = []
    for _run in range(3):  # three runs of `sweeper sweep`, one trial each
        study, _ = open_study(config, open_storage(config.storage_url, heartbeat=False))
        trial = study.ask()
        params = suggest_params(trial, config.space)
        study.tell(trial, 0.5)
        drawn.append(params["learning_rate"])
    assert len(set(drawn)) == 3, drawn
    # The same runs again in a fresh storage draw the same sequence: still reproducible.
    again = config.model_copy(update={"storage": f"sqlite:///{tmp_path / 'again.db'}"})
    repeated = []
    for _run in range(3):
        study, _ = open_study(again, open_storage(again.storage_url, heartbeat=False))
        trial = study.ask()
        repeated.append(suggest_params(trial, again.space)["learning_rate"])
        study.tell(trial, 0.5)
    assert repeated == drawn
    assert optuna.load_study(study_name="resumed", storage=config.storage_url).trials
