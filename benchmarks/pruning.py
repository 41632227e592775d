"""The price of pruning, measured: what each pruning strategy saves in training, and what it
costs in quality.

``python -m benchmarks pruning`` (part of ``make bench``; ``--quick`` for a smoke run) fine-
tunes the real pretrained MiniLM on ``data/imdb-3k.csv.gz`` with the default study's search
(``studies/imdb.yaml``: its search space, TPE sampler and seed, without its baselines), every
trial evaluated on the common grid of training examples (``evaluation.strategy: examples``),
so training is counted in examples, never in steps (a step's worth differs with the batch
size). Stages, each written to the JSON as soon as it is done:

1. **unpruned**: the search with no pruner and no early stopping; every trial's whole
   validation curve is stored (its ``history``).
2. **confirm unpruned**: the unpruned winner re-trained with fresh seeds (``sweeper
   confirm``'s own ``run_confirmation``, top 1): its confirmed quality, and the seed noise
   (the standard deviation of the objective over seeds).
3. **replay**: the stored curves replayed through each strategy (``benchmarks.replay``):
   none, the default rules (the default study's pruner and early stopping), each of those
   alone, successive halving and hyperband, each with Optuna's real pruner. Exact, with no
   more training: the examples each would have spent, whether it stopped the eventual
   winner, and the examples it had spent when it first held a trial within the seed noise of
   the unpruned best.
4. **default, live**: the same search (same sampler seed, same trial budget) run for real
   under the default rules: the sampler sees pruned trials as pruned, so the trials differ.
5. **confirm default**: its winner re-trained with the same number of fresh seeds.

Target (issue "The price of pruning, measured"): the default strategy reaches the unpruned
study's confirmed quality (confirmed mean within the seed noise of it) with at most 0.5x its
training examples. Results: ``benchmarks/results/latest/pruning.json`` (and ``$OUT/pruning.json``
when ``OUT`` is set); a GPU is used when the Trainer finds one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    MINILM,
    MINILM_PACKAGE,
    REPO_ROOT,
    Results,
    close_staged_run,
    environment,
    report_staged_run,
    size_options,
    spread_text,
    start_model_run,
)
from benchmarks.replay import MIN_COMPLETE

NAME = "pruning"
HELP = (
    "what pruning buys: an unpruned search's curves replayed through none/default/successive "
    "halving/hyperband (training examples spent, winner stopped, examples to a trial within "
    "seed noise), then the default rules live, both winners confirmed over seeds"
)

DEFAULT_STUDY = REPO_ROOT / "studies" / "imdb.yaml"
DEFAULT_DATA = REPO_ROOT / "data" / "imdb-3k.csv.gz"

# Target (a search that stops dead trials by half their plan; 0.5 before it): at least the
# unpruned confirmed quality with at most this share of its training examples, and the checks
# of benchmarks.replay.dead_trial_checks (at least MIN_COMPLETE complete trials, no dead trial
# past half its plan after the start-up trials, the winner never stopped before its best).
TARGET_RATIO = 0.4

# Sizes. FULL is sized for about an hour on a 2-core CPU (README, "pruning", says how it
# was estimated): the default study's 10 trials of 1-3 epochs, on 384 training reviews
# evaluated every 96 examples (4 evaluations an epoch, as the study's 640 every 160), 128
# validation reviews, 64 tokens; each winner confirmed over `sweeper confirm`'s 3 seeds.
FULL: dict[str, Any] = {
    "trials": 10,
    "max_epochs": 3,
    "train_rows": 384,
    "validation_rows": 128,
    "max_length": 64,
    "eval_examples": 96,
    "seeds": 3,
}
QUICK: dict[str, Any] = {
    "trials": 3,
    "max_epochs": 1,
    "train_rows": 128,
    "validation_rows": 32,
    "max_length": 32,
    "eval_examples": 64,
    "seeds": 2,
}


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """The task's model, data and study file (this benchmark's and the peers benchmark's)."""
    parser.add_argument(
        "--model",
        default=MINILM,
        help="the pretrained MiniLM: a model directory (an fp16 copy is widened to fp32) or "
        "package:... (default %(default)s)",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="IMDb-style CSV")
    parser.add_argument(
        "--study",
        type=Path,
        default=DEFAULT_STUDY,
        help="the study file whose search, sampler and default rules are measured "
        "(default studies/imdb.yaml)",
    )


