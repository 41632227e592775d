"""The study report: one HTML file that opens offline and says how the sweep went.

:func:`write_report` is the entry point; the numbers come from :mod:`sweeper.records.results` and
the figures from :mod:`sweeper.views.figures`.
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
import plotly.io as pio
from optuna.trial import FrozenTrial, TrialState
from plotly.offline import get_plotlyjs

from sweeper.attributes import (
    BEST_STEP_ATTR,
    CHECKPOINT_BYTES_ATTR,
    CHECKPOINT_STORE_ERROR_ATTR,
    FAILURE_ATTR,
    RESUME_FALLBACK_ATTR,
    RETRIED_FROM_SYSTEM_ATTR,
    SAVE_SECONDS_ATTR,
    STOP_REASON_ATTR,
    TOTAL_PARAMETERS_ATTR,
    TRACEBACK_ATTR,
    TRAIN_SECONDS_ATTR,
    TRAINABLE_PARAMETERS_ATTR,
    WORKER_ATTR,
)
from sweeper.records.confirmation import (
    ConfirmedConfig,
    companion_name,
    load_confirmation,
    spread_text,
)
from sweeper.records.results import (
    StudySummary,
    early_stopped_at,
    enqueued_as,
    format_duration,
    format_value,
    kept_evaluation,
    stopped_comparisons,
    summarize,
)
from sweeper.settings.hyperparameters import param_title
from sweeper.settings.metrics import METRICS
from sweeper.views.card import trainable_text
from sweeper.views.figures import figures, seed_importance

CAPTIONS = {
    "history": "Each dot is a complete trial's best evaluation; the line is the best so far.",
    "loss-curves": "Every evaluation of every trial. The pruner compares trials at the same grid "
    "point (the same training examples under evaluation.strategy examples or epoch, the same "
    "step under steps).",
    "parallel-coordinates": "Which combinations of hyperparameters led to the better runs.",
    "importance": "How much of the objective's variation each hyperparameter explains.",
    "overfitting": "Per trial: training loss (blue) and validation loss (orange).",
    "confirmation": "The confirmed configurations' seeds beside the baselines': how far apart "
    "they are, and how much the sweep's single-seed value flattered each.",
    "methods": "The fine-tuning methods the study searched, side by side: each complete "
    "trial's objective, by method.",
}
# Byte counts as the report shows them (decimal units, as disks and the Hub count).
BYTE_UNITS = ("B", "kB", "MB", "GB", "TB")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222;
       background: #f6f7f9; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 19px; margin: 28px 0 10px; }
.meta { color: #555; margin: 0 0 18px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid #dde1e6; border-radius: 8px; padding: 12px 16px; }
.card .label { color: #666; font-size: 13px; }
.card .value { font-size: 22px; font-weight: 600; margin-top: 4px; }
.card .detail { color: #666; font-size: 12px; margin-top: 2px; }
table { border-collapse: collapse; background: #fff; font-size: 14px; }
th, td { border: 1px solid #dde1e6; padding: 6px 10px; text-align: left; vertical-align: top; }
th { background: #eef1f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #f3fbf3; font-weight: 600; }
figure { background: #fff; border: 1px solid #dde1e6; border-radius: 8px; margin: 18px 0;
         padding: 8px; }
figcaption { color: #555; font-size: 13px; padding: 4px 12px 8px; }
.note { color: #8a5a00; }
"""


def _cell(value: Any, numeric: bool = False) -> str:
    css = ' class="num"' if numeric else ""
    return f"<td{css}>{html.escape(format_value(value))}</td>"


def _card(label: str, value: str, detail: str = "") -> str:
    return (
        f'<div class="card"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(value)}</div>'
        f'<div class="detail">{html.escape(detail)}</div></div>'
    )


def bytes_text(value: Any) -> str | None:
    """``12.9 MB``: three significant digits in decimal units; None for no count."""
    if not isinstance(value, int) or value < 0:
        return None
    size, unit = float(value), BYTE_UNITS[0]
    for unit in BYTE_UNITS:
        if size < 1000 or unit == BYTE_UNITS[-1]:
            break
        size /= 1000
    return f"{value} B" if unit == "B" else f"{size:.3g} {unit}"


