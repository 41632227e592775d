"""Time to a better model: sweeper against ``Trainer.hyperparameter_search`` and Ray Tune,
measured side by side.

``python -m benchmarks peers`` (part of ``make bench``; ``make bench-peers``; ``--quick`` for
a smoke run) gives three sides the same task, the pruning benchmark's default size: its
data, model, search space (``studies/imdb.yaml``'s, without baselines), TPE sampler and seed
and trial budget, one trial at a time on every side, the same CPU threads (or the same GPU).
Each side runs as its users run it (``benchmarks.peer_sides`` says how the peers do):

1. **sweeper** with its default rules (the study file's pruner and early stopping);
2. **hyperparameter_search**: ``Trainer.hyperparameter_search(backend="optuna")`` with
   Optuna's ``MedianPruner`` passed through, evaluating every fixed ``eval_steps``;
3. **ray_tune**: a Ray Tune ``Tuner`` with ``ASHAScheduler`` and ``OptunaSearch``.

Per side: wall time, training examples, the wall time at which the side first held the
configuration it finally chose (when the trial it chose ended), and the confirmed quality
of that choice: re-trained with the same fresh seeds on every side by ``sweeper confirm``'s
own ``run_confirmation`` (the seeds given explicitly), scored on validation and on the
untouched test split. A peer's choice is confirmed through a sweeper study of its own that
holds that one configuration as a finished trial; two sides that chose the same
configuration share one confirmation (same configuration, same seeds: the same re-runs).

"Best peer": the peer whose confirmed validation loss is best, the faster one on a tie.
Target (issue "Time to a better model"): sweeper's confirmed choice at least as good as the
best peer's, within the seed noise measured here (the pooled standard deviation over seeds
of the two confirmations), in at most the fastest peer's wall time; stretch 0.7x of it.
Results: ``benchmarks/results/latest/peers.json`` (and ``$OUT/peers.json``), rewritten after every
stage.
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
    close_staged_run,
    environment,
    report_staged_run,
    size_options,
    spread_text,
    start_model_run,
)
from sweeper.trial.speed import resolve_speed

NAME = "peers"
HELP = (
    "time to a confirmed-better model: sweeper's default rules against "
    "Trainer.hyperparameter_search (Optuna, MedianPruner) and Ray Tune (ASHA + OptunaSearch) "
    "on the same task, each choice confirmed with the same fresh seeds"
)

SIDES = ("sweeper", "hyperparameter_search", "ray_tune")
PEERS = SIDES[1:]
TARGET_TIME_RATIO = 1.0
STRETCH_TIME_RATIO = 0.7

# The pruning benchmark's sizes, with 5 seeds per confirmed choice at the default size.
FULL: dict[str, Any] = {**pruning.FULL, "seeds": 5}
QUICK: dict[str, Any] = dict(pruning.QUICK)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke-test sizes: {QUICK['trials']} trials of {QUICK['max_epochs']} epoch on "
        f"{QUICK['train_rows']} rows at {QUICK['max_length']} tokens, {QUICK['seeds']} seeds",
    )
    pruning.add_task_arguments(parser)
    for key, text in (
        ("trials", "trials per side"),
        ("max-epochs", "num_train_epochs searched in 1..this"),
        ("train-rows", "training rows"),
        ("validation-rows", "validation rows (the test split is capped at as many)"),
        ("max-length", "tokens"),
        ("eval-examples", "sweeper evaluates every this many examples"),
        ("seeds", "fresh seeds per confirmed choice, the same for every side (at least 2)"),
    ):
        default = FULL[key.replace("-", "_")]
        parser.add_argument(f"--{key}", type=int, default=None, help=f"{text} (default {default})")
    parser.add_argument(
        "--sides",
        default=",".join(SIDES),
        help="comma-separated sides to run (default all: %(default)s)",
    )
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=None,
        help="torch's CPU threads on every side (default: torch's own)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")


def resolve_sizes(args: argparse.Namespace) -> dict[str, Any]:
    sizes = size_options(args, FULL, QUICK)
    if sizes["seeds"] < 2:
        raise SystemExit(
            f"--seeds must be at least 2 (one seed has no spread), got {sizes['seeds']}"
        )
    return sizes


def smallest_batch(space: Any) -> int:
    from sweeper.settings.hyperparameters import Choices, IntRange

    spec = space.spec("per_device_train_batch_size")
    if isinstance(spec, Choices):
        return min(int(choice) for choice in spec.choices)  # type: ignore[arg-type]
    if isinstance(spec, IntRange):
        return int(spec.low)
    return int(spec)


# --- the task every side gets -------------------------------------------------------------


def peer_task(config: Any, sizes: dict[str, Any], model: str, scratch: Path, threads: int) -> Any:
    """The sweeper study's own splits (as its pre-flight loads them, before tokenization),
    saved for the peers, with the same search space, sampler, budget and threads."""
    from benchmarks.peer_sides import PeerTask
    from sweeper.trial.data import load_splits

    splits = load_splits(config.dataset)
    folders = {}
    for name in ("train", "validation"):
        folders[name] = scratch / "peer-data" / name
        getattr(splits, name).save_to_disk(str(folders[name]))
    batch = smallest_batch(config.space)
    # The peers' users fix eval_steps; at the smallest batch size it is sweeper's grid, at a
    # larger one they evaluate less often than sweeper (never more).
    eval_steps = max(1, sizes["eval_examples"] // batch)
    steps = math.ceil(len(splits.train) / batch) * int(sizes["max_epochs"])
    training = config.training
    return PeerTask(
        train_dir=folders["train"],
        validation_dir=folders["validation"],
        model_dir=model,
        label_names=list(splits.label_names),
        max_length=int(config.model.max_length),
        space=config.space,
        sampler=config.sampler,
        n_trials=int(config.budget.n_trials),
        eval_steps=eval_steps,
        max_evaluations=max(1, steps // eval_steps),
        fixed_arguments={
            "per_device_eval_batch_size": resolve_speed(training).eval_batch_size,
            "adam_beta1": training.adam_beta1,
            "adam_beta2": training.adam_beta2,
            "adam_epsilon": training.adam_epsilon,
            "lr_scheduler_type": training.lr_scheduler_type,
        },
        threads=threads,
        scratch=scratch,
        log=lambda line: print(line, flush=True),
    )


# --- the sweeper side ---------------------------------------------------------------------------


def run_sweeper(config: Any) -> dict[str, Any]:
    from benchmarks.pruning import run_search

    started = time.time()
    study, search = run_search(config, "sweeper", tag=NAME)
    search.pop("best_value", None)
    route = {"route": "sweeper.study.sweep.run_study (what `sweeper sweep` runs)"}
    if search["best_trial"] is None:  # every trial stopped: nothing chosen, nothing to confirm
        return {**route, **search, "chosen_trial": None, "chosen_params": None}
    best = study.best_trial
    chosen_at = best.datetime_complete.timestamp() - started if best.datetime_complete else None
    return {
        **route,
        **search,
        "chosen_trial": best.number,
        "chosen_params": best.params,
        "chosen_value": best.value,
        "chosen_at_seconds": None if chosen_at is None else round(chosen_at, 2),
    }


# --- confirmation: sweeper confirm's machinery, the same seeds for every side ------------------


def choice_study(config: Any, params: dict[str, Any], value: float) -> None:
    """A sweeper study holding a peer's choice as its one finished trial, so that
    ``run_confirmation`` (top 1) re-trains exactly that configuration."""
    import optuna

    from sweeper.study.confirm import space_distributions
    from sweeper.study.sweep import create_study

    study = create_study(config).study
    distributions = space_distributions(config.space)
    study.add_trial(
        optuna.trial.create_trial(
            params={name: params[name] for name in distributions},
            distributions=distributions,
            value=float(value),
        )
    )


def confirm_choice(config: Any, seeds: list[int]) -> dict[str, Any]:
    from benchmarks.pruning import confirm

    return confirm(config, seeds)


def fresh_seeds(config: Any, count: int) -> list[int]:
    """``count`` seeds none of the searches could draw, the same for every side."""
    from sweeper.study.confirm import _is_sweep_seed, derive_seeds

    return derive_seeds("peers", count, lambda s: _is_sweep_seed(config.space, set(), s))


def same_configuration(a: dict[str, Any], b: dict[str, Any]) -> bool:
    from sweeper.study.confirm import config_key

    return config_key(a) == config_key(b)


# --- the summary ------------------------------------------------------------------------------


def _confirmed_mean(stage: Any) -> float | None:
    objective = (stage or {}).get("objective") if isinstance(stage, dict) else None
    return None if not objective else float(objective["mean"])


def _seed_values(stage: dict[str, Any]) -> dict[int, float]:
    return {int(run["seed"]): float(run["objective"]) for run in stage.get("runs", [])}


def compare(sweeper: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    """sweeper's confirmation against a peer's on the same seeds: the difference of means,
    the seed noise (pooled std of the two) and the paired 95% interval of the difference."""
    from sweeper.study.confirm import paired_interval

    ours, theirs = sweeper["objective"], peer["objective"]
    stds = [s for s in (ours.get("std"), theirs.get("std")) if s is not None]
    noise = math.sqrt(sum(s * s for s in stds) / len(stds)) if stds else None
    a, b = _seed_values(sweeper), _seed_values(peer)
    paired = [a[seed] - b[seed] for seed in sorted(a) if seed in b]
    interval = paired_interval(paired) if len(paired) >= 2 else None
    difference = ours["mean"] - theirs["mean"]
    return {
        "difference": difference,  # validation loss: negative is better for sweeper
        "noise": noise,
        "within_noise_or_better": None if noise is None else difference <= noise,
        "paired_seeds": len(paired),
        "paired_ci95": list(interval) if interval else None,
        "paired_std": statistics.stdev(paired) if len(paired) >= 2 else None,
    }


def summarize(payload: dict[str, Any]) -> dict[str, Any]:
    searches = {side: payload.get(side) for side in SIDES}
    confirmed = {side: payload.get(f"{side}_confirmation") for side in SIDES}
    ran = [p for p in PEERS if isinstance(searches[p], dict)]
    summary: dict[str, Any] = {
        "target_time_ratio_at_most": TARGET_TIME_RATIO,
        "stretch_time_ratio_at_most": STRETCH_TIME_RATIO,
    }
    ours = searches["sweeper"]
    if ran and isinstance(ours, dict):
        fastest = min(ran, key=lambda p: searches[p]["wall_seconds"])  # type: ignore[index]
        ratio = ours["wall_seconds"] / searches[fastest]["wall_seconds"]  # type: ignore[index]
        summary |= {
            "fastest_peer": fastest,
            "time_ratio": round(ratio, 3),
            "time_met": ratio <= TARGET_TIME_RATIO,
            "stretch_met": ratio <= STRETCH_TIME_RATIO,
        }
    scored = [p for p in ran if _confirmed_mean(confirmed[p]) is not None]
    if scored and _confirmed_mean(confirmed["sweeper"]) is not None:
        best = min(
            scored,
            key=lambda p: (_confirmed_mean(confirmed[p]), searches[p]["wall_seconds"]),  # type: ignore[index]
        )
        summary["best_peer"] = best
        summary["against_best_peer"] = compare(confirmed["sweeper"], confirmed[best])  # type: ignore[arg-type]
        summary["quality_met"] = summary["against_best_peer"]["within_noise_or_better"]
        summary["against_each_peer"] = {
            p: compare(confirmed["sweeper"], confirmed[p])  # type: ignore[arg-type]
            for p in scored
        }
    if "time_met" in summary and summary.get("quality_met") is not None:
        summary["target_met"] = bool(summary["time_met"] and summary["quality_met"])
    return summary


def print_tables(payload: dict[str, Any]) -> None:
    print(
        f"\n[peers] {'side':<22}{'wall s':>8}{'examples':>10}{'chosen at s':>12}  "
        f"{'states':<36}{'chosen (1 seed)':>16}  confirmed loss        confirmed accuracy    "
        "test accuracy"
    )
    for side in SIDES:
        search = payload.get(side)
        if not isinstance(search, dict):
            print(f"  {side:<22}{search}")
            continue
        confirmed = payload.get(f"{side}_confirmation")
        confirmed = confirmed if isinstance(confirmed, dict) else {}
        states = ", ".join(f"{n} {s.lower()}" for s, n in search["states"].items())
        chosen_at = search.get("chosen_at_seconds")
        value = search.get("chosen_value")
        print(
            f"  {side:<22}{search['wall_seconds']:>8.0f}{search['examples']:>10}"
            f"{'-' if chosen_at is None else f'{chosen_at:.0f}':>12}  {states:<36}"
            f"{'-' if value is None else f'{value:.4f}':>16}  "
            f"{spread_text(confirmed.get('objective')):<22}{spread_text(confirmed.get('accuracy')):<22}"
            f"{spread_text(confirmed.get('test_accuracy'))}"
        )
    summary = payload.get("summary") or {}
    if "time_ratio" in summary:
        against = summary.get("against_best_peer") or {}
        noise = against.get("noise")
        quality = summary.get("quality_met")
        print(
            f"\n[peers] target: sweeper's wall time {summary['time_ratio']}x the fastest peer's "
            f"({summary['fastest_peer']}): {'met' if summary['time_met'] else 'NOT met'} (stretch "
            f"0.7x: {'met' if summary['stretch_met'] else 'not met'}); confirmed loss against the "
            f"best peer ({summary.get('best_peer', '-')}): difference "
            f"{against.get('difference', math.nan):+.4f}, seed noise "
            f"{'-' if noise is None else f'{noise:.4f}'}: "
            f"{'-' if quality is None else 'met' if quality else 'NOT met'}"
            f"{'' if 'target_met' not in summary else '; target ' + ('MET' if summary['target_met'] else 'NOT met')}",
            flush=True,
        )


# --- the run ----------------------------------------------------------------------------------


def requirements(args: argparse.Namespace) -> dict[str, str]:
    """Ray Tune, for the ray_tune side (the bench extra; `make bench-peers` installs it)."""
    if "ray_tune" not in str(args.sides):
        return {}
    return {
        "ray": "run `make bench-peers`, or `pip install -e '.[bench]'`; or leave Ray Tune out "
        "with --sides sweeper,hyperparameter_search"
    }


def parse_sides(text: str) -> list[str]:
    sides = [side.strip() for side in text.split(",") if side.strip()]
    unknown = [side for side in sides if side not in SIDES]
    if unknown or "sweeper" not in sides:
        raise SystemExit(f"--sides: expected sweeper and any of {', '.join(PEERS)}, got {text}")
    return sides


def study_configs(
    args: argparse.Namespace, sizes: dict[str, Any], model: str, scratch: Path
) -> dict[str, Any]:
    """Each side's sweeper study (the peers' serve to confirm their choices)."""
    from benchmarks.pruning import study_config

    configs = {
        side: study_config(args, sizes, model, scratch, side.replace("_", "-"), False, "peers")
        for side in SIDES
    }
    if not sizes["quick"]:
        return configs
    # At --quick size (32 validation reviews, one epoch of 128) every trial is near chance:
    # the near-chance rule would stop them all and leave nothing to compare. The quick size
    # checks the harness; the default size runs the study's own rules.
    return {
        side: config.model_copy(
            update={"near_chance": config.near_chance.model_copy(update={"at_fraction": None})}
        )
        for side, config in configs.items()
    }


def start_results(
    settings: dict[str, Any], sweeper_config: Any, sides: list[str], seeds: list[int]
) -> Results:
    """The results as they stand before any stage: the task, and every stage not run yet."""
    from benchmarks.pruning import default_rules, device_text

    results = Results(
        NAME,
        {
            "benchmark": NAME,
            "settings": settings,
            "device": device_text(),
            "environment": environment((MINILM_PACKAGE, "ray")),
            "search_space": sweeper_config.search_space.model_dump(mode="json"),
            "sampler": sweeper_config.sampler.model_dump(mode="json"),
            "sweeper_rules": default_rules(sweeper_config),
            "seeds": seeds,
            **{side: "not run" if side in sides else "not asked" for side in SIDES},
            **{f"{side}_confirmation": "not run" for side in SIDES},
        },
    )
    results.save()
    return results


def run(args: argparse.Namespace) -> int:
    sides = parse_sides(str(args.sides))
    sizes = resolve_sizes(args)
    scratch, model, threads = start_model_run(args, "peers")
    configs = study_configs(args, sizes, model, scratch)
    seeds = fresh_seeds(configs["sweeper"], sizes["seeds"])
    settings = {**sizes, "model": model, "model_given": args.model, "threads": threads}
    results = start_results(settings, configs["sweeper"], sides, seeds)
    print(
        f"[peers] {sizes['trials']} trials a side of 1-{sizes['max_epochs']} epochs on "
        f"{sizes['train_rows']} train / {sizes['validation_rows']} validation rows at "
        f"{sizes['max_length']} tokens; sides {', '.join(sides)}; each choice confirmed with "
        f"seeds {seeds}; {results.payload['device']}",
        flush=True,
    )
    started = time.perf_counter()
    try:
        run_searches(results, sides, configs, sizes, model, scratch, threads)
        run_confirmations(results, sides, configs, seeds)
    finally:
        close_staged_run(results, started, summarize, scratch, args.keep)
    return report_staged_run(results, print_tables)


def run_searches(
    results: Results,
    sides: list[str],
    configs: dict[str, Any],
    sizes: dict[str, Any],
    model: str,
    scratch: Path,
    threads: int,
) -> None:
    from benchmarks.peer_sides import run_hyperparameter_search, run_ray_tune

    task = peer_task(configs["sweeper"], sizes, model, scratch, threads)
    results.set(
        "peer_task",
        {"eval_steps": task.eval_steps, "max_evaluations (ASHA max_t)": task.max_evaluations},
    )
    runners = {
        "sweeper": lambda: run_sweeper(configs["sweeper"]),
        "hyperparameter_search": lambda: run_hyperparameter_search(task),
        "ray_tune": lambda: run_ray_tune(task),
    }
    for side in sides:
        stage = time.perf_counter()
        results.set(side, runners[side]())
        print(f"[peers] search {side}: {time.perf_counter() - stage:.0f} s", flush=True)


def run_confirmations(
    results: Results, sides: list[str], configs: dict[str, Any], seeds: list[int]
) -> None:
    for side in sides:
        search = results.payload[side]
        if search.get("chosen_params") is None:
            results.set(f"{side}_confirmation", "nothing to confirm: no trial completed")
            continue
        twin = next(
            (
                other
                for other in sides[: sides.index(side)]
                if results.payload[other].get("chosen_params") is not None
                and same_configuration(
                    results.payload[other]["chosen_params"], search["chosen_params"]
                )
            ),
            None,
        )
        stage = time.perf_counter()
        if twin is not None:
            confirmed = {**results.payload[f"{twin}_confirmation"], "same_choice_as": twin}
        else:
            if side != "sweeper":
                choice_study(configs[side], search["chosen_params"], search["chosen_value"])
            confirmed = confirm_choice(configs[side], seeds)
        results.set(f"{side}_confirmation", confirmed)
        print(
            f"[peers] confirm {side}: {time.perf_counter() - stage:.0f} s: "
            f"{spread_text(confirmed.get('objective'))}"
            f"{f' (the same choice as {twin})' if twin else ''}",
            flush=True,
        )
