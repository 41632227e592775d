"""The LoRA benchmark's summary (``benchmarks.lora``): each arm's costs and confirmed
quality, LoRA's against full fine-tuning's as ratios, the method study's trials by method,
the replay's rows; and the printed tables. Pure functions of the results JSON, so a stored
run can be summarized again."""

from __future__ import annotations

import math
import statistics
from typing import Any

from benchmarks.common import spread_text
from sweeper.settings.hyperparameters import METHODS

NAME = "lora"

# A run's costs compared between the arms: LoRA's mean over full's.
RATIO_KEYS = (
    "wall_seconds",
    "examples_per_second",
    "trainable_parameters",
    "best_checkpoint_bytes",
    "mean_checkpoint_bytes",
    "mean_save_seconds",
    "max_rss_bytes",
    "rss_above_start_bytes",
)


def _mean(values: Any) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _ratio(value: Any, base: Any) -> float | None:
    if value is None or base is None or not base:
        return None
    return round(float(value) / float(base), 4)


def trial_costs(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Trials' training throughput (their examples over their training seconds), checkpoint
    bytes and seconds per save, and trainable parameters (smallest and largest)."""
    examples = sum(int(t.get("examples") or 0) for t in trials)
    seconds = sum(float(t.get("train_seconds") or 0.0) for t in trials)
    checkpoints = [t["checkpoint_bytes"] for t in trials if t.get("checkpoint_bytes")]
    saves = [float(s) for t in trials for s in t.get("save_seconds") or []]
    trainable = [t["trainable_parameters"] for t in trials if t.get("trainable_parameters")]
    return {
        "trials": len(trials),
        "examples": examples,
        "train_seconds": round(seconds, 3),
        "examples_per_second": None if not seconds else round(examples / seconds, 3),
        "mean_checkpoint_bytes": _mean(checkpoints),
        "saves": len(saves),
        "mean_save_seconds": _mean(saves),
        "trainable_parameters_range": [min(trainable), max(trainable)] if trainable else None,
        "total_parameters": next(
            (t["total_parameters"] for t in trials if t.get("total_parameters")), None
        ),
    }


def run_costs(run: dict[str, Any]) -> dict[str, Any]:
    """One study run's costs: its wall time, :func:`trial_costs`, the kept checkpoint and
    trainable parameters of its best trial, its process's peak memory (and that peak above
    the memory it held before its first trial)."""
    trials = run.get("trials") or []
    best = next((t for t in trials if t["number"] == run.get("best_trial")), None)
    peak, start = run.get("max_rss_bytes"), run.get("rss_bytes_before_study")
    return {
        "wall_seconds": run.get("wall_seconds"),
        "process_seconds": run.get("process_seconds"),
        **trial_costs(trials),
        "trainable_parameters": None if best is None else best.get("trainable_parameters"),
        "best_checkpoint_bytes": None if best is None else best.get("checkpoint_bytes"),
        "max_rss_bytes": peak,
        "rss_above_start_bytes": None if peak is None or start is None else peak - start,
        "cuda_max_allocated_bytes": run.get("cuda_max_allocated_bytes"),
        "states": run.get("states"),
    }


def _confirmed(confirmation: Any) -> dict[str, Any]:
    """A confirmation's means (validation objective and accuracy, test accuracy and loss)."""
    confirmation = confirmation if isinstance(confirmation, dict) else {}

    def part(key: str) -> dict[str, Any]:
        value = confirmation.get(key)
        return value if isinstance(value, dict) else {}

    return {
        "confirmed_loss": part("objective").get("mean"),
        "confirmed_loss_std": part("objective").get("std"),
        "confirmed_accuracy": part("accuracy").get("mean"),
        "confirmed_test_accuracy": part("test_accuracy").get("mean"),
        "confirmed_test_loss": part("test_loss").get("mean"),
    }


