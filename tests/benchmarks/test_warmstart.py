"""The warm-start benchmark (``benchmarks/warmstart.py``): a source study, then the cold,
enqueue and enqueue + sampler arms on a target task, run for real at its ``--quick`` size,
and its summary's rules (and when a run first held its choice) on made-up payloads."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks import available
from benchmarks.peers import same_configuration
from benchmarks.warmstart import (
    ARMS,
    WARM_ARMS,
    _narrowed,
    chosen_at,
    parse_arms,
    resolve_sizes,
    summarize,
)
from tests.support.quick_benchmarks import QUICK_RUN_TEST_TIMEOUT, run_quick

SOURCE_TRIAL = re.compile(r"warmstart-source #(\d+)")


def _check_warm_trials(run: dict[str, Any], source: dict[str, Any], top: int) -> None:
    """A warm run's marked trials: the first ``top`` it ran, each the configuration of the
    source trial its mark names, those the source's best."""
    marked = [t for t in run["trials"] if t["warm_start_source"]]
    assert len(marked) == run["warm_start_trials"] == top, run["study"]
    assert sorted(t["number"] for t in marked) == list(range(top)), run["study"]
    by_number = {t["number"]: t for t in source["trials"]}
    complete = [t for t in source["trials"] if t["state"] == "COMPLETE"]
    best = sorted(complete, key=lambda t: t["value"])[:top]
    for trial in marked:
        found = SOURCE_TRIAL.search(trial["warm_start_source"])
        assert found, trial["warm_start_source"]
        origin = by_number[int(found.group(1))]
        assert same_configuration(trial["params"], origin["params"]), trial["number"]
        assert any(same_configuration(trial["params"], b["params"]) for b in best)
    chosen = run["trials"][run["chosen_trial"]]
    assert run["chosen_is_warm_start"] is bool(chosen["warm_start_source"])
    assert run["chosen_warm_start_source"] == chosen["warm_start_source"]
    assert isinstance(run["study_warm_start"], dict)
    assert {"sources", "enqueued"} <= set(run["study_warm_start"])


@pytest.mark.timeout(QUICK_RUN_TEST_TIMEOUT)
def test_warmstart_quick_runs_every_arm_and_confirms_on_the_same_seeds(tmp_path: Path) -> None:
    assert "warmstart" in available()
    done = run_quick("warmstart", tmp_path, "--cpu-threads", "1")
    payload = done.results("warmstart")
    seeds, sampler_seeds = payload["confirm_seeds"], payload["sampler_seeds"]
    assert len(seeds) == 2 and not set(seeds) & {42, 7, 1234}  # fresh: not the sweep's
    assert sampler_seeds == [43, 44] and payload["arms"] == list(ARMS)
    differs = payload["task"]["differs"]
    assert {"model.max_length", "dataset.split_seed", "dataset.text_column"} <= set(differs)
    assert differs["dataset.text_column"] == {"source": "review", "target": "review_end"}
    assert differs["dataset.split_seed"] == {"source": 42, "target": 7}
    assert "model.name" not in differs and "search_space.learning_rate.low" not in differs
    source = payload["source"]
    assert source["study"] == "warmstart-source" and len(source["trials"]) == 3
    top = payload["settings"]["top"]
    for arm in ARMS:
        for seed in sampler_seeds:
            run = payload["runs"][arm][str(seed)]
            assert run["sampler_seed"] == seed and len(run["trials"]) == 3, arm
            assert 0 < run["chosen_at_seconds"] <= run["wall_seconds"] + 1, arm
            assert 0 < run["chosen_at_examples"] <= run["examples"], arm
            if arm == "cold":
                assert run["warm_start_trials"] == 0 and run["study_warm_start"] is None
                assert not any(t["warm_start_source"] for t in run["trials"])
            else:
                _check_warm_trials(run, source, top)
            confirmed = payload["confirmations"][arm][str(seed)]
            assert sorted(r["seed"] for r in confirmed["runs"]) == sorted(seeds), arm
            assert same_configuration(confirmed["config"], run["chosen_params"]), arm
    # The narrow arm searched a space inside the study file's, around the source's best.
    narrowed, original = payload["narrowed_search_space"], payload["search_space"]
    low, high = narrowed["learning_rate"]["low"], narrowed["learning_rate"]["high"]
    assert original["learning_rate"]["low"] <= low < high <= original["learning_rate"]["high"]
    assert (high - low) < (original["learning_rate"]["high"] - original["learning_rate"]["low"])
    summary = payload["summary"]
    for arm in WARM_ARMS:
        against = summary["against_cold"][arm]
        means = summary["arms"][arm]["mean_chosen_at_seconds"]
        cold = summary["arms"]["cold"]["mean_chosen_at_seconds"]
        assert against["time_ratio"] == pytest.approx(means / cold, abs=1e-4)
        assert set(against["time_ratio_per_seed"]) == {str(s) for s in sampler_seeds}
    assert summary["time_ratio"] == summary["against_cold"]["enqueue_sampler"]["time_ratio"]
    assert isinstance(summary["time_met"], bool) and isinstance(summary["quality_met"], bool)
    assert "[warmstart] target: enqueue_sampler's time to its final choice" in done.stdout


