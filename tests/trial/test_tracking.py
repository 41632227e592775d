"""training.report_to: each retry chain is one run of the Trainer's own tracking integrations.

The study test runs a real tiny study that reports to TensorBoard, stops its first trial
mid-way (as SIGTERM does) and resumes it, and reads the event files back with
TensorBoard's own EventAccumulator.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from sweeper.errors import ConfigError
from sweeper.runtime.workers import StopRequest
from sweeper.settings.config import REPORT_TO_INTEGRATIONS
from sweeper.settings.hyperparameters import SEARCH_SPACE_PARAMS
from sweeper.settings.study_file import load_study_config
from sweeper.study.sweep import load_existing_study, run_study

MINIMAL: dict[str, Any] = {
    "dataset": {"path": "reviews.csv", "text_column": "review", "label_column": "sentiment"},
    "model": {"name": "some-model", "max_length": 128},
}


def test_the_accepted_names_are_those_of_the_installed_transformers() -> None:
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    assert sorted(REPORT_TO_INTEGRATIONS) == sorted(INTEGRATION_TO_CALLBACK), (
        "update sweeper.settings.config.REPORT_TO_INTEGRATIONS to transformers' integrations"
    )


@pytest.mark.parametrize(
    ("report_to", "message"),
    [
        ("none", None),
        ("tensorboard", None),
        (["tensorboard", "mlflow"], None),
        ("all", None),
        ("tensorbord", r"training\.report_to: unknown integration 'tensorbord'; expected "
         r"'none', 'all', or one or a list of .*tensorboard.*, but got 'tensorbord'"),
        (["wandb", "tensorbord"], r"training\.report_to: unknown integration 'tensorbord'"),
        (["none", "wandb"], r"training\.report_to: 'none' stands alone"),
        ([], r"training\.report_to: is an empty list; use 'none'"),
    ],
)  # fmt: skip
def test_report_to_accepts_transformers_integrations_only(
    tmp_path: Path, report_to: str | list[str], message: str | None
) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "training": {"report_to": report_to}}))
    if message is None:
        assert load_study_config(path).training.report_to == report_to
    else:
        with pytest.raises(ConfigError, match=message):
            load_study_config(path)


def test_default_is_no_tracking(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    assert load_study_config(path).training.report_to == "none"


class StopOnceACheckpointExists(StopRequest):
    """A stop request (as SIGTERM makes) that comes as soon as a trial saved a checkpoint:
    the trial saves another at its next step, is failed and re-enqueued at once."""

    def __init__(self, checkpoint_dir: Path) -> None:
        super().__init__()
        self.checkpoint_dir = checkpoint_dir

    @property
    def requested(self) -> bool:
        saved = any(self.checkpoint_dir.glob("trial-*/checkpoint-*/trainer_state.json"))
        return super().requested or saved


def read_run(directory: Path) -> EventAccumulator:
    run = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    run.Reload()
    return run


def assert_run_matches_trial(run: EventAccumulator, trial: FrozenTrial, run_name: str) -> None:
    history = trial.user_attrs["history"]
    eval_steps = [event.step for event in run.Scalars("eval/loss")]
    # One eval/loss point per evaluation of the whole retry chain, none twice.
    assert eval_steps == [row["step"] for row in history] == sorted(trial.intermediate_values)
    assert [event.value for event in run.Scalars("eval/loss")] == pytest.approx(
        [row["validation_loss"] for row in history], rel=1e-5
    )
    assert "eval/accuracy" in run.Tags()["scalars"]
    train_steps = [event.step for event in run.Scalars("train/loss")]
    assert train_steps == [row["step"] for row in history if row["training_loss"] is not None]
    assert train_steps, "the Trainer logs the training loss at every evaluation"

    # The trial's parameters, as the study names them, in the HParams tab.
    content = run.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    logged = HParamsPluginData.FromString(content).session_start_info.hparams
    # Searched and fixed ones: every hyperparameter of a full fine-tune (no LoRA setting).
    assert sorted(logged) == sorted(SEARCH_SPACE_PARAMS)
    for name, value in trial.params.items():
        assert logged[name].number_value == pytest.approx(value)
    assert logged["per_device_train_batch_size"].number_value == 16  # fixed in the study
    # And the TrainingArguments as text, as the Trainer's TensorBoardCallback logs them.
    args_text = run.Tensors("args/text_summary")[-1].tensor_proto.string_val[0]
    assert json.loads(args_text)["run_name"] == run_name


def test_each_retry_chain_is_one_tensorboard_run_named_by_its_first_trial(
    write_study: Callable[..., Path], study_name: str
) -> None:
    path = write_study(
        study_name,
        training={"report_to": "tensorboard"},
        search_space={"num_train_epochs": 1, "per_device_train_batch_size": 16},
        pruner={"type": "none"},
        budget={"n_trials": 2},
    )
    config = load_study_config(path)
    # Trial 0 is stopped (with a checkpoint) right after its first evaluation...
    run_study(config, show_progress=False, stop=StopOnceACheckpointExists(config.checkpoint_dir))
    # ...and its retry (trial 1) resumes it, then trial 2 runs: two finished trials.
    run_study(config, show_progress=False)

    study = load_existing_study(study_name, config.storage_url)
    interrupted, retry, fresh = study.get_trials()
    assert interrupted.state == TrialState.FAIL
    assert retry.state == fresh.state == TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == 0 and retry.user_attrs["resumed_from_step"] > 0

    runs = config.study_dir / "tensorboard"
    assert sorted(p.name for p in runs.iterdir()) == [
        f"{study_name}-trial-0",
        f"{study_name}-trial-2",
    ]
    # The retry wrote to its first trial's run: one event file per attempt, one run.
    for first, attempts in ((0, 2), (2, 1)):
        events = (runs / f"{study_name}-trial-{first}").glob("events.out.tfevents.*")
        assert len(list(events)) == attempts
    for trial, first in ((retry, 0), (fresh, 2)):
        name = f"{study_name}-trial-{first}"
        assert_run_matches_trial(read_run(runs / name), trial, name)
