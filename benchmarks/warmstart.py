"""Warm start, measured: how much sooner a search on a new task holds the configuration it
finally chooses when it starts from an earlier study, and what that choice is worth.

``python -m benchmarks warmstart`` (``make bench-warmstart``; ``--quick`` for a smoke run) runs
the peers benchmark's task and machinery (``benchmarks.pruning``'s study at its default size:
the pretrained MiniLM, ``data/imdb-3k.csv.gz``, ``studies/imdb.yaml``'s search space, TPE
sampler and default rules without its baselines, an evaluation every 96 training examples):

1. **source**: a study of 10 trials on the source task (384 train / 128 validation reviews at
   64 tokens), run to its budget by ``run_study`` (what ``sweeper sweep`` runs).
2. **target task**: differs from the source's the ways users' tasks differ, all three at
   once: another ``model.max_length`` (96 tokens), other rows (``dataset.split_seed`` 7 for
   42: other reviews are drawn for train, validation and test) and another text field
   (``review_end``, the last 80 words of each review, a column of a scratch copy of the CSV).
   The JSON records every setting that differs (``task.differs``) and how many of the
   target's reviews the source's splits held. The model does not vary: the MiniLM is the
   only pretrained model that ships offline, so this leaves out a change of model (warm-
   starting a distilbert study from a MiniLM one, say).
3. **arms** on the target, each with the same trial budget, rules and search space and, within
   a replicate, the same sampler seed: ``cold`` (no ``warm_start``), ``enqueue``
   (``warm_start`` with ``sampler: false``: the source's best distinct configurations
   enqueued first), ``enqueue_sampler`` (``sampler: true``: enqueued, and the source's
   finished trials inform TPE too) and ``enqueue_narrow`` (enqueued, and the search space
   narrowed around the source's best trials instead: the other candidate the issue names,
   measured so the choice between them is a measurement; ``narrowed_space``). Replicates use sampler seeds 43, 44, 45 by default (the
   source runs the study file's 42; a cold run on seed 42 would draw the source's own first
   configurations). Every study lives in one SQLite file, so the warm arms reach the source.
4. Per run: wall seconds, training examples and **chosen at**: the time (seconds since the
   search started) and the training examples spent (every trial that finished up to and
   including it, in completion order) when the run first held the configuration it finally
   chose (its best trial's completion); how many warm-start trials ran, and whether the
   chosen trial was one (its ``warm_start_source`` user attribute).
5. **confirm** each run's final choice only (``sweeper confirm``'s ``run_confirmation``, top
   1 of the study the run created) with the same fresh seeds for every run
   (``benchmarks.peers.fresh_seeds``); runs that chose the same configuration share one
   confirmation.

Target (issue "Start from what earlier studies learned"): ``enqueue_sampler`` holds its
final choice in at most 0.5x the cold arm's time (the ratio of the arms' mean time to
choice) with a confirmed choice no worse than cold's within the seed noise (the pooled
standard deviation over seeds of the confirmations compared). Default size: 64 minutes on
this 2-core CPU (the source 2 minutes, each of the 12 target runs 2-5.5, the confirmations
18; docs/benchmarks/warmstart.md). Results:
``benchmarks/results/latest/warmstart.json`` (and ``$OUT/warmstart.json``), rewritten after
every stage.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import pruning
from benchmarks.common import (
    MINILM_PACKAGE,
    Results,
    arm_sizes,
    chosen_arms,
    close_staged_run,
    environment,
    report_staged_run,
    spread_text,
    start_model_run,
)

NAME = "warmstart"
HELP = (
    "what warm start buys on a new task: cold, enqueue and enqueue + sampler arms over "
    "sampler seeds, each run's time and examples to its final choice, each choice confirmed "
    "with the same fresh seeds"
)

ARMS = ("cold", "enqueue", "enqueue_sampler", "enqueue_narrow")
WARM_ARMS = ARMS[1:]
TARGET_ARM = "enqueue_sampler"
TARGET_TIME_RATIO = 0.5

# The target task's column: the last END_WORDS words of each review.
END_COLUMN = "review_end"
END_WORDS = 80
TARGET_SPLIT_SEED = 7
# Replicates' sampler seeds start here (the source runs the study file's seed, 42).
FIRST_SAMPLER_SEED = 43

# The pruning benchmark's sizes; the target's tokens, replicates and warm-start top besides.
FULL: dict[str, Any] = {
    **{key: value for key, value in pruning.FULL.items() if key != "seeds"},
    "target_max_length": 96,
    "seeds_per_arm": 3,
    "confirm_seeds": 3,
    "top": 3,
}
QUICK: dict[str, Any] = {
    **{key: value for key, value in pruning.QUICK.items() if key != "seeds"},
    "target_max_length": 48,
    "seeds_per_arm": 2,
    "confirm_seeds": 2,
    "top": 2,  # of 3 trials: one left for the sampler
}
SIZE_HELP = {
    "trials": "trials of the source and of every target run (default {})",
    "max_epochs": "num_train_epochs searched in 1..this (default {})",
    "train_rows": "training rows of either task (default {})",
    "validation_rows": "validation rows (the test split is capped at as many; default {})",
    "max_length": "the source task's tokens (default {})",
    "target_max_length": "the target task's tokens (default {})",
    "eval_examples": "evaluate every this many training examples (default {})",
    "seeds_per_arm": "replicates: sampler seeds per arm, from --first-sampler-seed (default {})",
    "confirm_seeds": "fresh seeds per confirmed choice, the same for every run (at least 2; "
    "default {})",
    "top": "warm_start.top: the source's best distinct configurations enqueued (default {})",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke-test sizes: {QUICK['trials']} trials of {QUICK['max_epochs']} epoch on "
        f"{QUICK['train_rows']} rows at {QUICK['max_length']} (target {QUICK['target_max_length']}) "
        f"tokens, {QUICK['seeds_per_arm']} sampler seeds per arm, {QUICK['confirm_seeds']} "
        "confirmation seeds (explicit options still win)",
    )
    pruning.add_task_arguments(parser)
    for key, text in SIZE_HELP.items():
        parser.add_argument(
            f"--{key.replace('_', '-')}", type=int, default=None, help=text.format(FULL[key])
        )
    parser.add_argument(
        "--arms",
        default=",".join(ARMS),
        help="comma-separated arms to run (default all: %(default)s)",
    )
    parser.add_argument(
        "--first-sampler-seed",
        type=int,
        default=FIRST_SAMPLER_SEED,
        help="the first replicate's sampler.seed; the next ones count up (default %(default)s)",
    )
    parser.add_argument(
        "--target-split-seed",
        type=int,
        default=TARGET_SPLIT_SEED,
        help="the target task's dataset.split_seed (default %(default)s)",
    )
    parser.add_argument(
        "--end-words",
        type=int,
        default=END_WORDS,
        help=f"the target's text, {END_COLUMN}: the last this many words (default %(default)s)",
    )
    parser.add_argument(
        "--source-weight",
        type=float,
        default=None,
        help="warm_start.source_weight (it weighs in the enqueue_sampler arm; default: sweeper's)",
    )
    parser.add_argument(
        "--cpu-threads", type=int, default=None, help="torch's CPU threads (default: its own)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")


def resolve_sizes(args: argparse.Namespace) -> dict[str, Any]:
    return arm_sizes(args, FULL, QUICK)


def parse_arms(text: str) -> list[str]:
    return chosen_arms(text, ARMS)


# --- the tasks and their studies ------------------------------------------------------------


def write_target_data(data: Path, text_column: str, words: int, directory: Path) -> dict[str, Any]:
    """A copy of ``data`` with the column END_COLUMN: the last ``words`` words of each text."""
    import pandas as pd

    frame = pd.read_csv(data)
    split = frame[text_column].astype(str).str.split()
    frame[END_COLUMN] = split.map(lambda tokens: " ".join(tokens[-words:]))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{Path(data).name.split('.')[0]}-{END_COLUMN}.csv"
    frame.to_csv(path, index=False)
    return {
        "path": str(path),
        "from": str(data),
        "column": END_COLUMN,
        "rule": f"the last {words} words of {text_column!r} (split on whitespace)",
        "rows": len(frame),
        "rows_whole_text": int((split.map(len) <= words).sum()),
    }


def changed_study_file(study: Path, changes: dict[str, Any], path: Path) -> Path:
    """The study file with ``changes`` (dotted keys, as ``--set`` gives them) written at
    ``path``: a study file as a user would write it."""
    import yaml

    from sweeper.settings.study_file import read_study_document

    _, document = read_study_document(study, changes, notify=lambda message: None)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


class Studies:
    """The benchmark's studies, all in one SQLite file: the source's, and each (arm, sampler
    seed)'s on the target task, built when first asked (a warm arm's reads its source)."""

    def __init__(self, args: argparse.Namespace, sizes: dict[str, Any], model: str, scratch: Path):
        self.args, self.sizes, self.model, self.scratch = args, sizes, model, scratch
        self.source = self.build("source", {}, Path(args.data), sizes)
        self.target_data = write_target_data(
            Path(args.data), self.source.dataset.text_column, args.end_words, scratch / "data"
        )
        self.targets: dict[tuple[str, int], Any] = {}

    def build(self, label: str, changes: dict[str, Any], data: Path, sizes: dict[str, Any]) -> Any:
        """pruning.study_config's study (default rules, no baselines) as ``warmstart-<label>``,
        ``changes`` applied to the study file first; at --quick, no near-chance rule (see
        ``peers.study_configs``)."""
        if sizes["quick"]:
            changes = {**changes, "near_chance.at_fraction": None}
        study = changed_study_file(
            self.args.study, changes, self.scratch / "studies" / f"{label}.yaml"
        )
        task = argparse.Namespace(**{**vars(self.args), "study": study, "data": data})
        return pruning.study_config(task, sizes, self.model, self.scratch, label, False, NAME)

    def warm_start(self, arm: str) -> dict[str, Any] | None:
        """The ``warm_start`` section of ``arm``'s studies (None: cold)."""
        if arm == "cold":
            return None
        section: dict[str, Any] = {
            "sources": [{"study": self.source.name, "storage": self.source.storage_url}],
            "top": self.sizes["top"],
            "sampler": arm == "enqueue_sampler",
        }
        if self.args.source_weight is not None:
            section["source_weight"] = float(self.args.source_weight)
        return section

    def target(self, arm: str, seed: int) -> Any:
        if (arm, seed) not in self.targets:
            changes: dict[str, Any] = {
                "dataset.text_column": END_COLUMN,
                "dataset.split_seed": int(self.args.target_split_seed),
                "sampler.seed": seed,
            }
            warm = self.warm_start(arm)
            if warm is not None:
                changes["warm_start"] = warm
            if arm == "enqueue_narrow":
                changes |= narrowed_space(self.source, self.sizes["top"])
            sizes = {**self.sizes, "max_length": self.sizes["target_max_length"]}
            label = f"{arm.replace('_', '-')}-s{seed}"
            data = Path(self.target_data["path"])
            self.targets[(arm, seed)] = self.build(label, changes, data, sizes)
        return self.targets[(arm, seed)]