# The size options, in the order --help lists them: each one's help, with its full default.
SIZE_HELP = {
    "trials": "default {}",
    "max_epochs": "num_train_epochs searched in 1..this (default {})",
    "train_rows": "default {}",
    "validation_rows": "default {}",
    "max_length": "default {}",
    "eval_examples": "evaluate every this many training examples (evaluation.examples; a "
    "multiple of every batch size searched; default {})",
    "seeds": "seeds per confirmed winner (default {}; 0: no confirmation, and no seed noise)",
}
# The other options, after the sizes.
MODE_OPTIONS: dict[str, dict[str, Any]] = {
    "--replay-from": {
        "type": Path,
        "metavar": "JSON",
        "help": "no training: replay the unpruned curves an earlier run stored in JSON (its "
        "pruning.json) through every strategy, with that run's seed noise, and print the table",
    },
    "--unpruned-from": {
        "type": Path,
        "metavar": "JSON",
        "help": "take stages 1-2 (the unpruned search and its confirmation) from an earlier run "
        "of the same size (its pruning.json) and run the rest: to measure new default rules",
    },
    "--no-live": {
        "action": "store_true",
        "help": "stages 1-3 only: the unpruned search, its confirmation and the replay",
    },
    "--write-fp16-copy": {
        "type": Path,
        "metavar": "DIR",
        "help": "write an fp16 copy of --model to DIR (small enough to carry to a GPU machine) "
        "and exit",
    },
    "--cpu-threads": {
        "type": int,
        "help": "torch's CPU threads (default: torch's own). On a CPU shared with other work, 1 "
        "can be several times faster than 2 (threads spin waiting for a busy core)",
    },
    "--keep": {"action": "store_true", "help": "keep the scratch directory"},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke-test sizes: {QUICK['trials']} trials of {QUICK['max_epochs']} epoch on "
        f"{QUICK['train_rows']} rows at {QUICK['max_length']} tokens, {QUICK['seeds']} seeds "
        "(explicit options still win)",
    )
    add_task_arguments(parser)
    for key, text in SIZE_HELP.items():
        parser.add_argument(
            f"--{key.replace('_', '-')}", type=int, default=None, help=text.format(FULL[key])
        )
    for option, settings in MODE_OPTIONS.items():
        parser.add_argument(option, **settings)


def resolve_sizes(args: argparse.Namespace) -> dict[str, Any]:
    return size_options(args, FULL, QUICK)


# --- the model: an fp16 copy to carry, widened back -----------------------------------------


