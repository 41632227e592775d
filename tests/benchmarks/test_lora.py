"""The LoRA benchmark (``benchmarks/lora.py``): full fine-tuning against LoRA, a study that
searches the method, and the pruner replayed on a shared grid, run for real at its
``--quick`` size; its replay (ranking together against ranking within each method) and its
summary on made-up curves and payloads."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import optuna
import pytest

from benchmarks import available
from benchmarks.lora import ARMS, arm_changes, parse_arms, resolve_sizes
from benchmarks.lora_replay import (
    METHODS,
    SWEEPER_RULES,
    SWEEPER_RULES_NO_CHANCE,
    WithinMethod,
    curves_by_method,
    strategy_row,
)
from benchmarks.lora_summary import early_grid, lora_against_full, summarize
from benchmarks.replay import Curve, Point, Strategy, replay
from tests.support.quick_benchmarks import QUICK_RUN_TEST_TIMEOUT, run_quick


def _check_arms(payload: dict[str, Any], seed: str) -> None:
    """Both methods' studies ran and were confirmed on the same fresh seeds; LoRA trains and
    keeps far less."""
    for arm in ("full", "lora"):
        run = payload["runs"][arm][seed]
        assert len(run["trials"]) == 2 and run["examples"] > 0, arm
        assert {t["method"] for t in run["trials"]} == {arm}
        assert run["max_rss_bytes"] > run["rss_bytes_before_study"] > 0, arm
        assert all(t["save_seconds"] for t in run["trials"]), arm
        confirmed = payload["confirmations"][arm][seed]
        assert confirmed["status"] == "confirmed", arm
        assert sorted(r["seed"] for r in confirmed["runs"]) == sorted(payload["confirm_seeds"])
    arms = payload["summary"]["arms"]
    full, lora = arms["full"], arms["lora"]
    assert full["trainable_parameters"] == full["per_seed"][seed]["total_parameters"]
    assert lora["trainable_parameters"] < 0.02 * full["trainable_parameters"]
    assert lora["best_checkpoint_bytes"] < full["best_checkpoint_bytes"]
    assert lora["mean_checkpoint_bytes"] < full["mean_checkpoint_bytes"]
    for row in (full, lora):
        assert row["examples_per_second"] > 0 and row["mean_save_seconds"] > 0
        assert row["confirmed_loss"] is not None and row["confirmed_test_accuracy"] is not None
    ratios = payload["summary"]["lora_against_full"]["ratios"]
    assert ratios["trainable_parameters"] == pytest.approx(
        lora["trainable_parameters"] / full["trainable_parameters"], abs=1e-4
    )


def _check_method_and_replay(payload: dict[str, Any], seed: str, stdout: str) -> None:
    """The method study holds trials of both methods; the replay has every row, each
    method's trials counted, and agrees with the live study on the trials drawn alike."""
    method = payload["runs"]["method"][seed]
    assert {t["method"] for t in method["trials"]} == set(METHODS)
    assert payload["confirmations"]["method"][seed]["status"] == "confirmed"
    summary = payload["summary"]["method"]
    assert summary["confirmed_method"] in METHODS and len(summary["top3"]) == 2
    assert {m: summary["by_method"][m]["ran"] for m in METHODS} == {"full": 1, "lora": 1}
    replayed = payload["replay"]
    assert replayed["curves"] == 2 and replayed["curves_by_method"] == {"full": 1, "lora": 1}
    names = set(replayed["strategies"])
    assert {"none", "rank together + early stopping", SWEEPER_RULES_NO_CHANCE} <= names
    # The study file's near-chance rule is replayed even where --quick runs without it.
    assert {"rank together + near chance + early stopping", SWEEPER_RULES} <= names
    for row in replayed["strategies"].values():
        assert {m: row["by_method"][m]["trials"] for m in METHODS} == {"full": 1, "lora": 1}
    against = replayed["against_live"]
    assert against["strategy"] == SWEEPER_RULES_NO_CHANCE
    assert against["same_params_trials"] == against["agree"] == 2
    assert "SIMULATION" in stdout