def _run(at: float, examples: int, mean: float, std: float) -> tuple[dict[str, Any], ...]:
    run = {
        "wall_seconds": at * 1.5,
        "examples": examples * 2,
        "chosen_at_seconds": at,
        "chosen_at_examples": examples,
        "warm_start_trials": 0,
        "chosen_is_warm_start": False,
    }
    return run, {"objective": {"mean": mean, "std": std, "n": 3}}


def _payload(arms: dict[str, list[tuple[float, int, float, float]]]) -> dict[str, Any]:
    payload: dict[str, Any] = {"runs": {}, "confirmations": {}, "direction": "minimize"}
    for arm, rows in arms.items():
        made = {str(43 + i): _run(*row) for i, row in enumerate(rows)}
        payload["runs"][arm] = {seed: pair[0] for seed, pair in made.items()}
        payload["confirmations"][arm] = {seed: pair[1] for seed, pair in made.items()}
    return payload


COLD = [(100.0, 2000, 0.50, 0.02), (120.0, 2400, 0.52, 0.02), (80.0, 1600, 0.51, 0.02)]


@pytest.mark.parametrize(
    ("sampler_arm", "expected"),
    [
        # 0.4x the cold arm's mean time, confirmed as good: met
        (
            [(40.0, 800, 0.50, 0.02), (40.0, 800, 0.51, 0.02), (40.0, 800, 0.52, 0.02)],
            {"time_ratio": 0.4, "time_met": True, "quality_met": True, "target_met": True},
        ),
        # fast but worse than cold by more than the seed noise (0.02): quality missed
        (
            [(30.0, 600, 0.56, 0.02), (30.0, 600, 0.55, 0.02), (30.0, 600, 0.57, 0.02)],
            {"time_ratio": 0.3, "time_met": True, "quality_met": False, "target_met": False},
        ),
        # better, but 0.6x: time missed
        (
            [(60.0, 1200, 0.48, 0.02), (60.0, 1200, 0.47, 0.02), (60.0, 1200, 0.49, 0.02)],
            {"time_ratio": 0.6, "time_met": False, "quality_met": True, "target_met": False},
        ),
    ],
)
def test_summary_rules(
    sampler_arm: list[tuple[float, int, float, float]], expected: dict[str, Any]
) -> None:
    enqueue = [(90.0, 1800, 0.50, 0.01), (100.0, 2000, 0.50, 0.01), (110.0, 2200, 0.50, 0.01)]
    summary = summarize(
        _payload({"cold": COLD, "enqueue": enqueue, "enqueue_sampler": sampler_arm})
    )
    for key, value in expected.items():
        assert (
            summary[key] == pytest.approx(value)
            if isinstance(value, float)
            else summary[key] is value
        ), key
    cold = summary["arms"]["cold"]
    assert cold["runs"] == 3 and cold["mean_chosen_at_seconds"] == pytest.approx(100.0)
    assert cold["confirmed_mean"] == pytest.approx(0.51)
    sampler = summary["against_cold"]["enqueue_sampler"]
    assert sampler["noise"] == pytest.approx(0.02)
    assert sampler["time_ratio_per_seed"]["44"] == pytest.approx(sampler_arm[1][0] / 120.0, 1e-3)
    first = sampler_arm[0][1] + sampler_arm[1][1] + sampler_arm[2][1]
    assert sampler["examples_ratio"] == pytest.approx(first / 6000, 1e-3)
    # the enqueue arm: 1.0x, confirmed better; noise pooled over stds 0.01 and 0.02
    enqueued = summary["against_cold"]["enqueue"]
    assert enqueued["time_ratio"] == pytest.approx(1.0)
    assert enqueued["noise"] == pytest.approx((0.5 * (0.01**2 + 0.02**2)) ** 0.5)
    assert enqueued["difference"] == pytest.approx(-0.01)


