"""notebooks/analysis.ipynb, executed for real (nbclient, a fresh kernel) on a finished study."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeper.study.sweep import load_existing_study
from sweeper.views.figures import figures
from tests.support.studies import REPO_ROOT, FinishedStudy

NOTEBOOK = REPO_ROOT / "notebooks" / "analysis.ipynb"
PLOTLY_MIME = "application/vnd.plotly.v1+json"


@pytest.mark.timeout(300)
def test_analysis_notebook_runs_on_a_study(
    finished_study: FinishedStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("SWEEPER_STUDY", finished_study.name)
    monkeypatch.setenv("SWEEPER_STORAGE", finished_study.storage_url)
    # Any cell that raises makes execute() raise CellExecutionError, failing the test.
    NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()

    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.output_type == "error"]
    text = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "study 'views' in sqlite:///" in text and "4 trials" in text
    assert "3 complete, 1 pruned, 0 failed, 0 running" in text

    tables = [
        output["data"]["text/html"]
        for output in outputs
        if output.output_type == "execute_result" and "text/html" in output.get("data", {})
    ]
    assert len(tables) == 2, "the trials and the evaluations as DataFrames"
    trials_table, evaluations_table = tables
    assert trials_table.count("COMPLETE") == 3 and trials_table.count("PRUNED") == 1
    assert "params_learning_rate" in trials_table and "user_attrs_best_step" in trials_table
    study = load_existing_study(finished_study.name, finished_study.storage_url)
    evaluations = sum(len(trial.user_attrs["history"]) for trial in study.trials)
    assert evaluations_table.count("<tr>") == evaluations  # body rows (the header row is styled)

    shown = [
        output["data"][PLOTLY_MIME] for output in outputs if PLOTLY_MIME in output.get("data", {})
    ]
    expected = [figure.layout.title.text for figure in figures(study).values()]
    assert [figure["layout"]["title"]["text"] for figure in shown] == expected
    assert all(figure["data"] for figure in shown[:2])  # history and loss curves have data


def test_notebook_in_the_repository_has_no_outputs() -> None:
    """Committed clean (e.g. `jupyter nbconvert --clear-output --inplace`): no code cell has
    an output or an execution count, and the parameters cell names the study to open."""
    import nbformat

    notebook = nbformat.read(Path(NOTEBOOK), as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "the notebook has no code cell"
    with_outputs = [index for index, cell in enumerate(notebook.cells) if cell.get("outputs")]
    assert with_outputs == [], f"cells {with_outputs} were committed with outputs"
    counted = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and cell.execution_count is not None
    ]
    assert counted == [], f"cells {counted} were committed with an execution count"
    parameters = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert (
        len(parameters) == 1
        and "STUDY" in parameters[0].source
        and "STORAGE" in parameters[0].source
    )