def arm_summary(runs: Any, confirmations: Any) -> dict[str, Any]:
    """An arm's runs (per sampler seed) and their means; throughput over all its trials."""
    ran = {seed: run for seed, run in (runs or {}).items() if isinstance(run, dict)}
    ran = {seed: run for seed, run in ran.items() if "status" not in run}
    confirmations = confirmations if isinstance(confirmations, dict) else {}
    per_seed = {
        seed: {
            **run_costs(run),
            "chosen_trial": run.get("chosen_trial"),
            "chosen_value": run.get("chosen_value"),
            **_confirmed(confirmations.get(seed)),
        }
        for seed, run in ran.items()
    }
    rows = list(per_seed.values())
    every_trial = [t for run in ran.values() for t in run.get("trials") or []]
    costs = trial_costs(every_trial)
    means = {
        key: _mean(row[key] for row in rows)
        for key in (
            "wall_seconds",
            "process_seconds",
            "trainable_parameters",
            "best_checkpoint_bytes",
            "mean_checkpoint_bytes",
            "mean_save_seconds",
            "max_rss_bytes",
            "rss_above_start_bytes",
            "confirmed_loss",
            "confirmed_accuracy",
            "confirmed_test_accuracy",
        )
    }
    stds = [row["confirmed_loss_std"] for row in rows if row["confirmed_loss_std"] is not None]
    return {
        "runs": len(rows),
        "runs_without_choice": [
            seed for seed, row in per_seed.items() if row["chosen_trial"] is None
        ],
        "trial_outcomes": {
            outcome: sum(1 for t in every_trial if t.get("outcome") == outcome)
            for outcome in ("complete", "early_stopped", "pruned", "near_chance", "diverged")
        },
        **means,
        **{
            key: costs[key]
            for key in ("examples_per_second", "trainable_parameters_range", "total_parameters")
        },
        "confirmed_loss_noise": math.sqrt(statistics.fmean(s * s for s in stds)) if stds else None,
        "per_seed": per_seed,
    }


def lora_against_full(
    lora: dict[str, Any], full: dict[str, Any], direction: str = "minimize"
) -> dict[str, Any]:
    """LoRA's means over full fine-tuning's, side by side (ratios), and the confirmed
    quality compared run by run: on the sampler seeds where both arms' runs chose a trial
    and had it confirmed, the mean difference of their confirmed objectives (LoRA minus full),
    the seed noise (pooled std of those confirmations) and which method's choices are
    better. A run that chose nothing (every trial stopped) is named, never averaged in."""
    ratios = {key: _ratio(lora.get(key), full.get(key)) for key in RATIO_KEYS}
    ours, theirs = lora.get("per_seed") or {}, full.get("per_seed") or {}
    seeds = [
        seed
        for seed in theirs
        if seed in ours
        and ours[seed]["confirmed_loss"] is not None
        and theirs[seed]["confirmed_loss"] is not None
    ]
    result: dict[str, Any] = {
        "ratios": ratios,
        "paired_seeds": seeds,
        "unconfirmed_runs": {
            arm: [seed for seed, row in rows.items() if row["confirmed_loss"] is None]
            for arm, rows in (("full", theirs), ("lora", ours))
        },
    }
    if not seeds:
        return result
    difference = statistics.fmean(
        ours[s]["confirmed_loss"] - theirs[s]["confirmed_loss"] for s in seeds
    )
    stds = [
        rows[s]["confirmed_loss_std"]
        for rows in (ours, theirs)
        for s in seeds
        if rows[s]["confirmed_loss_std"] is not None
    ]
    noise = math.sqrt(statistics.fmean(n * n for n in stds)) if stds else None
    accuracies = [
        ours[s]["confirmed_accuracy"] - theirs[s]["confirmed_accuracy"]
        for s in seeds
        if ours[s]["confirmed_accuracy"] is not None and theirs[s]["confirmed_accuracy"] is not None
    ]
    sign = -1 if direction == "maximize" else 1
    return result | {
        "confirmed_loss_difference": difference,
        "noise": noise,
        "better": "tie" if difference == 0 else "lora" if sign * difference < 0 else "full",
        "within_noise": None if noise is None else abs(difference) <= noise,
        "accuracy_difference": statistics.fmean(accuracies) if accuracies else None,
    }