def test_summary_of_a_maximized_metric_counts_lower_as_worse() -> None:
    payload = _payload(
        {"cold": [(100.0, 1000, 0.80, 0.01)], "enqueue_sampler": [(20.0, 200, 0.75, 0.01)]}
    )
    payload["direction"] = "maximize"
    summary = summarize(payload)
    assert summary["time_met"] is True and summary["quality_met"] is False
    assert summary["target_met"] is False


def test_without_a_cold_run_there_is_no_ratio_and_no_target() -> None:
    payload = _payload({"enqueue_sampler": [(20.0, 200, 0.5, 0.01)]})
    payload["runs"]["cold"] = {"43": "not run"}
    summary = summarize(payload)
    assert summary["arms"]["cold"]["runs"] == 0 and summary["against_cold"] == {}
    assert "time_ratio" not in summary and "target_met" not in summary


def test_unconfirmed_runs_leave_the_quality_open() -> None:
    payload = _payload({"cold": COLD[:1], "enqueue_sampler": [(20.0, 200, 0.5, 0.01)]})
    payload["confirmations"]["enqueue_sampler"]["43"] = "not run"
    summary = summarize(payload)
    assert summary["time_met"] is True and summary["quality_met"] is None
    assert "target_met" not in summary


def _trial(number: int, done: float | None, examples: int) -> dict[str, Any]:
    return {"number": number, "completed_at_seconds": done, "examples": examples}


def test_chosen_at_counts_every_trial_finished_until_the_chosen_one_in_completion_order() -> None:
    trials = [
        _trial(0, 10.0, 100),
        _trial(1, 30.0, 300),  # finished after trial 2 (another worker), so not counted
        _trial(2, 20.0, 200),
        _trial(3, None, 999),  # never finished
    ]
    assert chosen_at(trials, 2) == {"chosen_at_seconds": 20.0, "chosen_at_examples": 300}
    assert chosen_at(trials, 1) == {"chosen_at_seconds": 30.0, "chosen_at_examples": 600}
    assert chosen_at(trials, 3)["chosen_at_seconds"] is None
    assert chosen_at(trials, None) == {"chosen_at_seconds": None, "chosen_at_examples": None}


def test_arms_and_sizes() -> None:
    assert parse_arms("enqueue_sampler, cold") == ["cold", "enqueue_sampler"]
    with pytest.raises(SystemExit, match="--arms"):
        parse_arms("cold,warm")
    quick = resolve_sizes(argparse.Namespace(quick=True, trials=None, confirm_seeds=None))
    assert quick["trials"] == 3 and quick["seeds_per_arm"] == 2 and quick["confirm_seeds"] == 2
    assert quick["target_max_length"] != quick["max_length"]
    with pytest.raises(SystemExit, match="--confirm-seeds"):
        resolve_sizes(argparse.Namespace(quick=False, confirm_seeds=1))


@pytest.mark.parametrize(
    ("spec", "values", "expected"),
    [
        # A log range: half the lowest to twice the highest, within the range.
        ({"low": 1e-5, "high": 3e-4, "log": True}, [2e-5, 4e-5], (1e-5, 8e-5)),
        ({"low": 1e-5, "high": 3e-4, "log": True}, [2e-4], (1e-4, 3e-4)),
        # A linear range: a quarter of the range either side.
        ({"low": 0.0, "high": 0.2}, [0.1], (0.05, 0.15)),
        # An integer range: one step either side, within the range.
        ({"low": 1, "high": 3}, [2], (1, 3)),
        ({"low": 1, "high": 5}, [5], (4, 5)),
        # Choices: those the best trials used.
        ({"choices": [16, 32]}, [32, 32], [32]),
    ],
)
def test_the_narrow_arm_narrows_each_spec_around_the_best_values(
    spec: dict[str, Any], values: list[Any], expected: Any
) -> None:
    from sweeper.settings.hyperparameters import SearchSpace

    name = "per_device_train_batch_size" if "choices" in spec else None
    name = name or ("warmup_ratio" if spec.get("high") == 0.2 else None)
    name = name or ("num_train_epochs" if isinstance(spec["low"], int) else "learning_rate")
    narrowed = _narrowed(SearchSpace.model_validate({name: spec}).spec(name), values)
    if isinstance(expected, tuple):
        assert (narrowed["low"], narrowed["high"]) == pytest.approx(expected)
    else:
        assert narrowed == {"choices": expected}
