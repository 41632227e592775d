"""The study's figures (plotly), shared by the HTML report and ``notebooks/analysis.ipynb``.

:func:`figures` is the entry point: every figure keyed by the id of its place in the page.
"""

from __future__ import annotations

import html
import math
import textwrap
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from sweeper.attributes import (
    BASELINE_ATTR,
    BEST_STEP_ATTR,
    TRAINABLE_PARAMETERS_ATTR,
)
from sweeper.errors import ConfigError
from sweeper.records.confirmation import Confirmation, load_confirmation
from sweeper.records.results import (
    best_trial,
    early_stopped_at,
    format_value,
    history,
    kept_evaluation,
    objective_metric,
    planned_steps,
    validation_losses,
)
from sweeper.settings.hyperparameters import is_searched, param_title
from sweeper.settings.metrics import metric_title
from sweeper.settings.stored import stored_config

# Axis titles carry units (a metric's come from sweeper.settings.metrics). Losses are the Trainer's
# mean cross-entropy (natural log).
STEP_TITLE = "training step (optimizer updates)"
EXAMPLES_TITLE = "training examples seen"
LOSS_TITLE = "loss (cross-entropy, nats)"
TRIAL_TITLE = "trial number (in start order)"
BEST_COLOR = "#111111"
BASELINE_COLORS = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
TRIAL_COLORS = ("#1f77b4", "#2ca02c", "#ff7f0e", "#bcbd22", "#7f7f7f", "#aec7e8", "#98df8a")
PRUNED_COLOR = "#9a9a9a"
# Small multiples: the overfitting view gives each finished trial one panel.
PANEL_COLUMNS = 3
PANEL_HEIGHT_PX = 270
# A figure's note (its subtitle) is wrapped at this many characters, each line this tall.
NOTE_WIDTH_CHARS = 150
NOTE_LINE_PX = 17