def early_grid(runs: dict[str, Any], points: int = 4) -> dict[str, dict[str, list[Any]]]:
    """Every study's trials at the first ``points`` grid points, by arm and method: how many
    reached each, their median validation value and accuracy there. At the first point every
    trial is there (nothing is stopped before it); later points hold the trials not stopped
    yet. The live measurement of how each method starts on the shared grid."""
    found: dict[str, dict[str, list[Any]]] = {}
    for arm in ("full", "lora", "method"):
        trials = [
            t
            for run in (runs.get(arm) or {}).values()
            if isinstance(run, dict)
            for t in run.get("trials") or []
        ]
        for method in METHODS:
            own = [t for t in trials if t.get("method") == method]
            if not own:
                continue
            rows = []
            for grid in range(1, points + 1):
                there = [p for t in own for p in t.get("curve") or [] if p.get("grid") == grid]
                accuracies = [p["accuracy"] for p in there if p.get("accuracy") is not None]
                rows.append(
                    {
                        "grid": grid,
                        "examples": there[0]["examples"] if there else None,
                        "trials": len(there),
                        "median_value": statistics.median(p["value"] for p in there)
                        if there
                        else None,
                        "median_accuracy": statistics.median(accuracies) if accuracies else None,
                    }
                )
            found.setdefault(arm, {})[method] = rows
    return found


def method_trials(trials: list[dict[str, Any]], sign: int = 1) -> dict[str, dict[str, Any]]:
    """A mixed study's trials by method: how many ran, were pruned (by the pruner, as near
    chance, diverged), completed (early-stopped among them); their best value (``sign`` -1:
    a maximized metric); their costs."""
    rows: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        own = [t for t in trials if t.get("method") == method]
        values = [t["value"] for t in own if t.get("value") is not None]
        rows[method] = {
            "ran": len(own),
            "pruned": sum(1 for t in own if t["state"] == "PRUNED"),
            "pruned_by_pruner": sum(1 for t in own if t.get("outcome") == "pruned"),
            "near_chance": sum(1 for t in own if t.get("outcome") == "near_chance"),
            "diverged": sum(1 for t in own if t.get("outcome") == "diverged"),
            "complete": sum(1 for t in own if t["state"] == "COMPLETE"),
            "early_stopped": sum(1 for t in own if t.get("outcome") == "early_stopped"),
            "best_value": min(values, key=lambda v: sign * v) if values else None,
            **trial_costs(own),
        }
    return rows


def method_summary(
    run: Any, confirmation: Any, direction: str = "minimize"
) -> dict[str, Any] | None:
    """The method study: its top 3 trials by value and their methods, the chosen trial's
    method and the confirmed winner's, and its trials by method."""
    if not isinstance(run, dict) or "status" in run:
        return None
    trials = run.get("trials") or []
    sign = -1 if direction == "maximize" else 1
    scored = sorted(
        (t for t in trials if t.get("value") is not None), key=lambda t: sign * t["value"]
    )
    confirmed = confirmation if isinstance(confirmation, dict) else {}
    chosen = confirmed.get("config")
    winner: dict[str, Any] = chosen if isinstance(chosen, dict) else {}
    return {
        "top3": [
            {"trial": t["number"], "method": t.get("method"), "value": t["value"]}
            for t in scored[:3]
        ],
        "chosen_method": run.get("chosen_method"),
        "confirmed_method": winner.get("method"),
        **_confirmed(confirmation),
        "by_method": method_trials(trials, sign),
    }


def replay_summary(replayed: Any) -> dict[str, Any] | None:
    """The replay's rows in short: per strategy, the examples against no rule's, each
    method's trials stopped, and whether the overall best and each method's best kept
    their best evaluation."""
    if not isinstance(replayed, dict):
        return None
    rows = {}
    for name, row in replayed["strategies"].items():
        by = row["by_method"]
        rows[name] = {
            "ratio": row["ratio"],
            "examples": row["examples"],
            **{f"{m}_stopped": by[m]["stopped"] for m in METHODS},
            **{f"{m}_trials": by[m]["trials"] for m in METHODS},
            "winner_kept": row["winner_kept"],
            **{f"{m}_best_kept": by[m]["best_kept"] for m in METHODS},
            "best_method": row["best_method"],
            "best_trial": row["best_trial"],
            "best_value": row["best_value"],
        }
    against = replayed.get("against_live") or {}
    return {
        "strategies": rows,
        "against_live": {k: against.get(k) for k in ("strategy", "same_params_trials", "agree")},
    }