def _narrowed(spec: Any, values: list[Any]) -> Any:
    """One searched spec around ``values``: a float range from half the lowest to twice the
    highest (log) or a quarter of the range either side, an integer range one step either
    side, the choices among ``values``; always within ``spec``."""
    from sweeper.settings.hyperparameters import Choices, FloatRange, IntRange

    low, high = min(values), max(values)
    if isinstance(spec, FloatRange):
        margin = (spec.high - spec.low) / 4
        low, high = (low / 2, high * 2) if spec.log else (low - margin, high + margin)
        return {"low": max(spec.low, low), "high": min(spec.high, high), "log": spec.log}
    if isinstance(spec, IntRange):
        low, high = max(spec.low, low - spec.step), min(spec.high, high + spec.step)
        return {"low": low, "high": high, "step": spec.step} if low < high else low
    if isinstance(spec, Choices):
        return {"choices": sorted(set(values))}
    return spec


def narrowed_space(source: Any, top: int) -> dict[str, Any]:
    """The ``enqueue_narrow`` arm's search space (the alternative to modelling the source's
    trials that the warm start issue names): each searched hyperparameter narrowed around
    the source's ``top`` best complete trials (``_narrowed``), as ``search_space.*`` keys."""
    import optuna
    from optuna.trial import TrialState

    from sweeper.settings.hyperparameters import is_searched

    study = optuna.load_study(study_name=source.name, storage=source.storage_url)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    sign = 1 if source.objective.study_direction == "minimize" else -1
    best = sorted(complete, key=lambda t: sign * float(t.value or 0.0))[:top]
    changes: dict[str, Any] = {}
    for name, spec in source.search_space.specs().items():
        values = [t.params[name] for t in best if name in t.params]
        if is_searched(spec) and values:
            changes[f"search_space.{name}"] = _narrowed(spec, values)
    return changes


def flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as dotted keys."""
    if not isinstance(value, dict):
        return {prefix: value}
    items: dict[str, Any] = {}
    for key, inner in value.items():
        items |= flat(inner, f"{prefix}.{key}" if prefix else str(key))
    return items


# What differs by design between studies of the same task: not a difference of tasks.
STUDY_KEYS = ("name", "sampler.seed", "warm_start")


def task_differences(source: Any, target: Any) -> dict[str, dict[str, Any]]:
    """Every setting the target's cold study has otherwise than the source's, but the study's
    name, its sampler seed and warm start: {dotted key: {source, target}}."""
    before, after = flat(source.model_dump(mode="json")), flat(target.model_dump(mode="json"))
    return {
        key: {"source": before.get(key), "target": after.get(key)}
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
        and not any(key == k or key.startswith(f"{k}.") for k in STUDY_KEYS)
    }


def row_overlap(source: Any, target: Any, words: int) -> dict[str, dict[str, int]]:
    """For each target split, its rows and how many of them each source split held (a review
    matched by its last ``words`` words, the target's text)."""
    from sweeper.trial.data import column_values, load_splits

    def ends(split: Any) -> set[str]:
        return {" ".join(str(text).split()[-words:]) for text in column_values(split, "text")}

    held = {name: ends(split) for name, split in load_splits(source.dataset).named().items()}
    overlap: dict[str, dict[str, int]] = {}
    for name, split in load_splits(target.dataset).named().items():
        texts = ends(split)
        overlap[name] = {"rows": len(split)} | {
            f"in_source_{other}": len(texts & rows) for other, rows in held.items()
        }
    return overlap


# --- a run ----------------------------------------------------------------------------------


def chosen_at(trials: list[dict[str, Any]], chosen: int | None) -> dict[str, Any]:
    """When a run first held its final choice: its chosen trial's completion (seconds since
    the search started) and the training examples of every trial that finished up to and
    including it, in completion order."""
    if chosen is not None:
        finished = sorted(
            (t for t in trials if t.get("completed_at_seconds") is not None),
            key=lambda t: (t["completed_at_seconds"], t["number"]),
        )
        examples = 0
        for trial in finished:
            examples += int(trial["examples"])
            if trial["number"] == chosen:
                return {
                    "chosen_at_seconds": trial["completed_at_seconds"],
                    "chosen_at_examples": examples,
                }
    return {"chosen_at_seconds": None, "chosen_at_examples": None}


def run_arm(config: Any, arm: str, seed: int) -> dict[str, Any]:
    """One target run (or the source, arm "source") to its budget, with its choice and when
    it first held it, and its warm-start trials."""
    started = time.time()
    study, search = pruning.run_search(config, f"{arm} s{seed}", tag=NAME)
    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    for row in search["trials"]:
        trial = trials[row["number"]]
        done = trial.datetime_complete
        row["completed_at_seconds"] = None if done is None else round(done.timestamp() - started, 2)
        row["warm_start_source"] = trial.user_attrs.get("warm_start_source")
    chosen = search["best_trial"]
    source = None if chosen is None else trials[chosen].user_attrs.get("warm_start_source")
    return {
        "arm": arm,
        "sampler_seed": seed,
        **{key: value for key, value in search.items() if key not in ("best_params",)},
        "chosen_trial": chosen,
        "chosen_params": search["best_params"],
        "chosen_value": search["best_value"],
        **chosen_at(search["trials"], chosen),
        "warm_start_trials": sum(1 for row in search["trials"] if row["warm_start_source"]),
        "chosen_is_warm_start": None if chosen is None else source is not None,
        "chosen_warm_start_source": source,
        "study_warm_start": study.user_attrs.get("warm_start"),
    }


def run_searches(results: Results, studies: Studies, arms: list[str], seeds: list[int]) -> None:
    """The source (when a warm arm is asked), then every replicate's arms in turn: a run cut
    short leaves the arms equally measured."""
    if any(arm in WARM_ARMS for arm in arms):
        stage = time.perf_counter()
        results.set("source", run_arm(studies.source, "source", studies.source.sampler.seed))
        print(f"[{NAME}] source study: {time.perf_counter() - stage:.0f} s", flush=True)
    for seed in seeds:
        for arm in arms:
            config = studies.target(arm, seed)
            results.payload["warm_start"][arm] = dump_warm_start(config)
            if arm == "enqueue_narrow":
                space = config.search_space.model_dump(mode="json")
                results.payload["narrowed_search_space"] = space
            stage = time.perf_counter()
            results.payload["runs"][arm][str(seed)] = run_arm(config, arm, seed)
            results.save()
            run = results.payload["runs"][arm][str(seed)]
            print(
                f"[{NAME}] {arm} s{seed}: {time.perf_counter() - stage:.0f} s, chosen trial "
                f"#{run['chosen_trial']} at {run['chosen_at_seconds']} s, "
                f"{run['warm_start_trials']} warm-start trials",
                flush=True,
            )


def dump_warm_start(config: Any) -> Any:
    """A study's ``warm_start`` as validated (its defaults filled in); None: cold (no source)."""
    section: Any = getattr(config, "warm_start", None)
    if section is None or not getattr(section, "sources", None):
        return None
    return section.model_dump(mode="json") if hasattr(section, "model_dump") else section


def run_confirmations(
    results: Results, studies: Studies, arms: list[str], sampler_seeds: list[int]
) -> None:
    """Each run's final choice confirmed with the same seeds; the same configuration once."""
    from benchmarks.peers import same_configuration

    done: list[tuple[str, str, dict[str, Any]]] = []  # (arm, seed, params) confirmed
    seeds = results.payload["confirm_seeds"]
    for seed in sampler_seeds:
        for arm in arms:
            key, run = str(seed), results.payload["runs"][arm][str(seed)]
            if not isinstance(run, dict) or run.get("chosen_params") is None:
                results.payload["confirmations"][arm][key] = "nothing to confirm"
                continue
            params = run["chosen_params"]
            twin = next((d for d in done if same_configuration(d[2], params)), None)
            stage = time.perf_counter()
            if twin is not None:
                confirmed = {
                    **results.payload["confirmations"][twin[0]][twin[1]],
                    "same_choice_as": f"{twin[0]} s{twin[1]}",
                }
            else:
                confirmed = pruning.confirm(studies.target(arm, seed), seeds)
                done.append((arm, key, params))
            results.payload["confirmations"][arm][key] = confirmed
            results.save()
            print(
                f"[{NAME}] confirm {arm} s{seed}: {time.perf_counter() - stage:.0f} s: "
                f"{spread_text(confirmed.get('objective'))}"
                f"{f' (the same choice as {twin[0]} s{twin[1]})' if twin else ''}",
                flush=True,
            )


# --- the summary ------------------------------------------------------------------------------


def _mean(values: list[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _objective(confirmation: Any) -> dict[str, Any]:
    objective = confirmation.get("objective") if isinstance(confirmation, dict) else None
    return objective if isinstance(objective, dict) else {}


def arm_summary(runs: Any, confirmations: Any) -> dict[str, Any]:
    """An arm's runs: per sampler seed, and the means over them."""
    ran = {seed: run for seed, run in (runs or {}).items() if isinstance(run, dict)}
    confirmations = confirmations if isinstance(confirmations, dict) else {}
    per_seed: dict[str, dict[str, Any]] = {}
    for seed, run in ran.items():
        objective = _objective(confirmations.get(seed))
        per_seed[seed] = {
            "wall_seconds": run.get("wall_seconds"),
            "examples": run.get("examples"),
            "chosen_at_seconds": run.get("chosen_at_seconds"),
            "chosen_at_examples": run.get("chosen_at_examples"),
            "warm_start_trials": run.get("warm_start_trials"),
            "chosen_is_warm_start": run.get("chosen_is_warm_start"),
            "confirmed_mean": objective.get("mean"),
            "confirmed_std": objective.get("std"),
        }
    means = {
        f"mean_{key}": _mean([row[key] for row in per_seed.values()])
        for key in ("wall_seconds", "examples", "chosen_at_seconds", "chosen_at_examples")
    }
    return {
        "runs": len(per_seed),
        **means,
        "confirmed_mean": _mean([row["confirmed_mean"] for row in per_seed.values()]),
        "per_seed": per_seed,
    }


def _ratio(value: Any, base: Any) -> float | None:
    if value is None or base is None or not base:
        return None
    return round(float(value) / float(base), 4)


def against_cold(arm: dict[str, Any], cold: dict[str, Any], direction: str) -> dict[str, Any]:
    """A warm arm against the cold one: the ratios of their mean time and examples to choice
    (and per seed), and their confirmed quality within the seed noise (the pooled std of
    every confirmation of both arms)."""
    seeds = [seed for seed in arm["per_seed"] if seed in cold["per_seed"]]
    stds = [
        row["confirmed_std"]
        for side in (arm, cold)
        for row in side["per_seed"].values()
        if row["confirmed_std"] is not None
    ]
    noise = math.sqrt(statistics.fmean(s * s for s in stds)) if stds else None
    result: dict[str, Any] = {
        "time_ratio": _ratio(arm["mean_chosen_at_seconds"], cold["mean_chosen_at_seconds"]),
        "examples_ratio": _ratio(arm["mean_chosen_at_examples"], cold["mean_chosen_at_examples"]),
        "wall_ratio": _ratio(arm["mean_wall_seconds"], cold["mean_wall_seconds"]),
        "time_ratio_per_seed": {
            seed: _ratio(
                arm["per_seed"][seed]["chosen_at_seconds"],
                cold["per_seed"][seed]["chosen_at_seconds"],
            )
            for seed in seeds
        },
        "noise": noise,
    }
    if arm["confirmed_mean"] is not None and cold["confirmed_mean"] is not None:
        difference = arm["confirmed_mean"] - cold["confirmed_mean"]
        worse_by = difference if direction == "minimize" else -difference
        result["difference"] = difference  # warm minus cold
        result["within_noise_or_better"] = None if noise is None else worse_by <= noise
    return result


def summarize(payload: dict[str, Any]) -> dict[str, Any]:
    runs, confirmations = payload.get("runs") or {}, payload.get("confirmations") or {}
    direction = payload.get("direction", "minimize")
    arms = {arm: arm_summary(runs.get(arm), confirmations.get(arm)) for arm in ARMS}
    summary: dict[str, Any] = {
        "target_arm": TARGET_ARM,
        "target_time_ratio_at_most": TARGET_TIME_RATIO,
        "direction": direction,
        "arms": arms,
        "against_cold": {
            arm: against_cold(arms[arm], arms["cold"], direction)
            for arm in WARM_ARMS
            if arms[arm]["runs"] and arms["cold"]["runs"]
        },
    }
    target = summary["against_cold"].get(TARGET_ARM)
    if target and target["time_ratio"] is not None:
        summary["time_ratio"] = target["time_ratio"]
        summary["time_met"] = target["time_ratio"] <= TARGET_TIME_RATIO
        summary["quality_met"] = target.get("within_noise_or_better")
        if summary["quality_met"] is not None:
            summary["target_met"] = bool(summary["time_met"] and summary["quality_met"])
    return summary


# --- the tables -------------------------------------------------------------------------------


def _number(value: Any, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_runs(payload: dict[str, Any]) -> None:
    source = payload.get("source")
    if isinstance(source, dict):
        print(
            f"\n[{NAME}] source {source['study']}: {source['wall_seconds']:.0f} s, "
            f"{source['examples']} examples, chosen #{source['chosen_trial']} "
            f"{_number(source['chosen_value'], 4)}"
        )
    print(f"\n[{NAME}] the runs and their confirmed choices")
    print(
        f"  {'arm':<17}{'seed':>6}{'wall s':>8}{'examples':>10}{'chosen at s':>13}"
        f"{'chosen at ex':>14}{'warm trials':>13}  {'chosen (1 seed)':<32}confirmed loss"
    )
    for arm, by_seed in (payload.get("runs") or {}).items():
        for seed, run in by_seed.items():
            if not isinstance(run, dict):
                print(f"  {arm:<17}{seed:>6}  {run}")
                continue
            confirmed = (payload.get("confirmations") or {}).get(arm, {}).get(seed)
            origin = run.get("chosen_warm_start_source")
            chosen = f"#{run['chosen_trial']} {_number(run['chosen_value'], 4)}" + (
                f" ({origin})" if origin else ""
            )
            print(
                f"  {arm:<17}{seed:>6}{run['wall_seconds']:>8.0f}{run['examples']:>10}"
                f"{_number(run['chosen_at_seconds']):>13}{_number(run['chosen_at_examples']):>14}"
                f"{run['warm_start_trials']:>13}  {chosen:<32}"
                f"{spread_text(_objective(confirmed))}"
            )


def print_arms(summary: dict[str, Any]) -> None:
    print(f"\n[{NAME}] the arms: means over sampler seeds")
    print(
        f"  {'arm':<17}{'time to choice s (per seed)':<34}{'x cold':>8}  "
        f"{'examples to choice (per seed)':<36}{'x cold':>8}  confirmed loss (mean of runs)"
    )
    for arm, row in summary["arms"].items():
        if not row["runs"]:
            continue
        versus = summary["against_cold"].get(arm, {})
        times = ", ".join(_number(s["chosen_at_seconds"]) for s in row["per_seed"].values())
        examples = ", ".join(_number(s["chosen_at_examples"]) for s in row["per_seed"].values())
        time_ratio = 1.0 if arm == "cold" else versus.get("time_ratio")
        examples_ratio = 1.0 if arm == "cold" else versus.get("examples_ratio")
        print(
            f"  {arm:<17}{_number(row['mean_chosen_at_seconds']) + f' ({times})':<34}"
            f"{_number(time_ratio, 3):>8}  "
            f"{_number(row['mean_chosen_at_examples']) + f' ({examples})':<36}"
            f"{_number(examples_ratio, 3):>8}  {_number(row['confirmed_mean'], 4)}"
        )


def print_tables(payload: dict[str, Any]) -> None:
    print_runs(payload)
    summary = payload.get("summary") or {}
    if "arms" in summary:
        print_arms(summary)
    if "time_ratio" in summary:
        target = summary["against_cold"][TARGET_ARM]
        quality = summary.get("quality_met")
        print(
            f"\n[{NAME}] target: {TARGET_ARM}'s time to its final choice {summary['time_ratio']}x "
            f"the cold arm's (at most {TARGET_TIME_RATIO}x): "
            f"{'met' if summary['time_met'] else 'NOT met'}; confirmed loss against cold: "
            f"difference {_number(target.get('difference'), 4)}, seed noise "
            f"{_number(target.get('noise'), 4)}: "
            f"{'-' if quality is None else 'met' if quality else 'NOT met'}"
            f"{'' if 'target_met' not in summary else '; target ' + ('MET' if summary['target_met'] else 'NOT met')}",
            flush=True,
        )


# --- the run ----------------------------------------------------------------------------------


def start_results(
    settings: dict[str, Any], studies: Studies, arms: list[str], seeds: list[int]
) -> Results:
    """The results before any stage: the tasks, what differs, and every stage not run yet."""
    from benchmarks.peers import fresh_seeds
    from benchmarks.pruning import default_rules, device_text

    source, cold = studies.source, studies.target("cold", seeds[0])
    keys = [str(seed) for seed in seeds]
    results = Results(
        NAME,
        {
            "benchmark": NAME,
            "settings": settings,
            "device": device_text(),
            "environment": environment((MINILM_PACKAGE,)),
            "search_space": source.search_space.model_dump(mode="json"),
            "sampler": source.sampler.model_dump(mode="json"),
            "rules": default_rules(source),
            "direction": source.objective.study_direction,
            "task": {
                "source_study": source.name,
                "storage": source.storage_url,
                "differs": task_differences(source, cold),
                "target_data": studies.target_data,
                "rows": row_overlap(source, cold, int(settings["end_words"])),
                "not_varied": "the model: the MiniLM is the only pretrained model offline",
            },
            "arms": arms,
            "sampler_seeds": seeds,
            "confirm_seeds": fresh_seeds(source, settings["confirm_seeds"]),
            "warm_start": {arm: studies.warm_start(arm) for arm in arms},
            "source": "not run" if set(arms) & set(WARM_ARMS) else "not needed: no warm arm",
            "runs": {arm: {key: "not run" for key in keys} for arm in arms},
            "confirmations": {arm: {key: "not run" for key in keys} for arm in arms},
        },
    )
    results.save()
    return results


def run(args: argparse.Namespace) -> int:
    arms = parse_arms(str(args.arms))
    sizes = resolve_sizes(args)
    seeds = [int(args.first_sampler_seed) + i for i in range(sizes["seeds_per_arm"])]
    scratch, model, threads = start_model_run(args, NAME)
    studies = Studies(args, sizes, model, scratch)
    settings = {
        **sizes,
        "model": model,
        "model_given": args.model,
        "study": str(args.study),
        "threads": threads,
        "target_split_seed": int(args.target_split_seed),
        "end_words": int(args.end_words),
        "source_weight": args.source_weight,
    }
    results = start_results(settings, studies, arms, seeds)
    print(
        f"[{NAME}] {'the source study, then ' if set(arms) & set(WARM_ARMS) else ''}"
        f"arms {', '.join(arms)} x sampler seeds {seeds}, "
        f"{sizes['trials']} trials each of 1-{sizes['max_epochs']} epochs on "
        f"{sizes['train_rows']} train rows; target differs in "
        f"{', '.join(results.payload['task']['differs'])}; choices confirmed with seeds "
        f"{results.payload['confirm_seeds']}; {results.payload['device']}",
        flush=True,
    )
    started = time.perf_counter()
    try:
        run_searches(results, studies, arms, seeds)
        run_confirmations(results, studies, arms, seeds)
    finally:
        close_staged_run(results, started, summarize, scratch, args.keep)
    return report_staged_run(results, print_tables)