def _finite(value: Any) -> float | None:
    """Plotly draws None as a gap; NaN/inf from a diverged trial would break the axis range."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _label(trial: FrozenTrial) -> str:
    baseline = trial.user_attrs.get(BASELINE_ATTR)
    return f"#{trial.number} {baseline}" if baseline else f"#{trial.number}"


def _params_text(trial: FrozenTrial) -> str:
    return "<br>".join(f"{name}={format_value(value)}" for name, value in trial.params.items())


def _layout(figure: go.Figure, title: str, note: str | None = None, height: int = 460) -> None:
    # Plotly never wraps a subtitle: long notes are broken into lines here, and the top
    # margin grows with them.
    lines = textwrap.wrap(note or "", NOTE_WIDTH_CHARS) or [""]
    figure.update_layout(
        title={
            "text": title,
            "subtitle": {"text": "<br>".join(html.escape(line, quote=False) for line in lines)},
            "x": 0.01,
            "xanchor": "left",
        },
        template="plotly_white",
        height=height + NOTE_LINE_PX * (len(lines) - 1),
        margin={"l": 80, "r": 30, "t": 90 + NOTE_LINE_PX * (len(lines) - 1), "b": 70},
        font={"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 13},
        legend={"title": {"text": "trial"}},
    )


def _note_figure(title: str, message: str) -> go.Figure:
    """Stands in for a figure the study cannot support yet, saying why instead of failing."""
    figure = go.Figure()
    figure.add_annotation(
        text=message,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        showarrow=False,
        font={"size": 15, "color": "#555"},
    )
    _layout(figure, title, height=240)
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure


def _trial_styles(trials: list[FrozenTrial], best: FrozenTrial | None) -> dict[int, dict[str, Any]]:
    """One colour per trial across figures: the best in black, baselines in reds and purples."""
    styles: dict[int, dict[str, Any]] = {}
    baseline_index = trial_index = 0
    for trial in trials:
        if best is not None and trial.number == best.number:
            styles[trial.number] = {"color": BEST_COLOR, "width": 3.5}
        elif BASELINE_ATTR in trial.user_attrs:
            color = BASELINE_COLORS[baseline_index % len(BASELINE_COLORS)]
            styles[trial.number] = {"color": color, "width": 2.5}
            baseline_index += 1
        elif trial.state == TrialState.PRUNED:
            styles[trial.number] = {"color": PRUNED_COLOR, "width": 1.5}
        else:
            color = TRIAL_COLORS[trial_index % len(TRIAL_COLORS)]
            styles[trial.number] = {"color": color, "width": 1.8}
            trial_index += 1
    return styles


def _best_so_far(complete: list[FrozenTrial], maximize: bool) -> list[float]:
    """The best objective value after each complete trial, in trial order."""
    best_so_far: list[float] = []
    for trial in complete:
        value = float(trial.value) if trial.value is not None else math.nan
        previous = best_so_far[-1] if best_so_far else value
        best_so_far.append(max(previous, value) if maximize else min(previous, value))
    return best_so_far


def _add_trial_markers(figure: go.Figure, complete: list[FrozenTrial], metric: str) -> None:
    """One marker per complete trial: the sampled ones, then the baselines, labelled."""
    baselines = [t for t in complete if BASELINE_ATTR in t.user_attrs]
    searched = [t for t in complete if BASELINE_ATTR not in t.user_attrs]
    for group, name, symbol, color in (
        (searched, "sampled trial", "circle", TRIAL_COLORS[0]),
        (baselines, "baseline", "diamond", BASELINE_COLORS[0]),
    ):
        if not group:
            continue
        figure.add_trace(
            go.Scatter(
                x=[t.number for t in group],
                y=[_finite(t.value) for t in group],
                mode="markers+text" if group is baselines else "markers",
                text=[str(t.user_attrs.get(BASELINE_ATTR, "")) for t in group],
                textposition="top center",
                cliponaxis=False,
                marker={"symbol": symbol, "size": 11, "color": color},
                name=name,
                customdata=[_params_text(t) for t in group],
                hovertemplate="trial %{x}<br>"
                + metric
                + "=%{y:.4f}<br>%{customdata}<extra></extra>",
            )
        )


def _history_figure(study: optuna.Study) -> go.Figure:
    metric = objective_metric(study)
    title = f"Optimization history: {metric} of each complete trial"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return _note_figure(title, "No trial has completed yet.")
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    figure = go.Figure()
    best_so_far = _best_so_far(complete, maximize)
    figure.add_trace(
        go.Scatter(
            x=[t.number for t in complete],
            y=best_so_far,
            mode="lines",
            line={"shape": "hv", "color": BEST_COLOR, "width": 2},
            name="best so far",
            hoverinfo="skip",
        )
    )
    _add_trial_markers(figure, complete, metric)
    _layout(
        figure,
        title,
        "Pruned trials are left out: their values are intermediate, not final.",
    )
    numbers = [t.number for t in complete]
    figure.update_xaxes(
        title_text=TRIAL_TITLE,
        tickformat="d",
        tick0=0,
        dtick=max(1, math.ceil((max(numbers) - min(numbers)) / 12)),
        range=[min(numbers) - 0.6, max(numbers) + 0.6],  # room for the baselines' labels
    )
    figure.update_yaxes(title_text=metric_title(metric))
    figure.update_layout(legend={"title": {"text": ""}})
    return figure


def _clipped_range(
    curves: dict[int, list[float | None]], complete: set[int]
) -> tuple[list[float] | None, int]:
    """A y range that keeps the complete trials readable when a diverging trial's loss is far
    above them; returns (range or None for autoscale, number of trials running off the top)."""
    inside = [v for n, vs in curves.items() if n in complete for v in vs if v is not None]
    every = [v for vs in curves.values() for v in vs if v is not None]
    if not inside or not every:
        return None, 0
    low, high = min(inside), max(inside)
    span = max(high - low, 1e-3 * max(abs(high), 1e-9))
    ceiling = high + span
    if max(every) <= high + 3 * span:
        return None, 0
    above = sum(1 for vs in curves.values() if any(v is not None and v > ceiling for v in vs))
    floor = min(min(every), low) - 0.1 * span
    return [floor, ceiling], above


def _loss_curve(
    trial: FrozenTrial,
    steps: list[int],
    losses: list[float | None],
    style: dict[str, Any],
    unit: str = "step",
) -> go.Scatter:
    """A trial's validation losses: dashed and ending in × where it was pruned, solid and
    ending in a square where early stopping ended it (complete, but before its plan).
    ``steps`` are the x values, in ``unit`` ("step" or "examples")."""
    pruned = trial.state == TrialState.PRUNED
    early = early_stopped_at(trial) is not None and trial.state == TrialState.COMPLETE
    at = f"step {steps[-1]}" if unit == "step" else f"{steps[-1]} examples"
    planned = planned_steps(trial)
    of_planned = f" of {planned}" if planned and unit == "step" else ""
    state = f"pruned at {at}{of_planned}" if pruned else trial.state.name.lower()
    if early:
        state = f"early-stopped at {at}"
    if trial.state == TrialState.RUNNING:
        state = f"running, at {at}"
    is_best = style["color"] == BEST_COLOR
    last = len(steps) - 1
    end_symbol = "x" if pruned else "square" if early else "circle"
    return go.Scatter(
        x=steps,
        y=losses,
        mode="lines+markers",
        line={
            "color": style["color"],
            "width": style["width"],
            "dash": "dash" if pruned else "solid",
        },
        marker={
            "size": [12 if (pruned or early) and i == last else 4 for i in range(len(steps))],
            "symbol": [end_symbol if i == last else "circle" for i in range(len(steps))],
            "color": style["color"],
        },
        opacity=0.75 if pruned else 1.0,
        name=f"{_label(trial)}{' best' if is_best else ''} ({state})",
        legendgroup=f"trial-{trial.number}",
        legendrank=0 if is_best else 1000 + trial.number,
        customdata=[_params_text(trial)] * len(steps),
        hovertemplate=(
            f"{_label(trial)} ({state})<br>{unit} %{{x}}<br>validation loss=%{{y:.4f}}"
            "<br>%{customdata}<extra></extra>"
        ),
    )


def _examples_per_point(study: optuna.Study) -> int | None:
    """evaluation.examples of a study evaluated on the examples grid, else None."""
    try:
        evaluation = stored_config(study.study_name, study.user_attrs).evaluation
    except ConfigError:
        return None
    return evaluation.examples if evaluation.strategy == "examples" else None


def _examples_curve(
    trial: FrozenTrial, metric: str, per_point: int | None
) -> list[tuple[int, float | None]]:
    """(training examples seen, validation loss) of each evaluation, [] when unknown. A
    running trial has only its reported values, keyed by grid point."""
    rows = history(trial)
    if rows:
        if any(row.get("examples") is None for row in rows):
            return []
        return [(int(row["examples"]), row.get("validation_loss")) for row in rows]
    if trial.state == TrialState.RUNNING and metric == "validation_loss" and per_point:
        return sorted((int(k) * per_point, v) for k, v in trial.intermediate_values.items())
    return []


def loss_curves_figure(study: optuna.Study) -> go.Figure:
    metric = objective_metric(study)
    trials = [t for t in study.get_trials(deepcopy=False) if validation_losses(t, metric)]
    # Against training examples when every curve has them, so that trials of different
    # batch sizes line up; against steps for histories stored before they had examples.
    per_point = _examples_per_point(study)
    by_examples = bool(trials) and all(_examples_curve(t, metric, per_point) for t in trials)
    unit = "examples" if by_examples else "step"
    title = "Validation loss of every trial against " + (
        "training examples seen" if by_examples else "training step"
    )
    if not trials:
        return _note_figure(title, "No trial has been evaluated yet.")
    styles = _trial_styles(trials, best_trial(study))
    figure = go.Figure()
    curves: dict[int, list[float | None]] = {}
    curve_steps: dict[int, list[int]] = {}
    for trial in trials:
        points = (
            _examples_curve(trial, metric, per_point)
            if by_examples
            else validation_losses(trial, metric)
        )
        steps = [step for step, _ in points]
        losses = [_finite(loss) for _, loss in points]
        curves[trial.number], curve_steps[trial.number] = losses, steps
        figure.add_trace(_loss_curve(trial, steps, losses, styles[trial.number], unit))
    complete = {t.number for t in trials if t.state == TrialState.COMPLETE}
    y_range, above = _clipped_range(curves, complete)
    note = (
        "Solid: ran to the end. Dashed, ending in ×: pruned (worse than the others) or "
        "diverged. Solid, ending in a square: early-stopped (stopped improving; complete, "
        "scored by its best evaluation)."
    )
    if y_range is not None:
        note += (
            f" The y axis is cut at {y_range[1]:.4g} to keep complete trials readable: "
            f"{above} trial(s) run above it, marked ▲ at the top edge "
            "(double-click the plot to see all)."
        )
        _mark_off_scale(figure, trials, curve_steps, curves, styles, y_range[1])
    _layout(figure, title, note, height=520)
    figure.update_xaxes(
        title_text=EXAMPLES_TITLE if by_examples else STEP_TITLE, rangemode="tozero"
    )
    figure.update_yaxes(title_text=LOSS_TITLE, range=y_range)
    return figure


def _mark_off_scale(
    figure: go.Figure,
    trials: list[FrozenTrial],
    steps: dict[int, list[int]],
    curves: dict[int, list[float | None]],
    styles: dict[int, dict[str, Any]],
    ceiling: float,
) -> None:
    """Evaluations above a cut y axis, drawn as ▲ on its top edge so a trial stopped after
    diverging still shows where it was cut short."""
    for trial in trials:
        points = [
            (step, loss)
            for step, loss in zip(steps[trial.number], curves[trial.number], strict=True)
            if loss is not None and loss > ceiling
        ]
        if not points:
            continue
        figure.add_trace(
            go.Scatter(
                x=[step for step, _ in points],
                y=[ceiling] * len(points),
                mode="markers",
                marker={
                    "symbol": "triangle-up",
                    "size": 13,
                    "color": styles[trial.number]["color"],
                },
                cliponaxis=False,
                showlegend=False,
                legendgroup=f"trial-{trial.number}",
                customdata=[loss for _, loss in points],
                hovertemplate=(
                    f"{_label(trial)}: off the scale<br>step %{{x}}"
                    "<br>validation loss=%{customdata:.4f}<extra></extra>"
                ),
            )
        )


def _searched_params(trials: list[FrozenTrial]) -> list[str]:
    return sorted(
        {
            name
            for trial in trials
            for name, distribution in trial.distributions.items()
            if not distribution.single()
        }
    )


def _relabel_params(labels: list[str], names: list[str]) -> list[str]:
    """Optuna's labels are parameter names, long ones cut to "per_device_train_..."."""
    titles = []
    for text in labels:
        stem = text.removesuffix("...")
        name = next((n for n in names if n == text or n.startswith(stem)), None)
        titles.append(param_title(name) if name and stem else text)
    return titles