def write_fp16_copy(model: str, directory: Path) -> Path:
    """An fp16 copy of ``model`` (its tokenizer and config as they are): about half the
    size, so it fits what travels to a GPU machine. The benchmark widens it back to fp32."""
    import torch
    from safetensors.torch import load_file, save_file

    from sweeper.trial.models import resolve_local_path

    source = resolve_local_path(model) or Path(model)
    weights = source / "model.safetensors"
    if not weights.is_file():
        raise SystemExit(f"{source} has no model.safetensors to copy")
    directory.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and item.name != "model.safetensors":
            shutil.copy2(item, directory / item.name)
    tensors = load_file(str(weights))
    halved = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
    save_file(halved, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


# --- the studies ----------------------------------------------------------------------------


def study_config(
    args: argparse.Namespace,
    sizes: dict[str, Any],
    model: str,
    scratch: Path,
    label: str,
    unpruned: bool,
    prefix: str = "pruning",
) -> Any:
    """The default study's search at the benchmark's size, as study ``<prefix>-<label>``.
    ``unpruned``: no pruner and no early stopping; otherwise the study file's own pruner and
    early stopping (the default rules) as they are."""
    from sweeper.settings.study_file import load_study_config

    epochs: Any = 1 if sizes["max_epochs"] == 1 else {"low": 1, "high": int(sizes["max_epochs"])}
    overrides: dict[str, Any] = {
        "name": f"{prefix}-{label}",
        "output_dir": str(scratch / "runs"),
        "storage": f"sqlite:///{(scratch / 'runs' / f'{prefix}.db').resolve()}",
        "dataset.path": str(Path(args.data).resolve()),
        "dataset.max_train_rows": sizes["train_rows"],
        "dataset.max_validation_rows": sizes["validation_rows"],
        # Confirmation scores every seed of the winner on the study's test split, if it has
        # one (imdb carves 20%): as many rows as validation.
        "dataset.max_test_rows": sizes["validation_rows"],
        "model.name": model,
        "model.max_length": sizes["max_length"],
        # Confirmation re-runs every baseline as well; the benchmark measures the search.
        "baselines": [],
        "search_space.num_train_epochs": epochs,
        "evaluation.strategy": "examples",
        "evaluation.examples": sizes["eval_examples"],
        "budget.n_trials": sizes["trials"],
        "budget.timeout_seconds": None,
        "training.report_to": "none",
    }
    if unpruned:
        overrides["pruner"] = {"type": "none"}
        overrides["early_stopping.patience"] = None
        overrides["near_chance.at_fraction"] = None
    return load_study_config(args.study, overrides, notify=lambda message: None)


def default_rules(config: Any) -> dict[str, Any]:
    """The study file's pruner and early stopping, as one line each."""
    rule = getattr(config, "early_stopping", None)
    patience = getattr(rule, "patience", None)
    return {
        "pruner": config.pruner.describe(),
        "pruner_settings": config.pruner.model_dump(mode="json"),
        "early_stopping": (
            None
            if patience is None
            else {"patience": patience, "min_delta": float(getattr(rule, "min_delta", 0.0))}
        ),
        "near_chance": config.near_chance.model_dump(mode="json"),
    }


class TrialLine:
    """An Optuna callback printing one line per finished trial."""

    def __init__(self, label: str, total: int, metric: str, tag: str = NAME):
        self.label, self.total, self.metric, self.tag = label, total, metric, tag
        self.started = time.perf_counter()

    def __call__(self, study: Any, trial: Any) -> None:
        from benchmarks.replay import curves_from_trials

        curves = curves_from_trials([trial], self.metric)
        examples = curves[0].examples if curves else 0
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        note = trial.user_attrs.get("stop_reason") or trial.user_attrs.get("early_stop_note") or ""
        print(
            f"[{self.tag}] {self.label} trial {trial.number + 1}/{self.total}: "
            f"{trial.state.name.lower()}, {self.metric} {value}, {examples} examples, "
            f"{time.perf_counter() - self.started:.0f} s so far{f' ({note})' if note else ''}",
            flush=True,
        )


def live_outcome(trial: Any) -> str:
    """A live trial's end in the replay's terms."""
    if trial.state.name == "PRUNED":
        reason = str(trial.user_attrs.get("stop_reason"))
        if reason.startswith("near chance"):
            return "near_chance"
        return "diverged" if "diverged" in reason else "pruned"
    if trial.state.name == "COMPLETE":
        return "early_stopped" if trial.user_attrs.get("early_stopped_at") else "complete"
    return str(trial.state.name.lower())


def run_search(config: Any, label: str, tag: str = NAME) -> tuple[Any, dict[str, Any]]:
    """Run one study to its budget; its trials, curves and the training they spent."""
    from benchmarks.replay import curves_from_trials
    from sweeper.study.sweep import run_study

    metric = config.objective.metric
    started = time.perf_counter()
    study = run_study(
        config,
        show_progress=False,
        extra_callbacks=[TrialLine(label, int(config.budget.n_trials), metric, tag)],
    )
    wall = time.perf_counter() - started
    trials = study.get_trials(deepcopy=False)
    curves = {curve.trial: curve for curve in curves_from_trials(trials, metric)}
    best = None
    with contextlib.suppress(ValueError):  # no trial completed
        best = study.best_trial
    rows: list[dict[str, Any]] = []
    for trial in trials:
        curve = curves.get(trial.number)
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "outcome": live_outcome(trial),
                "value": trial.value,
                "params": trial.params,
                "examples": curve.examples if curve else 0,
                "planned_steps": trial.user_attrs.get("planned_steps"),
                "examples_per_step": trial.user_attrs.get("examples_per_step"),
                "stop_reason": trial.user_attrs.get("stop_reason"),
                "early_stop_note": trial.user_attrs.get("early_stop_note"),
                "train_seconds": trial.user_attrs.get("train_seconds"),
                "eval_seconds": trial.user_attrs.get("eval_seconds"),
                "curve": [vars(point) for point in curve.points] if curve else [],
            }
        )
    return study, {
        "study": config.name,
        "wall_seconds": round(wall, 2),
        "train_seconds": round(sum(float(r["train_seconds"] or 0) for r in rows), 2),
        "eval_seconds": round(sum(float(r["eval_seconds"] or 0) for r in rows), 2),
        "examples": sum(int(r["examples"]) for r in rows),
        "states": {
            state: sum(1 for r in rows if r["state"] == state)
            for state in sorted({r["state"] for r in rows})
        },
        "best_trial": best.number if best else None,
        "best_value": best.value if best else None,
        "best_params": best.params if best else None,
        "trials": rows,
    }