@pytest.mark.timeout(QUICK_RUN_TEST_TIMEOUT)
def test_lora_quick_runs_every_arm_confirms_both_and_replays(tmp_path: Path) -> None:
    assert "lora" in available()
    done = run_quick("lora", tmp_path, "--cpu-threads", "1")
    payload = done.results("lora")
    assert payload["arms"] == list(ARMS)
    seed = "48"
    assert payload["sampler_seeds"] == {arm: [48] for arm in ARMS}
    assert len(payload["confirm_seeds"]) == 2
    assert not set(payload["confirm_seeds"]) & {42, 7, 1234}  # fresh: not the sweep's
    # Each method's own space: LoRA's learning rates 10x full's, the method arm one range each.
    spaces = payload["search_spaces"]
    assert spaces["lora"]["learning_rate"]["low"] > spaces["full"]["learning_rate"]["low"]
    assert spaces["method"]["learning_rate"] == {
        "full": spaces["full"]["learning_rate"],
        "lora": spaces["lora"]["learning_rate"],
    }
    _check_arms(payload, seed)
    _check_method_and_replay(payload, seed, done.stdout)


# --- the replay: ranking together against ranking within each method ------------------------


def _curve(trial: int, values: list[float]) -> Curve:
    return Curve(
        trial, tuple(Point(k, 32 * (k + 1), v, 0.5 + 0.1 * k) for k, v in enumerate(values))
    )


# Two full trials, then two LoRA trials that start worse than both (grid point 0) though
# LoRA's first ends best of all.
CURVES = [
    _curve(0, [0.60, 0.50, 0.40]),
    _curve(1, [0.65, 0.55, 0.45]),
    _curve(2, [0.69, 0.60, 0.35]),
    _curve(3, [0.70, 0.65, 0.50]),
]
TRIAL_METHODS = {0: "full", 1: "full", 2: "lora", 3: "lora"}


def _rank() -> optuna.pruners.BasePruner:
    from sweeper.settings.pruners import RankPruner

    # Only the best at each grid point goes on.
    return RankPruner(keep_top=1, keep_fraction=0.0, n_warmup_steps=0)


def _replayed(pruner: Any) -> dict[str, Any]:
    result = replay(CURVES, Strategy("s", pruner))
    return strategy_row(result, CURVES, TRIAL_METHODS)


def test_ranking_together_stops_the_slow_starting_method_and_loses_the_best() -> None:
    row = _replayed(_rank)
    outcomes = {t["trial"]: t["outcome"] for t in row["trials"]}
    assert outcomes == {0: "complete", 1: "pruned", 2: "pruned", 3: "pruned"}
    assert row["by_method"]["full"]["stopped"] == 1 and row["by_method"]["lora"]["stopped"] == 2
    assert row["winner"] == 2 and row["winner_method"] == "lora"
    assert row["winner_kept"] is False and row["by_method"]["lora"]["best_kept"] is False
    assert row["by_method"]["full"]["best_kept"] is True
    assert row["best_trial"] == 0 and row["best_method"] == "full"
    assert row["by_method"]["lora"]["held_best_trial"] is None


def test_ranking_within_each_method_runs_sweepers_own_reading_and_keeps_both_bests() -> None:
    methods = [TRIAL_METHODS[c.trial] for c in CURVES]
    distribution = optuna.distributions.CategoricalDistribution(list(METHODS))
    row = _replayed(lambda: WithinMethod(_rank(), methods, distribution))
    outcomes = {t["trial"]: t["outcome"] for t in row["trials"]}
    # The first LoRA trial is ranked among LoRA trials alone: the first of them, it goes on.
    assert outcomes == {0: "complete", 1: "pruned", 2: "complete", 3: "pruned"}
    assert row["winner_kept"] is True and row["best_trial"] == 2 and row["best_method"] == "lora"
    for method in METHODS:
        by = row["by_method"][method]
        assert by["best_kept"] is True and by["stopped"] == 1 and by["trials"] == 2
    lora = row["by_method"]["lora"]
    assert lora["examples"] == 96 + 32 and lora["examples_unpruned"] == 2 * 96
    assert lora["held_best_trial"] == 2 and lora["held_best_value"] == pytest.approx(0.35)
    assert row["examples"] == 96 + 32 + 96 + 32 and row["ratio"] == pytest.approx(
        256 / 384, abs=1e-4
    )


def test_curves_by_method_gives_each_grid_points_median_per_method() -> None:
    rows = curves_by_method(CURVES, TRIAL_METHODS)
    assert [row["grid"] for row in rows] == [0, 1, 2]
    first = rows[0]
    assert first["full"]["trials"] == 2 and first["full"]["median_value"] == pytest.approx(0.625)
    assert first["lora"]["median_value"] == pytest.approx(0.695)
    assert first["lora"]["examples"] == 32 and first["lora"]["median_accuracy"] == 0.5


# --- the summary ------------------------------------------------------------------------------