def _cost_cells(trial: FrozenTrial) -> list[str]:
    """A trial's trainable parameters (of all) and its kept checkpoint's size (exact bytes
    on hover): what a LoRA trial saves over a full fine-tune."""
    attrs = trial.user_attrs
    size = attrs.get(CHECKPOINT_BYTES_ATTR)
    shown = bytes_text(size)
    title = f' title="{size:,} bytes"' if shown is not None else ""
    return [
        _cell(
            trainable_text(attrs.get(TRAINABLE_PARAMETERS_ATTR), attrs.get(TOTAL_PARAMETERS_ATTR)),
            numeric=True,
        ),
        f'<td class="num"{title}>{html.escape(shown or format_value(None))}</td>',
    ]


def _comparison_table(summary: StudySummary) -> str:
    """The best trial beside the baselines, at the evaluation each one kept."""
    rows: list[tuple[str, FrozenTrial]] = []
    if summary.best is not None:
        rows.append(("best", summary.best))
    rows += [
        (str(enqueued_as(t)), t)
        for t in summary.enqueued()
        if summary.best is None or t.number != summary.best.number
    ]
    if summary.best is not None and (role := enqueued_as(summary.best)) is not None:
        rows[0] = (f"best ({role})", summary.best)
    if not rows:
        return '<p class="note">No trial has completed and the study has no baselines.</p>'
    # With LoRA trials, a method column (every trial's, sampled or the study's one).
    lora = "lora" in summary.config.space.methods()
    param_names = sorted({name for _, trial in rows for name in trial.params} - {"method"})
    # The objective, then every other metric the kept evaluation has, then what it cost.
    others = [m for m in METRICS if m.name != summary.metric]
    header = ["", "trial", "state", summary.metric, "best step", *(m.prose for m in others)]
    header += [*(["method"] if lora else []), "trainable parameters", "kept checkpoint"]
    lines = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)]
    lines[0] += "".join(f"<th>{html.escape(param_title(p))}</th>" for p in param_names)
    lines[0] += "</tr>"
    for role, trial in rows:
        kept = kept_evaluation(trial) or {}
        state = trial.state.name.lower()
        if trial.state == TrialState.PRUNED:
            state = str(trial.user_attrs.get(STOP_REASON_ATTR) or "pruned")
        elif early_stopped_at(trial) is not None:
            state = f"complete, early-stopped at step {early_stopped_at(trial)}"
        css = ' class="best"' if role.startswith("best") else ""
        cells = [
            f"<td>{html.escape(role)}</td>",
            _cell(f"#{trial.number}"),
            _cell(state),
            _cell(trial.value if trial.state == TrialState.COMPLETE else None, numeric=True),
            _cell(trial.user_attrs.get(BEST_STEP_ATTR), numeric=True),
            *[_cell(kept.get(m.name), numeric=True) for m in others],
            *([_cell(summary.config.space.method_of(trial.params))] if lora else []),
            *_cost_cells(trial),
            *[_cell(trial.params.get(p), numeric=True) for p in param_names],
        ]
        lines.append(f"<tr{css}>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _median(values: Iterable[Any]) -> float | None:
    """The median of the numbers among ``values`` (an attribute a trial may lack)."""
    numbers = [float(v) for v in values if isinstance(v, (int, float))]
    return statistics.median(numbers) if numbers else None


def _method_row(method: str, trials: list[FrozenTrial], summary: StudySummary) -> str:
    """One method's trials: how many ended how, its best, and what a trial of it cost."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    maximize = summary.direction == "maximize"
    best = (max if maximize else min)(complete, key=lambda t: float(t.value or 0.0), default=None)
    states = [
        f"{sum(1 for t in trials if t.state == state)} {name}"
        for state, name in (
            (TrialState.COMPLETE, "complete"),
            (TrialState.PRUNED, "pruned"),
            (TrialState.FAIL, "failed"),
        )
    ]
    size = _median(t.user_attrs.get(CHECKPOINT_BYTES_ATTR) for t in trials)
    saves = _median(s for t in trials for s in t.user_attrs.get(SAVE_SECONDS_ATTR) or [])
    train = _median(t.user_attrs.get(TRAIN_SECONDS_ATTR) for t in trials)
    cells = [
        _cell(method),
        _cell(", ".join(states)),
        _cell(best.value if best is not None else None, numeric=True),
        _cell(f"#{best.number}" if best is not None else None),
        _cell(
            trainable_text(
                best.user_attrs.get(TRAINABLE_PARAMETERS_ATTR),
                best.user_attrs.get(TOTAL_PARAMETERS_ATTR),
            )
            if best is not None
            else None,
            numeric=True,
        ),
        _cell(bytes_text(int(size)) if size is not None else None, numeric=True),
        _cell(format_duration(train) if train is not None else None, numeric=True),
        _cell(f"{saves:.3g} s" if saves is not None else None, numeric=True),
    ]
    css = (
        ' class="best"'
        if best is not None and best.number == getattr(summary.best, "number", None)
        else ""
    )
    return f"<tr{css}>" + "".join(cells) + "</tr>"


def _methods_pruned(pruner_type: str) -> str:
    """How the study's pruner treated the two methods (sweeper.runtime.worker_reads)."""
    if pruner_type == "none":
        return "no pruner ran"
    if pruner_type in ("successive_halving", "hyperband"):
        return f"the pruner ({pruner_type}) compared every trial, of either method"
    return (
        f"the pruner ({pruner_type}) ranked each trial among its own method's (a LoRA trial "
        "starts slower than a full fine-tune)"
    )


def _methods_html(study: optuna.Study, summary: StudySummary) -> str:
    """With model.method searched: the methods side by side (trials, best, costs)."""
    methods = summary.config.space.methods()
    if len(methods) < 2:
        return ""
    trials = study.get_trials(deepcopy=False)
    header = [
        "method",
        "trials",
        f"best {summary.metric}",
        "best trial",
        "trainable parameters (best trial)",
        "kept checkpoint (median)",
        "training time (median)",
        "checkpoint save (median)",
    ]
    lines = [
        "<h2>Fine-tuning methods</h2>",
        f"<p>The study searched model.method: every trial's method was sampled, and all were "
        f"evaluated on one grid ({html.escape(_grid_text(summary))}) and ranked on one "
        f"objective; {_methods_pruned(summary.config.pruner.type)}.</p>",
        "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>",
    ]
    for method in methods:
        group = [t for t in trials if summary.config.space.method_of(t.params) == method]
        lines.append(_method_row(method, group, summary))
    lines.append("</table>")
    return "\n".join(lines)


def _grid_text(summary: StudySummary) -> str:
    evaluation = summary.config.evaluation
    if evaluation.strategy == "examples":
        return f"an evaluation every {evaluation.examples} training examples"
    if evaluation.strategy == "epoch":
        return "an evaluation every epoch"
    return f"an evaluation every {evaluation.steps} steps"


def _summary_html(study: optuna.Study, summary: StudySummary) -> str:
    counts = summary.counts
    total = sum(counts.values())
    best = summary.best
    arrow = "lower" if summary.direction == "minimize" else "higher"
    if best is not None:
        best_value = format_value(best.value)
        best_detail = (
            f"trial #{best.number}, step {best.user_attrs.get(BEST_STEP_ATTR)} ({arrow} is better)"
        )
    else:
        best_value, best_detail = "–", "no trial has completed yet"
    full_cost = summary.train_seconds + summary.saved_seconds
    share = f"{100 * summary.saved_seconds / full_cost:.0f}% of " if full_cost else ""
    early = f" ({summary.early_stopped} early-stopped)" if summary.early_stopped else ""
    saved_examples = (
        f"{summary.saved_examples:,} of {summary.planned_examples_stopped:,} planned training "
        "examples"
        if summary.planned_examples_stopped
        else format_duration(summary.saved_seconds)
    )
    cards = [
        _card(
            "trials",
            f"{counts['complete']} complete{early}",
            f"{counts['pruned']} pruned, {counts['failed']} failed, {counts['running']} running"
            + (f", {counts['waiting']} waiting" if counts["waiting"] else "")
            + f" ({total} in all)",
        ),
        _card(f"best {summary.metric}", best_value, best_detail),
        _card(
            "training time",
            format_duration(summary.train_seconds),
            f"summed over trials, plus {format_duration(summary.eval_seconds)} evaluating",
        ),
        _card(
            "training saved by pruning",
            saved_examples,
            f"{format_duration(summary.saved_seconds)}, {summary.saved_steps} of "
            f"{summary.planned_steps_stopped} planned steps not run by {summary.saved_trials} "
            f"pruned trial(s); {share}the full runs' training time",
        ),
    ]
    parts = ['<div class="cards">', *cards, "</div>", _stopped_html(study, summary)]
    enqueued = "baselines and warm start" if summary.warm_started else "baselines"
    if best is not None:
        parts.append(f"<h2>Best trial, {enqueued}</h2>")
    else:
        parts.append(f"<h2>{enqueued.capitalize()}</h2>")
    parts.append(_comparison_table(summary))
    methods = _methods_html(study, summary)
    if methods:  # a study of one method: its report as before
        parts.append(methods)
    parts.append(_warm_start_html(summary))
    return "\n".join(parts)


def _warm_start_html(summary: StudySummary) -> str:
    """The earlier studies this one started from: what differed, what was enqueued, and
    every line said when it was created."""
    record = summary.warm_start
    if not record:
        return ""
    lines = [
        "<h2>Warm start</h2>",
        "<table><tr><th>source</th><th>trials</th><th>what differed</th></tr>",
    ]
    for source in record.get("sources", []):
        name = source["study"] + (f" ({source['storage']})" if source.get("storage") else "")
        trials = ", ".join(f"{n} {state.lower()}" for state, n in source.get("trials", {}).items())
        differs = "; ".join(source.get("differs") or []) or "the same task"
        lines.append(f"<tr>{_cell(name)}{_cell(trials)}{_cell(differs)}</tr>")
    lines.append("</table><ul>")
    lines += [f'<li class="note">{html.escape(note)}</li>' for note in record.get("notes", [])]
    lines.append("</ul>")
    return "\n".join(lines)


def _stopped_html(study: optuna.Study, summary: StudySummary) -> str:
    """Each pruned trial beside the winner at the grid point where it was stopped: what the
    pruner saw when it stopped it."""
    compared = stopped_comparisons(study)
    if not compared or summary.best is None:
        return ""
    items = "".join(
        f"<li>{html.escape(c.text(summary.metric, summary.best.number))}</li>" for c in compared
    )
    return (
        f'<p class="meta">Where the pruner stopped each trial:</p><ul class="stopped">{items}</ul>'
    )


def _seed_share_html(study: optuna.Study) -> str:
    share = seed_importance(study)
    if share is None:
        return (
            "<p class=\"note\">The seed's share of the objective's variance is unknown (the seed "
            "is not searched, or too few complete trials).</p>"
        )
    return (
        f"<p>The seed explains <b>{share[0]:.0%}</b> of the objective's variance across the "
        f"sweep's {share[1]} complete trials (fANOVA importance, beside the hyperparameters' in "
        "the importance figure): the sweep's noise floor.</p>"
    )


def _confirmation_row(config: ConfirmedConfig, winner: bool) -> str:
    """One confirmed configuration's table row: its scores over seeds, the winner's marked."""
    cells = [
        f"<td>{html.escape(config.id + (' (winner)' if winner else ''))}</td>",
        _cell(config.name),
        _cell(config.selected_value, numeric=True),
        *(
            f'<td class="num">{html.escape(spread_text(value))}</td>'
            for value in (
                config.objective,
                config.accuracy,
                config.test_accuracy,
                config.test_f1,
                config.test_loss,
            )
        ),
        _cell(config.optimism, numeric=True),
    ]
    row = '<tr class="best">' if winner else "<tr>"
    return row + "".join(cells) + "</tr>"


def _confirmation_html(study: optuna.Study) -> str:
    """The confirmed configurations over seeds, the verdicts, or a note that there are none."""
    confirmation = load_confirmation(study)
    seed_share = _seed_share_html(study)
    if confirmation is None:
        return (
            '<h2>Confirmation</h2><p class="note">Not confirmed: every number above is a '
            "single-seed validation score, and the best trial was selected on it. "
            f"<code>sweeper confirm {html.escape(study.study_name)}</code> re-trains the best "
            "configurations and the baselines with fresh seeds.</p>" + seed_share
        )
    metric = confirmation.metric
    header = [
        "config",
        "name",
        f"selected {metric} (validation, 1 seed)",
        f"{metric} (validation, mean ± std)",
        "accuracy (validation)",
        "accuracy (test)",
        "F1 (test)",
        "loss (test)",
        "optimism",
    ]
    lines = [
        "<h2>Confirmation</h2>",
        f"<p>The {len(confirmation.configs)} configurations below were re-trained with "
        f"{len(confirmation.seeds)} fresh seeds ({', '.join(map(str, confirmation.seeds))}) in "
        f"study <code>{html.escape(companion_name(study.study_name))}</code>; the best, "
        "report and card use the confirmed winner. Validation is each run's kept evaluation; "
        "test is the test split, from the same checkpoint.</p>",
        "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>",
    ]
    for config in confirmation.configs:
        lines.append(_confirmation_row(config, config.id == confirmation.winner))
    lines.append("</table><ul>")
    for comparison in confirmation.comparisons:
        lines.append(
            f"<li>{html.escape(comparison.text(confirmation.winner))}: "
            f"<b>{html.escape(comparison.verdict)}</b></li>"
        )
    lines += [f'<li class="note">{html.escape(note)}</li>' for note in confirmation.notes]
    lines.append("</ul>")
    lines.append(seed_share)
    return "\n".join(lines)


def _failures_html(study: optuna.Study) -> str:
    """Failed trials with their stored reason (and the last frames of a raised one)."""
    trials = study.get_trials(deepcopy=False)
    failed = [trial for trial in trials if trial.state == TrialState.FAIL]
    if not failed:
        return ""
    retried_as = {
        trial.system_attrs[RETRIED_FROM_SYSTEM_ATTR]: trial.number
        for trial in trials
        if trial.system_attrs.get(RETRIED_FROM_SYSTEM_ATTR) is not None
    }
    header = "".join(f"<th>{h}</th>" for h in ("trial", "reason", "worker", "retried as"))
    lines = ["<h2>Failed trials</h2>", f"<table><tr>{header}</tr>"]
    for trial in failed:
        reason = html.escape(
            str(trial.user_attrs.get(FAILURE_ATTR) or "no reason stored (its worker died)")
        )
        frames = trial.user_attrs.get(TRACEBACK_ATTR)
        if frames:
            reason += (
                f"<details><summary>traceback</summary><pre>{html.escape(frames)}</pre></details>"
            )
        retry = retried_as.get(trial.number)
        lines.append(
            f"<tr>{_cell(f'#{trial.number}')}<td>{reason}</td>{_cell(trial.user_attrs.get(WORKER_ATTR))}"
            f"{_cell(f'#{retry}' if retry is not None else 'not retried')}</tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


def _store_html(study: optuna.Study) -> str:
    """Trials the checkpoint store failed (no longer resumable from it) or whose resume
    passed over a stored checkpoint (missing or corrupt files)."""
    rows = [
        (trial, key, trial.user_attrs[key])
        for trial in study.get_trials(deepcopy=False)
        for key in (CHECKPOINT_STORE_ERROR_ATTR, RESUME_FALLBACK_ATTR)
        if trial.user_attrs.get(key)
    ]
    if not rows:
        return ""
    header = "".join(f"<th>{h}</th>" for h in ("trial", "what", "detail"))
    lines = ["<h2>Checkpoint store</h2>", f"<table><tr>{header}</tr>"]
    for trial, key, detail in rows:
        what = "not resumable from the store" if key == CHECKPOINT_STORE_ERROR_ATTR else "resume"
        lines.append(f"<tr>{_cell(f'#{trial.number}')}{_cell(what)}{_cell(detail)}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def short_location(value: str) -> str:
    """A model's or data set's name as the header shows it: a hub id (``org/name``) or a
    ``package:`` path whole; a local path by its last two parts, so that two models saved
    as ``.../minilm/model`` and ``.../distilbert/model`` are told apart."""
    if not value.startswith(("/", "./", "../", "~")):
        return value
    parts = Path(value).parts
    return "/".join(parts[-2:]) if len(parts) > 2 else value


def _setup_line(summary: StudySummary) -> str:
    config = summary.config
    model, dataset = short_location(config.model.name), short_location(config.dataset.path)
    pruner, sampler = config.pruner.type, config.sampler.type
    return (
        f"model {model} · data {dataset} · "
        f"objective: {summary.direction} {summary.metric} · pruner {pruner} · sampler {sampler}"
    )


def _figure_html(key: str, figure: go.Figure) -> str:
    div = pio.to_html(
        figure,
        full_html=False,
        include_plotlyjs=False,
        div_id=f"fig-{key}",
        config={"displaylogo": False, "responsive": True},
        default_height=f"{figure.layout.height or 460}px",
    )
    caption = html.escape(CAPTIONS.get(key, ""))
    return f'<figure id="figure-{key}">{div}<figcaption>{caption}</figcaption></figure>'


def render_report(study: optuna.Study) -> str:
    summary = summarize(study)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body: Iterable[str] = (_figure_html(key, fig) for key, fig in figures(study).items())
    title = f"Study {summary.name}: sweep report"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{STYLE}</style>",
            # Inlined so the report opens offline and never depends on a CDN.
            f'<script type="text/javascript">{get_plotlyjs()}</script>',
            "</head><body><main>",
            f"<h1>{html.escape(title)}</h1>",
            f'<p class="meta">{html.escape(_setup_line(summary))} · generated {generated}</p>',
            _summary_html(study, summary),
            _confirmation_html(study),
            _failures_html(study),
            _store_html(study),
            "<h2>Figures</h2>",
            *body,
            "</main></body></html>",
        ]
    )


def write_report(study: optuna.Study, path: Path) -> Path:
    """Write the study's HTML report to ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(study), encoding="utf-8")
    return path