def _parallel_coordinates_figure(study: optuna.Study) -> go.Figure:
    """Optuna's parallel-coordinates plot, with sweeper's axis titles and note."""
    metric = objective_metric(study)
    title = f"Parallel coordinates: searched hyperparameters and {metric} of complete trials"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return _note_figure(title, "No trial has completed yet.")
    searched = _searched_params(complete)
    figure = optuna.visualization.plot_parallel_coordinate(
        study, params=searched or None, target_name=metric_title(metric)
    )
    # Optuna 5 draws the axes as x-axis ticks; name them as the rest of the report does.
    ticks = list(figure.layout.xaxis.ticktext or ())
    figure.update_xaxes(ticktext=_relabel_params(ticks, searched))
    _layout(
        figure,
        title,
        "One line per complete trial, coloured by the objective. Log-scale parameters have "
        "log axes.",
        height=480,
    )
    figure.update_layout(margin={"l": 90, "r": 60, "t": figure.layout.margin.t + 50, "b": 40})
    return figure


def _importance_figure(study: optuna.Study) -> go.Figure:
    """Optuna's hyperparameter-importance plot (fANOVA), or a note saying why there is none."""
    metric = objective_metric(study)
    title = f"Hyperparameter importance for {metric}"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return _note_figure(
            title,
            f"Importance needs at least 2 complete trials; this study has {len(complete)}.",
        )
    if len({t.value for t in complete}) < 2:
        return _note_figure(
            title,
            f"All {len(complete)} complete trials scored {format_value(complete[0].value)}: "
            "there is no difference for a hyperparameter to explain.",
        )
    try:
        figure = optuna.visualization.plot_param_importances(
            study,
            evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
            # No params: Optuna ranks the search space every complete trial shares.
            target_name=metric,
        )
    except (ValueError, RuntimeError) as exc:
        return _note_figure(title, f"Importance could not be computed: {exc}")
    bars = [trace for trace in figure.data if isinstance(trace, go.Bar)]
    if not bars or not any(float(x) > 0 for x in bars[0].x):
        return _note_figure(
            title,
            "No hyperparameter searched in every complete trial explains the objective's spread.",
        )
    bars[0].y = _relabel_params(list(bars[0].y), _searched_params(complete))
    seed = seed_importance(study)
    seed_note = (
        f" The seed explains {seed[0]:.0%}: the sweep's noise floor, what no hyperparameter "
        "below it can be told apart from."
        if seed is not None
        else ""
    )
    _layout(
        figure,
        title,
        f"fANOVA over {len(complete)} complete trials; importances sum to 1. "
        "Few trials make these rough." + seed_note,
        height=max(300, 90 + 55 * len(bars[0].y)),
    )
    figure.update_xaxes(title_text="importance (share of objective variance, 0–1)")
    figure.update_yaxes(title_text="hyperparameter", automargin=True)
    figure.update_layout(showlegend=False)
    return figure