def summarize(payload: dict[str, Any]) -> dict[str, Any]:
    runs, confirmations = payload.get("runs") or {}, payload.get("confirmations") or {}
    arms = {
        arm: arm_summary(runs.get(arm), confirmations.get(arm)) for arm in METHODS if arm in runs
    }
    summary: dict[str, Any] = {"arms": arms, "early_grid": early_grid(runs)}
    if all(arm in arms and arms[arm]["runs"] for arm in METHODS):
        summary["lora_against_full"] = lora_against_full(
            arms["lora"], arms["full"], payload.get("direction", "minimize")
        )
    method_runs = runs.get("method") or {}
    if method_runs:
        seed = next(iter(method_runs))
        confirmed = (confirmations.get("method") or {}).get(seed)
        found = method_summary(method_runs[seed], confirmed, payload.get("direction", "minimize"))
        if found is not None:
            summary["method"] = found
    replayed = replay_summary(payload.get("replay"))
    if replayed is not None:
        summary["replay"] = replayed
    return summary


# --- the tables -------------------------------------------------------------------------------


def _number(value: Any, digits: int = 0, scale: float = 1.0) -> str:
    return "-" if value is None else f"{float(value) / scale:,.{digits}f}"


def print_arms(summary: dict[str, Any]) -> None:
    arms = summary.get("arms") or {}
    print(f"\n[{NAME}] the arms (means over their runs; each study in its own process)")
    print(
        f"  {'arm':<6}{'runs':>5}{'wall s':>8}{'train ex/s':>11}{'trainable':>12}"
        f"{'best ckpt MB':>13}{'mean ckpt MB':>13}{'s/save':>8}{'peak RSS MB':>12}"
        f"{'above start':>12}  {'confirmed loss':<18}{'accuracy':>9}{'test acc':>9}"
    )
    mb = 2**20
    for arm, row in arms.items():
        print(
            f"  {arm:<6}{row['runs']:>5}{_number(row['wall_seconds']):>8}"
            f"{_number(row['examples_per_second'], 1):>11}{_number(row['trainable_parameters']):>12}"
            f"{_number(row['best_checkpoint_bytes'], 2, mb):>13}"
            f"{_number(row['mean_checkpoint_bytes'], 2, mb):>13}"
            f"{_number(row['mean_save_seconds'], 3):>8}{_number(row['max_rss_bytes'], 0, mb):>12}"
            f"{_number(row['rss_above_start_bytes'], 0, mb):>12}  "
            f"{_number(row['confirmed_loss'], 4):<18}{_number(row['confirmed_accuracy'], 3):>9}"
            f"{_number(row['confirmed_test_accuracy'], 3):>9}"
        )
    for arm, row in arms.items():
        outcomes = ", ".join(
            f"{n} {o.replace('_', ' ')}" for o, n in row["trial_outcomes"].items() if n
        )
        span = row["trainable_parameters_range"]
        print(
            f"  {arm}: trials {outcomes}; trainable parameters "
            f"{'-' if span is None else f'{span[0]:,}-{span[1]:,}'}"
            + (
                f"; nothing chosen at s{', s'.join(row['runs_without_choice'])}"
                if row["runs_without_choice"]
                else ""
            )
        )
    against = summary.get("lora_against_full")
    if against:
        print_against(against)


def print_against(against: dict[str, Any]) -> None:
    """LoRA against full: the ratios, and the confirmed quality paired by sampler seed."""
    ratios = ", ".join(f"{key} {_number(value, 4)}" for key, value in against["ratios"].items())
    print(f"  lora / full: {ratios}")
    if "better" not in against:
        print("  confirmed quality: no sampler seed where both arms confirmed a choice")
        return
    within = against["within_noise"]
    print(
        f"  confirmed loss on the seeds both confirmed (s{', s'.join(against['paired_seeds'])}): "
        f"lora - full = {against['confirmed_loss_difference']:+.4f} (seed noise "
        f"{_number(against['noise'], 4)}): {against['better']} better"
        f"{'' if within is None else ', within the noise' if within else ', beyond the noise'}"
    )


def print_early_grid(grid: dict[str, dict[str, list[Any]]]) -> None:
    print(
        f"\n[{NAME}] the first grid points, live: median validation loss / accuracy (trials there)"
    )
    for arm, methods in grid.items():
        for method, rows in methods.items():
            cells = "  ".join(
                f"{row['examples'] or '-'} ex: {_number(row['median_value'], 4)} / "
                f"{_number(row['median_accuracy'], 3)} ({row['trials']})"
                for row in rows
            )
            print(f"  {arm:<7}{method:<6}{cells}")


