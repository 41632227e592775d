"""The best trial's model card, in the Trainer's form, and its export as a model directory a
``transformers.pipeline`` loads and predicts the study's label names with."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from sweeper.attributes import CONFIG_ATTR, CONFIG_VERSION_ATTR
from sweeper.errors import CardError
from sweeper.launch.cli import main
from sweeper.settings.config import StudyConfig
from sweeper.settings.stored import CONFIG_VERSION
from sweeper.study.sweep import load_existing_study
from sweeper.views.card import RESULTS_HEADER, render_card
from tests.support.studies import FinishedStudy, history_rows


def section(card: str, heading: str) -> str:
    """The text under a markdown heading, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", card, re.M | re.S)
    assert match, f"no '{heading}' section in the card"
    return match.group(1)


def test_card_has_the_trainer_cards_form_and_the_sweep(
    finished_study: FinishedStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["card", str(finished_study.study_file), "--out", str(tmp_path)]) == 0
    path = tmp_path / "README.md"
    assert str(path) in capsys.readouterr().out
    card = path.read_text(encoding="utf-8")
    study = load_existing_study(finished_study.name, finished_study.storage_url)
    best = study.best_trial
    rows = best.user_attrs["history"]
    kept = next(row for row in rows if row["step"] == best.user_attrs["best_step"])

    assert card.startswith("---\n")  # the YAML metadata, checked in the next test
    assert "This model is a fine-tuned version of" in card and "reviews.csv" in card
    assert f"- Loss: {kept['validation_loss']:.4f}" in card
    assert re.search(r"^- Accuracy: [\d.]+$", card, re.M) and re.search(
        r"^- F1: [\d.]+$", card, re.M
    )

    hyper = section(card, "Training hyperparameters")
    assert f"- learning_rate: {best.params['learning_rate']:.6g}\n" in hyper
    assert f"- train_batch_size: {best.params['per_device_train_batch_size']}\n" in hyper
    assert "- eval_batch_size: auto (32 on a CPU, 128 on a GPU)\n" in hyper
    assert f"- seed: {best.params['seed']}\n" in hyper
    assert "- optimizer: Adam with betas=(0.9,0.999) and epsilon=1e-08\n" in hyper
    assert "- lr_scheduler_type: linear\n" in hyper
    assert f"- num_epochs: {best.params['num_train_epochs']}\n" in hyper

    table = [line for line in section(card, "Training results").splitlines() if line]
    assert table[0] == "| " + " | ".join(RESULTS_HEADER) + " |"
    assert len(table) == 2 + len(rows)  # header, alignment, one row per evaluation
    for line, row in zip(table[2:], rows, strict=True):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert int(cells[2]) == row["step"]
        assert float(cells[3]) == pytest.approx(row["validation_loss"], abs=1e-4)

    search = section(card, "Hyperparameter search")
    assert "- Trials: 4 in the study: 3 complete, 1 pruned, 0 failed, 0 running." in search
    assert "- Pruner: median (n_startup_trials=2" in search and "Sampler: TPE" in search
    for name in ("card A", "card B", "too high"):
        assert f"baseline {name}" in search
    assert "pruned at step" in search  # the stopped baseline says why
    why = section(card, "Which evaluation was kept, and why")
    assert f"evaluation at step {best.user_attrs['best_step']}" in why
    assert "best evaluation, not its last" in why
    assert re.search(r"^- Transformers \d", section(card, "Framework versions"), re.M)


def kept_row(study: optuna.Study) -> dict[str, Any]:
    best = study.best_trial
    return next(
        row for row in best.user_attrs["history"] if row["step"] == best.user_attrs["best_step"]
    )


def metadata(card: ModelCard) -> ModelCardData:
    assert isinstance(card.data, ModelCardData)  # ModelCard.data is typed as the base CardData
    return card.data


def metrics_by_type(card: ModelCard) -> dict[str, EvalResult]:
    """The card's model-index results by metric type (loss, accuracy, f1)."""
    results = metadata(card).eval_results
    assert results, "the card has no model-index results"
    by_type = {result.metric_type: result for result in results}
    assert len(by_type) == len(results), "a metric is listed twice"
    return by_type