def _trial(number: int, method: str, **fields: Any) -> dict[str, Any]:
    base = {
        "number": number,
        "method": method,
        "state": "COMPLETE",
        "outcome": "complete",
        "value": 0.5,
        "examples": 100,
        "train_seconds": 10.0,
        "checkpoint_bytes": 1000,
        "save_seconds": [0.5],
        "trainable_parameters": 100,
        "total_parameters": 1000,
    }
    return base | fields


def _run(trials: list[dict[str, Any]], best: int, **fields: Any) -> dict[str, Any]:
    return {
        "wall_seconds": 100.0,
        "process_seconds": 110.0,
        "max_rss_bytes": 2000,
        "rss_bytes_before_study": 500,
        "best_trial": best,
        "chosen_trial": best,
        "chosen_value": 0.5,
        "chosen_method": trials[best]["method"],
        "states": {"COMPLETE": len(trials)},
        "trials": trials,
    } | fields


def _confirmed(mean: float, std: float, method: str | None = None) -> dict[str, Any]:
    return {
        "status": "confirmed",
        "config": {} if method is None else {"method": method},
        "objective": {"mean": mean, "std": std},
        "accuracy": {"mean": 0.8, "std": 0.01},
        "test_accuracy": {"mean": 0.79, "std": 0.01},
    }


def test_summary_compares_lora_with_full_side_by_side() -> None:
    full = [
        _trial(0, "full", trainable_parameters=1000),
        _trial(1, "full", trainable_parameters=1000),
    ]
    lora = [
        _trial(0, "lora", train_seconds=4.0, checkpoint_bytes=10, save_seconds=[0.1, 0.3]),
        _trial(1, "lora", train_seconds=6.0, checkpoint_bytes=30, save_seconds=[]),
    ]
    payload = {
        "runs": {
            "full": {"42": _run(full, 0), "43": _run(full, 1, wall_seconds=300.0)},
            "lora": {"42": _run(lora, 1, wall_seconds=50.0, max_rss_bytes=1000), "43": "not run"},
        },
        "confirmations": {
            "full": {"42": _confirmed(0.50, 0.03), "43": _confirmed(0.52, 0.03)},
            "lora": {"42": _confirmed(0.45, 0.04), "43": "not run"},
        },
    }
    summary = summarize(payload)
    arms = summary["arms"]
    assert arms["full"]["runs"] == 2 and arms["lora"]["runs"] == 1
    assert arms["full"]["wall_seconds"] == pytest.approx(200.0)
    assert arms["full"]["examples_per_second"] == pytest.approx(10.0)
    assert arms["lora"]["examples_per_second"] == pytest.approx(200 / 10.0)
    assert arms["lora"]["best_checkpoint_bytes"] == 30 and arms["lora"]["mean_save_seconds"] == 0.2
    against = summary["lora_against_full"]
    ratios = against["ratios"]
    assert ratios["wall_seconds"] == pytest.approx(0.25)
    assert ratios["examples_per_second"] == pytest.approx(2.0)
    assert ratios["trainable_parameters"] == pytest.approx(0.1)
    assert ratios["mean_checkpoint_bytes"] == pytest.approx(20 / 1000)
    assert ratios["max_rss_bytes"] == pytest.approx(0.5)
    assert ratios["rss_above_start_bytes"] == pytest.approx(500 / 1500, abs=1e-4)
    # Quality is compared on the seeds both arms confirmed (42); lora's 43 chose nothing.
    assert against["paired_seeds"] == ["42"]
    assert against["unconfirmed_runs"] == {"full": [], "lora": []}
    assert against["confirmed_loss_difference"] == pytest.approx(0.45 - 0.50)
    assert against["noise"] == pytest.approx((0.5 * (0.03**2 + 0.04**2)) ** 0.5)
    assert against["better"] == "lora" and against["within_noise"] is False
    assert arms["full"]["trial_outcomes"]["complete"] == 4
    assert arms["full"]["trainable_parameters_range"] == [1000, 1000]


def _arm(rows: dict[str, tuple[float | None, float | None]]) -> dict[str, Any]:
    """An arm summary's per-seed confirmed loss and its std (None: nothing chosen)."""
    return {
        "per_seed": {
            seed: {
                "confirmed_loss": mean,
                "confirmed_loss_std": std,
                "confirmed_accuracy": None if mean is None else 1.0 - mean,
            }
            for seed, (mean, std) in rows.items()
        }
    }