def confirm(config: Any, seeds: int | list[int]) -> dict[str, Any]:
    """The study's winner (top 1) re-trained with fresh seeds (``seeds``: how many, or the
    seeds themselves) by ``sweeper confirm``'s own code; its confirmed objective and
    accuracy (mean, std over seeds)."""
    from sweeper.study.confirm import run_confirmation

    started = time.perf_counter()
    confirmation = run_confirmation(
        config, top_k=1, seeds=seeds, show_progress=False, log=lambda line: print(line, flush=True)
    )
    wall = time.perf_counter() - started
    if confirmation is None:
        return {"status": "not finished", "wall_seconds": round(wall, 2)}
    winning = confirmation.winning
    examples = sum(_run_examples(config, run.trial) for run in winning.runs)
    return {
        "status": "confirmed",
        "wall_seconds": round(wall, 2),
        "seeds": confirmation.seeds,
        "config": winning.params,
        "source_trials": winning.source_trials,
        "selected_value": winning.selected_value,
        "objective": winning.objective.model_dump(),
        "accuracy": winning.accuracy.model_dump() if winning.accuracy else None,
        "test_accuracy": winning.test_accuracy.model_dump() if winning.test_accuracy else None,
        "test_loss": winning.test_loss.model_dump() if winning.test_loss else None,
        "runs": [run.model_dump(mode="json") for run in winning.runs],
        "examples": examples,
        "notes": confirmation.notes,
    }


def _run_examples(config: Any, trial_number: int) -> int:
    """The training examples of one confirmation re-run (a trial of the companion study)."""
    import optuna

    from benchmarks.replay import curves_from_trials
    from sweeper.records.confirmation import companion_name
    from sweeper.runtime.storage import open_storage

    storage = open_storage(config.storage_url, heartbeat=False, create=False)
    companion = optuna.load_study(study_name=companion_name(config.name), storage=storage)
    trial = next(t for t in companion.get_trials(deepcopy=False) if t.number == trial_number)
    curves = curves_from_trials([trial], config.objective.metric)
    return curves[0].examples if curves else 0


# --- the replay -----------------------------------------------------------------------------


def near_chance_rule(config: Any, majority_rate: float | None, at_fraction: float = 0.5) -> Any:
    """The near-chance rule for the replay: the study file's when it has one on, else one at
    ``at_fraction`` of the plan with the default margin."""
    from sweeper.trial.grid import NearChance

    if majority_rate is None:
        return None
    rule = config.near_chance
    return NearChance(rule.at_fraction or at_fraction, rule.margin, majority_rate)


def strategies(default_config: Any, majority_rate: float | None = None) -> list[Any]:
    """none; the default rules (the study file's pruner, early stopping and near-chance
    rule); each of them alone; successive halving and hyperband (sweeper's own defaults for
    them); the rank pruner (sweeper's defaults) with and without the near-chance rule and
    early stopping, and the median pruner with the near-chance rule."""
    from benchmarks.replay import EarlyStopping, Strategy

    rules = default_rules(default_config)
    stopping = rules["early_stopping"]
    early = EarlyStopping(stopping["patience"], stopping["min_delta"]) if stopping else None
    chance = near_chance_rule(default_config, majority_rate)
    own_chance = chance if default_config.near_chance.at_fraction is not None else None
    stop, near = (stop_text(early), early), (chance_text(chance), chance)
    default_text = f"{rules['pruner']} + {stop[0]}" + (f" + {near[0]}" if own_chance else "")
    found = [
        Strategy("none", description="no pruner, no early stopping"),
        Strategy("default", default_config.pruner.build, early, default_text, own_chance),
        Strategy("default pruner only", default_config.pruner.build, None, rules["pruner"]),
    ]
    if early is not None:
        found.append(Strategy("early stopping only", None, early, stop[0]))
    median = {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 2}
    found += [
        pruner_strategy("successive_halving", {"type": "successive_halving"}),
        pruner_strategy("hyperband", {"type": "hyperband"}),
        pruner_strategy(
            "median + early stopping (until 2026-12-02)",
            median,
            stop=stop,
            note=": the default study's rules before the rank pruner and the near-chance rule",
        ),
        pruner_strategy("rank", {"type": "rank"}),
        pruner_strategy("rank + early stopping", {"type": "rank"}, stop=stop),
    ]
    if chance is not None:
        found += [
            Strategy("near chance only", None, None, near[0], chance),
            pruner_strategy("median + near chance + early stopping", median, near, stop),
            pruner_strategy("rank + near chance + early stopping", {"type": "rank"}, near, stop),
        ]
    return found


def pruner_strategy(
    name: str,
    kind: dict[str, Any],
    near: tuple[str, Any] | None = None,
    stop: tuple[str, Any] | None = None,
    note: str = "",
) -> Any:
    """Sweeper's pruner ``kind`` (its defaults for the rest), with a near-chance rule and/or
    an early-stopping rule (each: how it is described, and the rule, or None) added."""
    from benchmarks.replay import Strategy
    from sweeper.settings.pruners import pruner_config

    pruner = pruner_config(kind)
    added = [text for text, _ in (rule for rule in (near, stop) if rule is not None)]
    return Strategy(
        name,
        pruner.build,
        stop[1] if stop else None,
        " + ".join([pruner.describe(), *added]) + note,
        near[1] if near else None,
    )


