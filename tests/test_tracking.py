"""training.report_to: each retry chain is one run of the Trainer's own tracking integrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sweeper.config import REPORT_TO_INTEGRATIONS, load_study_config
from sweeper.errors import ConfigError

MINIMAL: dict[str, Any] = {
    "dataset": {"path": "reviews.csv", "text_column": "review", "label_column": "sentiment"},
    "model": {"name": "some-model", "max_length": 128},
}


def test_the_accepted_names_are_those_of_the_installed_transformers() -> None:
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    assert sorted(REPORT_TO_INTEGRATIONS) == sorted(INTEGRATION_TO_CALLBACK), (
        "update sweeper.config.REPORT_TO_INTEGRATIONS to transformers' integrations"
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