def chosen_text(run: dict[str, Any]) -> str:
    """A run's choice in words: its trial, method and value, or why there is none."""
    if "status" in run:
        return str(run["status"])
    if run.get("chosen_trial") is None:
        return "nothing chosen: every trial was stopped"
    return (
        f"chosen trial #{run['chosen_trial']} ({run['chosen_method']}) "
        f"{_number(run['chosen_value'], 4)}"
    )


def print_runs(payload: dict[str, Any]) -> None:
    print(f"\n[{NAME}] the runs and their confirmed choices")
    for arm, by_seed in (payload.get("runs") or {}).items():
        for seed, run in by_seed.items():
            if not isinstance(run, dict) or "status" in run:
                print(f"  {arm:<7}s{seed}: {run if not isinstance(run, dict) else run['status']}")
                continue
            confirmed = ((payload.get("confirmations") or {}).get(arm) or {}).get(seed)
            confirmed = confirmed if isinstance(confirmed, dict) else {}
            states = ", ".join(f"{n} {s.lower()}" for s, n in (run.get("states") or {}).items())
            print(
                f"  {arm:<7}s{seed}: {run['wall_seconds']:.0f} s, {run['examples']} examples, "
                f"{states}; {chosen_text(run)}; confirmed loss "
                f"{spread_text(confirmed.get('objective'))}, accuracy "
                f"{spread_text(confirmed.get('accuracy'))}, test accuracy "
                f"{spread_text(confirmed.get('test_accuracy'))}"
            )


def print_method(method: dict[str, Any]) -> None:
    top = ", ".join(f"#{t['trial']} {t['method']} {t['value']:.4f}" for t in method["top3"])
    print(
        f"\n[{NAME}] the method study: top 3 {top}; chosen {method['chosen_method']}, "
        f"confirmed winner {method['confirmed_method']}"
    )
    for name, row in method["by_method"].items():
        print(
            f"  {name:<5} {row['ran']} ran, {row['pruned']} pruned ({row['pruned_by_pruner']} by "
            f"the pruner, {row['near_chance']} near chance), {row['complete']} complete "
            f"({row['early_stopped']} early-stopped); best {_number(row['best_value'], 4)}; "
            f"{_number(row['examples_per_second'], 1)} train ex/s"
        )


def print_replay(replayed: dict[str, Any]) -> None:
    print(
        f"\n[{NAME}] the pruner on a shared grid: a SIMULATION (the method study's unpruned "
        "curves replayed, no training)"
    )
    print(
        f"  {'strategy':<56}{'examples':>9}{'x none':>8}{'full stopped':>14}{'lora stopped':>14}"
        f"{'best kept':>11}{'full best':>11}{'lora best':>11}  held best"
    )
    for name, row in replayed["strategies"].items():
        print(
            f"  {name:<56}{row['examples']:>9}{row['ratio']:>8.3f}"
            f"{row['full_stopped']:>9} of {row['full_trials']:<2}"
            f"{row['lora_stopped']:>9} of {row['lora_trials']:<2}"
            f"{'yes' if row['winner_kept'] else 'NO':>11}"
            f"{_kept(row['full_best_kept']):>11}{_kept(row['lora_best_kept']):>11}  "
            + (
                "-"
                if row.get("best_trial") is None
                else f"#{row['best_trial']} {row['best_method']} {row['best_value']:.4f}"
            )
        )
    against = replayed.get("against_live") or {}
    if against.get("strategy"):
        print(
            f"  against the live method study ({against['strategy']}): {against['agree']} of "
            f"{against['same_params_trials']} trials drawn alike agree on outcome and examples"
        )


def _kept(value: Any) -> str:
    return "-" if value is None else "yes" if value else "NO"


def print_tables(payload: dict[str, Any]) -> None:
    print_runs(payload)
    summary = payload.get("summary") or {}
    if summary.get("arms"):
        print_arms(summary)
    if summary.get("early_grid"):
        print_early_grid(summary["early_grid"])
    if summary.get("method"):
        print_method(summary["method"])
    if summary.get("replay"):
        print_replay(summary["replay"])