def test_card_metadata_has_every_metric_of_the_kept_evaluation(
    finished_study: FinishedStudy, tmp_path: Path
) -> None:
    """huggingface_hub reads back the card `sweeper card` writes: the model-index holds the
    best trial's kept evaluation, on the local file by its name, with no base_model."""
    assert main(["card", str(finished_study.study_file), "--out", str(tmp_path)]) == 0
    card = ModelCard.load(tmp_path / "README.md")
    study = load_existing_study(finished_study.name, finished_study.storage_url)
    kept = kept_row(study)

    data = metadata(card)
    assert data.pipeline_tag == "text-classification"
    assert data.library_name == "transformers"
    assert {"sweeper", "optuna", "generated_from_trainer"} <= set(data.tags or ())
    # A local model directory and a local CSV have no Hub id.
    assert data.base_model is None and data.datasets is None
    assert data.license is None  # the study names none
    assert data.model_name == f"views-trial-{study.best_trial.number}"

    metrics = metrics_by_type(card)
    assert set(metrics) == {"loss", "accuracy", "f1"}
    # Stored unrounded: exactly the kept evaluation's numbers.
    assert metrics["loss"].metric_value == kept["validation_loss"]
    assert metrics["accuracy"].metric_value == kept["accuracy"]
    assert metrics["f1"].metric_value == kept["f1"]
    assert metrics["loss"].metric_name == "Validation Loss"
    assert metrics["f1"].metric_name == "F1 (binary)"  # two labels
    assert metrics["f1"].metric_args == {"average": "binary"}
    for result in metrics.values():
        assert result.task_type == "text-classification"
        assert (result.dataset_type, result.dataset_name) == ("local", "reviews.csv")
        assert result.dataset_split == "train (25% held out)"
        assert result.dataset_args == {"validation_fraction": 0.25, "split_seed": 42}

    # The raw YAML is the Hub's model-index form.
    (entry,) = data.to_dict()["model-index"]
    (result,) = entry["results"]
    assert result["task"]["type"] == "text-classification"
    assert [metric["type"] for metric in result["metrics"]] == ["loss", "accuracy", "f1"]
    assert "F1 is binary: the F1 of label 1 (`positive`)" in card.text


def copied_study(finished_study: FinishedStudy, **config_changes: dict[str, Any]) -> optuna.Study:
    """The finished study's trials and user attributes in an in-memory study, its stored
    config's sections updated with ``config_changes``."""
    source = load_existing_study(finished_study.name, finished_study.storage_url)
    study = optuna.create_study(study_name=source.study_name, direction=source.direction)
    study.add_trials(source.get_trials())
    for key, value in source.user_attrs.items():
        study.set_user_attr(key, value)
    config = copy.deepcopy(source.user_attrs["config"])
    for section_name, changes in config_changes.items():
        config[section_name] = {**config[section_name], **changes}
    study.set_user_attr("config", config)
    return study


def test_card_metadata_names_hub_ids_and_the_license(finished_study: FinishedStudy) -> None:
    study = copied_study(
        finished_study,
        model={"name": "google-bert/bert-base-uncased"},
        dataset={"path": "stanfordnlp/imdb", "validation_split": "test"},
    )
    study.set_user_attr("label_names", ["negative", "neutral", "positive"])
    study.set_user_attr("license", "apache-2.0")
    card = ModelCard(render_card(study))
    kept = kept_row(study)

    data = metadata(card)
    assert data.base_model == "google-bert/bert-base-uncased"
    assert data.datasets == ["stanfordnlp/imdb"]
    assert data.license == "apache-2.0"
    metrics = metrics_by_type(card)
    assert metrics["f1"].metric_value == kept["f1"]
    assert metrics["f1"].metric_name == "F1 (macro)"  # three labels
    assert metrics["f1"].metric_args == {"average": "macro"}
    for result in metrics.values():
        assert result.dataset_type == result.dataset_name == "stanfordnlp/imdb"
        assert result.dataset_split == "test" and result.dataset_args is None
    assert (
        "[google-bert/bert-base-uncased](https://huggingface.co/google-bert/bert-base-uncased)"
        in card.text
    )

    study.set_user_attr("license", "Apache 2.0")
    with pytest.raises(CardError) as raised:
        render_card(study)
    message = str(raised.value)
    assert "license='Apache 2.0'" in message and "study user attribute 'license'" in message
    assert "'apache-2.0'" in message and "set_user_attr" in message

    # Without the user attribute, the study file's model.license names it.
    licensed = copied_study(finished_study, model={"license": "mit"})
    assert metadata(ModelCard(render_card(licensed))).license == "mit"