def stop_text(early: Any) -> str:
    """An early-stopping rule (None: none) as the strategies' descriptions name it."""
    if early is None:
        return "no early stopping"
    return f"early stopping (patience {early.patience}, min_delta {early.min_delta:g})"


def chance_text(chance: Any) -> str:
    """A near-chance rule (None: no majority rate to measure from), as the descriptions
    name it."""
    if chance is None:
        return "near chance (no majority rate)"
    return f"near chance at {chance.at_fraction:g} of the plan (margin {chance.margin:g})"


def majority_rate(config: Any) -> float | None:
    """The validation split's majority-class rate (what near chance is measured from)."""
    from sweeper.trial.data import LABEL, column_values, load_splits
    from sweeper.trial.grid import majority_rate as rate

    return rate(column_values(load_splits(config.dataset).validation, LABEL))


def curves_of(unpruned: dict[str, Any]) -> list[Any]:
    """The unpruned search's curves as its stage stored them, in start order."""
    from benchmarks.replay import Curve, Point

    rows = sorted(unpruned["trials"], key=lambda t: t["number"])
    return [
        Curve(row["number"], tuple(Point(**point) for point in row["curve"]))
        for row in rows
        if row["curve"]
    ]


def run_replay(
    unpruned: dict[str, Any], default_config: Any, noise: float | None
) -> dict[str, Any]:
    """Stage 3: the unpruned curves replayed through every strategy, with the issue's checks."""
    from benchmarks.replay import replay_all, rule_checks

    direction = default_config.objective.study_direction
    curves = curves_of(unpruned)
    majority = majority_rate(default_config)
    results = replay_all(
        curves,
        strategies(default_config, majority),
        direction=direction,
        noise=noise,
        study_name=unpruned["study"],
    )
    return {
        "metric": default_config.objective.metric,
        "direction": direction,
        "noise": noise,
        "majority_rate": majority,
        "curves": len(curves),
        "grid_points": sum(
            1 for curve in curves for point in curve.points if point.grid is not None
        ),
        "strategies": {
            name: result.as_dict() | rule_checks(result, curves, majority)
            for name, result in results.items()
        },
    }


# --- the summary ------------------------------------------------------------------------------


def within(value: float, best: float, noise: float, direction: str) -> bool:
    return value >= best - noise if direction == "maximize" else value <= best + noise


def summarize(payload: dict[str, Any]) -> dict[str, Any]:
    def stage(key: str) -> dict[str, Any]:
        value = payload.get(key)  # a stage not run (or failed) is a line of text
        return value if isinstance(value, dict) else {}

    unpruned, default = stage("unpruned"), stage("default_live")
    confirmed_none, confirmed_default = (
        stage("unpruned_confirmation"),
        stage("default_confirmation"),
    )
    direction = stage("replay").get("direction", "minimize")
    summary: dict[str, Any] = {"target_ratio_at_most": TARGET_RATIO}
    if unpruned and default:
        ratio = default["examples"] / unpruned["examples"] if unpruned["examples"] else math.nan
        summary["live_ratio"] = round(ratio, 4)
        summary["ratio_met"] = ratio <= TARGET_RATIO
    none_objective = confirmed_none.get("objective")
    default_objective = confirmed_default.get("objective")
    if none_objective and default_objective:
        noise = none_objective.get("std")
        summary["confirmed"] = {
            "unpruned_mean": none_objective["mean"],
            "default_mean": default_objective["mean"],
            "difference": default_objective["mean"] - none_objective["mean"],
            "noise": noise,
        }
        summary["quality_met"] = (
            within(default_objective["mean"], none_objective["mean"], noise, direction)
            if noise is not None
            else None
        )
    summary["replay_vs_live"] = replay_vs_live(payload)
    majority = stage("replay").get("majority_rate")
    if default:
        summary["live_checks"] = live_checks(default, majority)
    if "ratio_met" in summary and summary.get("quality_met") is not None:
        checks = summary.get("live_checks") or {}
        summary["target_met"] = bool(
            summary["ratio_met"] and summary["quality_met"] and checks.get("checks_met")
        )
    replayed = (stage("replay").get("strategies") or {}).get("default")
    if replayed:
        summary["replay_default_ratio"] = replayed["ratio"]
        summary["replay_default_winner_lost"] = replayed["winner_lost"]
        summary["replay_default_checks_met"] = replayed.get("checks_met")
    return summary