def _overfitting_panel(
    figure: go.Figure, trial: FrozenTrial, row: int, col: int, show_legend: bool
) -> None:
    """One trial's training and validation loss, with a star at the evaluation it kept."""
    rows = history(trial)
    steps = [int(r["step"]) for r in rows]
    for key, name, color in (
        ("training_loss", "training loss", "#1f77b4"),
        ("validation_loss", "validation loss", "#ff7f0e"),
    ):
        figure.add_trace(
            go.Scatter(
                x=steps,
                y=[_finite(r.get(key)) for r in rows],
                mode="lines+markers",
                marker={"size": 4},
                line={"color": color, "width": 2},
                name=name,
                legendgroup=key,
                showlegend=show_legend,
                hovertemplate=f"{name}=%{{y:.4f}} at step %{{x}}<extra>{_label(trial)}</extra>",
            ),
            row=row,
            col=col,
        )
    kept = kept_evaluation(trial)
    if kept is not None:
        figure.add_trace(
            go.Scatter(
                x=[kept["step"]],
                y=[_finite(kept.get("validation_loss"))],
                mode="markers",
                marker={"symbol": "star", "size": 15, "color": "#2ca02c"},
                name="best step (kept checkpoint)",
                legendgroup="best",
                showlegend=show_legend,
                hovertemplate="best step %{x}<extra>" + _label(trial) + "</extra>",
            ),
            row=row,
            col=col,
        )
        figure.add_vline(
            x=kept["step"], line={"color": "#2ca02c", "dash": "dot", "width": 1}, row=row, col=col
        )
    figure.update_xaxes(title_text="step (updates)", row=row, col=col)
    figure.update_yaxes(title_text="loss (nats)", row=row, col=col)