def test_card_explains_an_overfitting_trial(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="overfit", storage=f"sqlite:///{tmp_path / 'o.db'}")
    config = StudyConfig.model_validate(
        {
            "name": "overfit",
            "dataset": {"path": "reviews.csv", "text_column": "text", "label_column": "label"},
            "model": {"name": "some-model", "max_length": 64},
        }
    )
    study.set_user_attr(CONFIG_ATTR, config.model_dump(mode="json"))
    study.set_user_attr(CONFIG_VERSION_ATTR, CONFIG_VERSION)
    # Validation loss turns up after step 6 while training loss keeps falling, as in card A.
    rows = history_rows([3, 6, 9], [0.70, 0.65, 0.68], training=[0.70, 0.60, 0.50])
    study.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            value=0.65,
            params={"learning_rate": 1e-3},
            distributions={"learning_rate": FloatDistribution(1e-4, 1e-2, log=True)},
            user_attrs={"history": rows, "best_step": 6, "best_checkpoint": None},
        )
    )
    text = render_card(study)
    why = section(text, "Which evaluation was kept, and why")
    assert "evaluation at step 6" in why and "last evaluation, at step 9" in why
    assert "validation loss rose from 0.65 to 0.68" in why
    assert "training loss fell from 0.6 to 0.5" in why and "overfitting after step 6" in why
    # No stored label names: F1 is listed without an averaging it cannot know.
    f1 = metrics_by_type(ModelCard(text))["f1"]
    assert (f1.metric_value, f1.metric_name, f1.metric_args) == (0.4, "F1", None)


def test_export_loads_in_a_pipeline_with_the_label_names(
    finished_study: FinishedStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoConfig, pipeline

    target = tmp_path / "best-model"
    assert main(["export", str(finished_study.study_file), "--to", str(target)]) == 0
    assert f'model="{target}"' in capsys.readouterr().out
    names = {path.name for path in target.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    assert not names & {"optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state.pth"}
    config = AutoConfig.from_pretrained(target)
    assert config.id2label == {0: "negative", 1: "positive"}

    classifier = pipeline("text-classification", model=str(target), device="cpu")
    predictions = classifier(["A moving, beautifully acted film.", "Dull and far too long."])
    assert [set(p) for p in predictions] == [{"label", "score"}] * 2
    assert {p["label"] for p in predictions} <= {"negative", "positive"}
    assert all(0.0 <= p["score"] <= 1.0 for p in predictions)
    study = load_existing_study(finished_study.name, finished_study.storage_url)
    assert f"# views-trial-{study.best_trial.number}" in (target / "README.md").read_text()
    exported = metrics_by_type(ModelCard.load(target / "README.md"))
    assert exported["loss"].metric_value == kept_row(study)["validation_loss"]

    # A second export into the same directory needs --force.
    assert main(["export", str(finished_study.study_file), "--to", str(target)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(["export", str(finished_study.study_file), "--to", str(target), "--force"]) == 0


def test_export_of_a_study_without_a_complete_trial_says_why(
    awkward_study: Callable[[str], tuple[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, url = awkward_study("no-complete")
    target = tmp_path / "out"
    assert main(["export", name, "--storage", url, "--to", str(target)]) == 2
    err = capsys.readouterr().err
    assert "has no complete trial yet" in err and f"sweeper sweep {name}" in err
    assert not target.exists()
    assert main(["card", name, "--storage", url, "--out", str(tmp_path / "card")]) == 2
    assert "has no complete trial yet" in capsys.readouterr().err


def test_export_with_a_missing_checkpoint_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'moved.db'}"
    study = optuna.create_study(study_name="moved", storage=url)
    gone = tmp_path / "runs" / "moved" / "checkpoints" / "trial-0" / "checkpoint-6"
    study.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            value=0.6,
            params={"learning_rate": 1e-3},
            distributions={"learning_rate": FloatDistribution(1e-4, 1e-2, log=True)},
            user_attrs={
                "history": history_rows([6], [0.6]),
                "best_step": 6,
                "best_checkpoint": str(gone),
            },
        )
    )
    assert main(["export", "moved", "--storage", url, "--to", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"best_checkpoint='{gone}'" in err and "trial #0" in err and "deleted or moved" in err