def live_checks(search: dict[str, Any], majority_rate: float | None) -> dict[str, Any]:
    """The issue's checks on a live search: complete trials, and trials after the start-up
    ones that ended near chance (best accuracy within 2 points of the majority-class rate)
    having run past half their plan. (Whether the winner was stopped before its best is a
    replay's question: live, nobody knows the rest of a stopped curve.)"""
    from benchmarks.replay import RanTrial, dead_trial_checks

    complete = sum(1 for t in search["trials"] if t.get("outcome") in ("complete", "early_stopped"))
    ran = [
        RanTrial(
            trial["number"],
            [p["accuracy"] for p in trial.get("curve") or [] if p.get("accuracy") is not None],
            trial["examples"],
            (trial.get("planned_steps") or 0) * (trial.get("examples_per_step") or 0),
        )
        for trial in sorted(search["trials"], key=lambda t: t["number"])
    ]
    return dead_trial_checks(ran, complete, majority_rate)


def replay_vs_live(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The replay checked against the live default run on the trials both ran alike: while
    the live search draws the same parameters as the unpruned one (the sampler's seeded
    startup trials; later the sampler sees pruned trials and parts ways), the replay's
    outcome and examples for each such trial should be the live ones."""
    unpruned, live = payload.get("unpruned"), payload.get("default_live")
    replayed = (payload.get("replay") or {}) if isinstance(payload.get("replay"), dict) else {}
    default = (replayed.get("strategies") or {}).get("default")
    if not isinstance(unpruned, dict) or not isinstance(live, dict) or not default:
        return None
    before = {t["number"]: t for t in unpruned["trials"]}
    predicted = {t["trial"]: t for t in default["trials"]}
    rows = []
    for trial in sorted(live["trials"], key=lambda t: t["number"]):
        twin = before.get(trial["number"])
        if twin is None or twin["params"] != trial["params"]:
            break  # the searches part ways here
        guess = predicted.get(trial["number"])
        if guess is None:
            break
        rows.append(
            {
                "trial": trial["number"],
                "live": [trial["outcome"], trial["examples"]],
                "replay": [guess["outcome"], guess["examples"]],
                "agree": [trial["outcome"], trial["examples"]]
                == [guess["outcome"], guess["examples"]],
            }
        )
    return {
        "same_params_trials": len(rows),
        "agree": sum(1 for row in rows if row["agree"]),
        "trials": rows,
    }


def print_tables(payload: dict[str, Any]) -> None:
    replayed = payload.get("replay")
    if isinstance(replayed, dict):
        print_replay(replayed)
    if isinstance(payload.get("unpruned"), dict):
        print_searches(payload)
    summary = payload.get("summary") or {}
    if summary.get("replay_vs_live"):
        print_replay_vs_live(summary["replay_vs_live"])
    if summary.get("live_checks"):
        print_live_checks(summary)
    if "live_ratio" in summary or "confirmed" in summary:
        print_target(summary)


def print_replay(replayed: dict[str, Any]) -> None:
    """The replay stage: one row per strategy."""
    results = replayed["strategies"]
    none = results["none"]
    noise = replayed["noise"]
    winner = (
        f"trial #{none['winner']}, {replayed['metric']} {none['winner_value']:.4f}"
        if none["winner"] is not None
        else "none"
    )
    print(
        f"\n[pruning] replay of the unpruned study's {replayed['curves']} curves "
        f"(winner {winner}; seed noise {'-' if noise is None else f'{noise:.4f}'})"
    )
    print(
        f"  {'strategy':<40}{'examples':>10}{'x none':>8}  {'winner':<28}"
        f"{'within noise after':>20}  {'complete':>8}  {'dead past half':<16}best kept"
    )
    for name, r in results.items():
        if r["winner_outcome"] == "complete":
            fate = "ran to its end"
        elif r["winner_lost"]:
            fate = f"{r['winner_outcome']}, best LOST"
        else:
            fate = f"{r['winner_outcome']} after its best"
        first = r["first_within_noise_examples"]
        first_text = "-" if first is None else f"{first} (#{r['first_within_noise_trial']})"
        best = "-" if r["best_value"] is None else f"#{r['best_trial']} {r['best_value']:.4f}"
        dead = ", ".join(f"#{n}" for n in r.get("dead_past_half", [])) or "none"
        print(
            f"  {name:<40}{r['examples']:>10}{r['ratio']:>8.3f}  {fate:<28}"
            f"{first_text:>20}  {r.get('complete_trials', '-'):>8}  {dead:<16}{best}"
        )


def print_searches(payload: dict[str, Any]) -> None:
    """The live searches (unpruned, and the default rules) and their confirmed winners."""
    unpruned = payload["unpruned"]
    print("\n[pruning] live searches and their confirmed winners")
    print(
        f"  {'search':<10}{'examples':>10}{'x none':>8}{'wall s':>9}  {'states':<34}"
        f"{'best (1 seed)':>14}  confirmed objective   confirmed accuracy    "
        "confirmed test accuracy"
    )
    for label, search, confirmed in (
        ("none", unpruned, payload.get("unpruned_confirmation")),
        ("default", payload.get("default_live"), payload.get("default_confirmation")),
    ):
        if not isinstance(search, dict):
            print(f"  {label:<10}{search}")
            continue
        ratio = search["examples"] / unpruned["examples"] if unpruned["examples"] else 0.0
        states = ", ".join(f"{n} {s.lower()}" for s, n in search["states"].items())
        best = "-" if search["best_value"] is None else f"{search['best_value']:.4f}"
        confirmed = confirmed if isinstance(confirmed, dict) else {}
        print(
            f"  {label:<10}{search['examples']:>10}{ratio:>8.3f}{search['wall_seconds']:>9.0f}"
            f"  {states:<34}{best:>14}  {spread_text(confirmed.get('objective')):<22}"
            f"{spread_text(confirmed.get('accuracy')):<22}{spread_text(confirmed.get('test_accuracy'))}"
        )


def print_replay_vs_live(check: dict[str, Any]) -> None:
    print(
        f"\n[pruning] replay against the live default run on the {check['same_params_trials']} "
        f"trials both drew alike: {check['agree']} agree on outcome and examples"
        + "".join(
            f"\n  trial #{row['trial']}: live {row['live'][0]} at {row['live'][1]}, replay "
            f"{row['replay'][0]} at {row['replay'][1]}"
            for row in check["trials"]
            if not row["agree"]
        )
    )


def print_live_checks(summary: dict[str, Any]) -> None:
    checks = summary["live_checks"]
    dead = ", ".join(f"#{n}" for n in checks["dead_past_half"]) or "none"
    print(
        f"\n[pruning] live default run: {checks['complete_trials']} complete trials (at least "
        f"{MIN_COMPLETE} asked), dead trials past half their plan after the start-up "
        f"trials: {dead}; the replay's default rules "
        f"{'kept' if not summary.get('replay_default_winner_lost') else 'LOST'} the winner's best"
    )


def print_target(summary: dict[str, Any]) -> None:
    ratio = summary.get("live_ratio")
    quality = summary.get("quality_met")
    print(
        f"\n[pruning] target: the default rules reach the unpruned confirmed quality "
        f"(within its seed noise) with at most {TARGET_RATIO}x its training examples: "
        f"ratio {ratio if ratio is not None else '-'} "
        f"({'met' if summary.get('ratio_met') else 'NOT met'}), quality "
        f"({'-' if quality is None else 'met' if quality else 'NOT met'})"
        f"{'' if 'target_met' not in summary else ': target ' + ('MET' if summary['target_met'] else 'NOT met')}",
        flush=True,
    )


# --- the run ----------------------------------------------------------------------------------


def device_text() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def seed_noise(confirmed: Any) -> float | None:
    """The seed noise of a confirmation stage (the std of its objective over seeds); None
    when the stage was not run or not asked."""
    return (confirmed.get("objective") or {}).get("std") if isinstance(confirmed, dict) else None


def replay_stored(args: argparse.Namespace) -> int:
    """``--replay-from``: the replay stage again, on the curves an earlier run stored (its
    sizes come from that run's settings), written to ``pruning-replay.json``."""
    stored = json.loads(Path(args.replay_from).read_text())
    unpruned = stored.get("unpruned")
    if not isinstance(unpruned, dict):
        raise SystemExit(f"{args.replay_from} holds no unpruned search to replay")
    sizes = {key: stored["settings"][key] for key in FULL}
    config = study_config(args, sizes, stored["settings"]["model"], Path("."), "default", False)
    noise = seed_noise(stored.get("unpruned_confirmation"))
    payload = {
        "replayed_from": str(args.replay_from),
        "replay": run_replay(unpruned, config, noise),
    }
    print_tables(payload)
    print(f"[pruning] replay written to {Results('pruning-replay', payload).save()}")
    return 0


def fp16_copy_only(args: argparse.Namespace) -> int:
    """``--write-fp16-copy``: the copy, and its size."""
    path = write_fp16_copy(args.model, args.write_fp16_copy)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    print(f"[pruning] fp16 copy of {args.model} written to {path} ({size / 2**20:.1f} MiB)")
    return 0


def search_stage(
    results: Results, key: str, config: Any, label: str, stage_label: str
) -> dict[str, Any]:
    """A search stage: the study run to its budget, into ``key``."""
    started = time.perf_counter()
    _, search = run_search(config, label)
    results.set(key, search)
    print(f"[pruning] {stage_label} {time.perf_counter() - started:.0f} s", flush=True)
    return search


def confirm_stage(results: Results, key: str, config: Any, seeds: int, label: str) -> None:
    """A confirmation stage: the study's winner over ``seeds`` fresh seeds, into ``key``."""
    if seeds <= 0:
        results.set(key, "not asked (--seeds 0)")
        return
    stage = time.perf_counter()
    confirmed = confirm(config, seeds)
    results.set(key, confirmed)
    print(
        f"[pruning] {label} {time.perf_counter() - stage:.0f} s: "
        f"{spread_text(confirmed.get('objective'))}",
        flush=True,
    )


def unpruned_stages(
    results: Results, args: argparse.Namespace, config: Any, seeds: int
) -> dict[str, Any]:
    """Stages 1 and 2: the unpruned search and its winner confirmed over seeds, or both as
    an earlier run of the same size measured them (``--unpruned-from``)."""
    if args.unpruned_from is None:
        unpruned = search_stage(results, "unpruned", config, "unpruned", "stage 1 (unpruned)")
        confirm_stage(results, "unpruned_confirmation", config, seeds, "stage 2 (confirm unpruned)")
        return unpruned
    stored = json.loads(Path(args.unpruned_from).read_text())
    results.set("unpruned_from", str(args.unpruned_from))
    results.set("unpruned", stored["unpruned"])
    results.set("unpruned_confirmation", stored["unpruned_confirmation"])
    print(f"[pruning] stages 1-2 taken from {args.unpruned_from}", flush=True)
    return stored["unpruned"]


def run_stages(
    results: Results, args: argparse.Namespace, sizes: dict[str, Any], configs: tuple[Any, Any]
) -> None:
    """Stages 1-5 (1-3 with ``--no-live``), each written as soon as it is done."""
    unpruned_config, default_config = configs
    unpruned = unpruned_stages(results, args, unpruned_config, sizes["seeds"])
    noise = seed_noise(results.payload["unpruned_confirmation"])
    results.set("replay", run_replay(unpruned, default_config, noise))
    print("[pruning] stage 3 (replay) done", flush=True)
    if not args.no_live:
        search_stage(results, "default_live", default_config, "default", "stage 4 (default, live)")
        confirm_stage(
            results,
            "default_confirmation",
            default_config,
            sizes["seeds"],
            "stage 5 (confirm default)",
        )


def first_payload(
    args: argparse.Namespace, sizes: dict[str, Any], model: str, configs: tuple[Any, Any]
) -> dict[str, Any]:
    """The JSON before any stage has run: the settings, and every stage "not run"."""
    unpruned_config, default_config = configs
    live = "not run" if not args.no_live else "not asked"
    return {
        "benchmark": NAME,
        "settings": {**sizes, "model": model, "model_given": args.model, "study": str(args.study)},
        "device": device_text(),
        "environment": environment((MINILM_PACKAGE,)),
        "search_space": unpruned_config.search_space.model_dump(mode="json"),
        "sampler": unpruned_config.sampler.model_dump(mode="json"),
        "default_rules": default_rules(default_config),
        "unpruned": "not run",
        "unpruned_confirmation": "not run",
        "replay": "not run",
        "default_live": live,
        "default_confirmation": live,
    }


def print_plan(sizes: dict[str, Any], payload: dict[str, Any]) -> None:
    rules = payload["default_rules"]
    print(
        f"[pruning] {sizes['trials']} trials of 1-{sizes['max_epochs']} epochs on "
        f"{sizes['train_rows']} train / {sizes['validation_rows']} validation rows at "
        f"{sizes['max_length']} tokens, evaluated every {sizes['eval_examples']} examples; "
        f"{sizes['seeds']} seeds per confirmed winner; default rules: {rules['pruner']}, "
        f"early stopping {rules['early_stopping']}; {payload['device']}",
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    if args.write_fp16_copy is not None:
        return fp16_copy_only(args)
    if args.replay_from is not None:
        return replay_stored(args)

    sizes = resolve_sizes(args)
    scratch, model, _ = start_model_run(args, NAME)
    configs = (
        study_config(args, sizes, model, scratch, "none", unpruned=True),
        study_config(args, sizes, model, scratch, "default", unpruned=False),
    )
    results = Results(NAME, first_payload(args, sizes, model, configs))
    results.save()
    print_plan(sizes, results.payload)
    started = time.perf_counter()
    try:
        run_stages(results, args, sizes, configs)
    finally:
        close_staged_run(results, started, summarize, scratch, args.keep)
    return report_staged_run(results, print_tables)