def test_a_difference_within_the_noise_is_said_so_and_unchosen_runs_named() -> None:
    lora = _arm({"42": (0.50, 0.02), "43": (None, None)})
    full = _arm({"42": (0.49, 0.02), "43": (0.70, 0.02)})
    against = lora_against_full(lora, full)
    # Seed 43: lora chose nothing, so full's weak 43 choice is not averaged against it.
    assert against["paired_seeds"] == ["42"] and against["unconfirmed_runs"]["lora"] == ["43"]
    assert against["confirmed_loss_difference"] == pytest.approx(0.01)
    assert against["better"] == "full" and against["within_noise"] is True
    assert against["accuracy_difference"] == pytest.approx(-0.01)
    assert against["ratios"]["wall_seconds"] is None  # not measured: no ratio
    # A maximized objective: higher is better.
    assert lora_against_full(lora, full, "maximize")["better"] == "lora"
    nothing = lora_against_full(_arm({"43": (None, None)}), full)
    assert nothing["paired_seeds"] == [] and "better" not in nothing


def test_early_grid_gives_each_arms_and_methods_first_points() -> None:
    def trial(method: str, values: list[float]) -> dict[str, Any]:
        curve = [
            {"grid": k + 1, "examples": 96 * (k + 1), "value": v, "accuracy": 0.5}
            for k, v in enumerate(values)
        ]
        return {"method": method, "curve": curve}

    runs = {
        "full": {"42": {"trials": [trial("full", [0.69, 0.60]), trial("full", [0.67])]}},
        "method": {"42": {"trials": [trial("lora", [0.70, 0.69, 0.68])]}, "43": "not run"},
    }
    grid = early_grid(runs, points=3)
    assert set(grid) == {"full", "method"} and set(grid["method"]) == {"lora"}
    first, second, third = grid["full"]["full"]
    assert first["trials"] == 2 and first["median_value"] == pytest.approx(0.68)
    assert second["trials"] == 1 and second["examples"] == 192
    assert third["trials"] == 0 and third["median_value"] is None
    assert grid["method"]["lora"][2]["median_value"] == pytest.approx(0.68)


def test_summary_of_the_method_study_counts_each_methods_trials() -> None:
    trials = [
        _trial(0, "lora", value=0.45),
        _trial(1, "full", state="PRUNED", outcome="pruned", value=None),
        _trial(2, "full", value=0.40, outcome="early_stopped"),
        _trial(3, "lora", state="PRUNED", outcome="near_chance", value=None),
        _trial(4, "lora", value=0.60),
        _trial(5, "full", value=0.50),
    ]
    payload = {
        "runs": {"method": {"42": _run(trials, 2)}},
        "confirmations": {"method": {"42": _confirmed(0.41, 0.01, "full")}},
    }
    method = summarize(payload)["method"]
    assert [(t["trial"], t["method"]) for t in method["top3"]] == [
        (2, "full"),
        (0, "lora"),
        (5, "full"),
    ]
    assert method["chosen_method"] == "full" and method["confirmed_method"] == "full"
    full, lora = method["by_method"]["full"], method["by_method"]["lora"]
    assert (full["ran"], full["pruned"], full["pruned_by_pruner"], full["complete"]) == (3, 1, 1, 2)
    assert full["early_stopped"] == 1 and full["best_value"] == pytest.approx(0.40)
    assert (lora["ran"], lora["pruned"], lora["near_chance"], lora["complete"]) == (3, 1, 1, 2)


def test_arms_sizes_and_study_changes() -> None:
    assert parse_arms("replay, full") == ["full", "replay"]
    with pytest.raises(SystemExit, match="--arms"):
        parse_arms("full,qlora")
    quick = resolve_sizes(argparse.Namespace(quick=True))
    assert quick["trials"] == 2 and quick["seeds_per_arm"] == 1 and quick["confirm_seeds"] == 2
    assert quick["first_sampler_seed"] == 48
    full = resolve_sizes(argparse.Namespace(quick=False))
    assert full["seeds_per_arm"] == 2 and full["first_sampler_seed"] == 42
    with pytest.raises(SystemExit, match="--confirm-seeds"):
        resolve_sizes(argparse.Namespace(quick=False, confirm_seeds=1))
    rates = {"full": {"low": 1e-5}, "lora": {"low": 1e-4}}
    assert arm_changes("full", 43, rates, quick=False) == {"sampler.seed": 43}
    method = arm_changes("method", 42, rates, quick=False)
    assert method["model.method"] == {"choices": ["full", "lora"]}
    assert method["search_space.learning_rate"] == rates and "pruner" not in method
    recorded = arm_changes("replay", 42, rates, quick=False)
    assert recorded["pruner"] == {"type": "none"} and recorded["early_stopping.patience"] is None
    assert recorded["near_chance.at_fraction"] is None
    assert arm_changes("lora", 42, rates, quick=True)["near_chance.at_fraction"] is None