def _overfitting_figure(study: optuna.Study) -> go.Figure:
    title = "Overfitting check: training vs validation loss of each finished trial"
    finished = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if history(t)
    ]
    if not finished:
        return _note_figure(title, "No trial has finished yet.")
    rows = math.ceil(len(finished) / PANEL_COLUMNS)
    height = 150 + rows * PANEL_HEIGHT_PX
    titles = []
    for trial in finished:
        state = "complete" if trial.state == TrialState.COMPLETE else "pruned"
        if trial.state == TrialState.COMPLETE and early_stopped_at(trial) is not None:
            state = f"early-stopped at step {early_stopped_at(trial)}"
        titles.append(f"{_label(trial)}: {state}, best step {trial.user_attrs.get(BEST_STEP_ATTR)}")
    figure = make_subplots(
        rows=rows,
        cols=PANEL_COLUMNS,
        subplot_titles=titles,
        horizontal_spacing=0.08,
        vertical_spacing=min(0.3, 110 / height),
    )
    for index, trial in enumerate(finished):
        row, col = divmod(index, PANEL_COLUMNS)
        _overfitting_panel(figure, trial, row + 1, col + 1, show_legend=index == 0)
    _layout(
        figure,
        title,
        "A validation loss that rises while training loss keeps falling is overfitting; "
        "the star marks the evaluation each trial kept.",
        height=height,
    )
    figure.update_layout(
        # Below the panels: above them it would cover the top row's titles.
        legend={
            "title": {"text": ""},
            "orientation": "h",
            "yref": "container",
            "y": 0.0,
            "yanchor": "bottom",
            "x": 0.0,
            "xanchor": "left",
        },
        margin={"t": figure.layout.margin.t + 40, "b": 110},
    )
    figure.update_annotations(font={"size": 12})
    return figure


def seed_importance(study: optuna.Study) -> tuple[float, int] | None:
    """The seed's share of the objective's variance (fANOVA over the sweep's complete
    trials, with every hyperparameter they share, the seed among them) and the number of
    trials: the sweep's noise floor. None when the seed is not searched or there are too
    few trials to tell."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2 or len({t.value for t in complete}) < 2:
        return None
    if not all("seed" in t.params for t in complete):
        return None
    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    except (ValueError, RuntimeError):
        return None
    if "seed" not in importances:
        return None
    return float(importances["seed"]), len(complete)


def _confirmation_figure(study: optuna.Study, confirmation: Confirmation) -> go.Figure:
    """Each confirmed configuration's seeds (dots), their mean ± std (a bar with whiskers),
    and the single-seed value the sweep selected it by (an open diamond), baselines beside."""
    metric = confirmation.metric
    title = f"Confirmation: {metric} of each configuration over {len(confirmation.seeds)} seeds"
    figure = go.Figure()
    baseline_index = 0
    for config in confirmation.configs:
        winner = config.id == confirmation.winner
        label = f"{config.id}: {config.name}" + (" (winner)" if winner else "")
        if config.role == "baseline":
            color = BASELINE_COLORS[baseline_index % len(BASELINE_COLORS)]
            baseline_index += 1
        else:
            color = BEST_COLOR if winner else TRIAL_COLORS[0]
        figure.add_trace(
            go.Scatter(
                x=[label] * len(config.runs),
                y=[_finite(run.objective) for run in config.runs],
                mode="markers",
                marker={"color": color, "size": 9, "opacity": 0.7},
                name=f"{label}: each seed",
                text=[f"seed {run.seed}, trial #{run.trial}" for run in config.runs],
                hovertemplate=f"{metric}=%{{y:.4f}}<br>%{{text}}<extra></extra>",
            )
        )
        figure.add_trace(
            go.Scatter(
                x=[label],
                y=[config.objective.mean],
                error_y={"type": "data", "array": [config.objective.std or 0.0], "width": 10},
                mode="markers",
                marker={"color": color, "size": 16, "symbol": "line-ew-open", "line": {"width": 3}},
                name=f"{label}: mean ± std",
                hovertemplate=f"mean {metric}=%{{y:.4f}}<extra>{html.escape(label)}</extra>",
            )
        )
        if config.selected_value is not None:
            figure.add_trace(
                go.Scatter(
                    x=[label],
                    y=[_finite(config.selected_value)],
                    mode="markers",
                    marker={"color": color, "size": 12, "symbol": "diamond-open"},
                    name=f"{label}: sweep (1 seed)",
                    hovertemplate=f"selected by the sweep: {metric}=%{{y:.4f}}<extra></extra>",
                )
            )
    _layout(
        figure,
        title,
        "Dots: one re-run each, validation at its kept evaluation; bar: mean ± std over seeds; "
        "open diamond: the single-seed value that selected the configuration in the sweep "
        "(the gap to the mean is the selection's optimism).",
    )
    figure.update_xaxes(title_text="configuration (c = sweep candidate)")
    figure.update_yaxes(title_text=metric_title(metric))
    figure.update_layout(legend={"title": {"text": ""}})
    return figure


def _searched_methods(study: optuna.Study) -> list[str]:
    """The fine-tuning methods a study searched (``model.method: {choices: [...]}``), in
    its order; [] when every trial has one method (or the study has no stored config)."""
    try:
        config = stored_config(study.study_name, study.user_attrs)
    except ConfigError:
        return []
    spec = config.space.specs().get("method")
    return config.space.methods() if spec is not None and is_searched(spec) else []


def _methods_figure(study: optuna.Study, methods: list[str]) -> go.Figure:
    """The objective of each method's complete trials side by side, one box each: the
    methods were sampled in one study, evaluated and pruned on one grid."""
    metric = objective_metric(study)
    title = f"Fine-tuning methods: {metric} of each complete trial"
    config = stored_config(study.study_name, study.user_attrs)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return _note_figure(title, "No trial has completed yet.")
    figure = go.Figure()
    for index, method in enumerate(methods):
        group = [t for t in complete if config.space.method_of(t.params) == method]
        trainable = sorted(
            {n for t in group if isinstance(n := t.user_attrs.get(TRAINABLE_PARAMETERS_ATTR), int)}
        )
        counted = f", {trainable[-1]:,} trainable parameters" if len(trainable) == 1 else ""
        figure.add_trace(
            go.Box(
                x=[f"{method} ({len(group)} complete{counted})"] * len(group),
                y=[_finite(t.value) for t in group],
                name=method,
                boxpoints="all",
                jitter=0.3,
                pointpos=0,
                marker={"color": TRIAL_COLORS[index % len(TRIAL_COLORS)], "size": 9},
                text=[_label(t) for t in group],
                customdata=[_params_text(t) for t in group],
                hovertemplate=f"%{{text}}<br>{metric}=%{{y:.4f}}<br>%{{customdata}}<extra></extra>",
            )
        )
    _layout(
        figure,
        title,
        "One box per method, a dot per complete trial (pruned trials are left out). Both "
        "methods' trials were evaluated on the same grid and ranked on one objective.",
    )
    figure.update_xaxes(title_text="fine-tuning method (trials, trainable parameters)")
    figure.update_yaxes(title_text=metric_title(metric))
    figure.update_layout(legend={"title": {"text": "method"}})
    return figure


def figures(study: optuna.Study) -> dict[str, go.Figure]:
    """Every figure of the report, keyed by the id of its place in the page (the
    methods' only when the study searched ``model.method``, the confirmation's only when
    ``sweeper confirm`` has run)."""
    built = {
        "history": _history_figure(study),
        "loss-curves": loss_curves_figure(study),
        "parallel-coordinates": _parallel_coordinates_figure(study),
        "importance": _importance_figure(study),
        "overfitting": _overfitting_figure(study),
    }
    methods = _searched_methods(study)
    if methods:
        built["methods"] = _methods_figure(study, methods)
    confirmation = load_confirmation(study)
    if confirmation is not None:
        built["confirmation"] = _confirmation_figure(study, confirmation)
    return built
