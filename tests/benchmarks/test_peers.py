"""The peers benchmark (``benchmarks/peers.py``): sweeper against
``Trainer.hyperparameter_search`` and Ray Tune, run for real at its ``--quick`` size (Ray Tune
comes from the ``bench`` extra that ``make venv`` and CI install: without it this fails),
and its summary's rules on payloads made up to hit each case."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import available
from benchmarks.peers import SIDES, summarize
from tests.support.quick_benchmarks import QUICK_RUN_TEST_TIMEOUT, run_quick
from tests.support.studies import REPO_ROOT as REPO


@pytest.mark.timeout(QUICK_RUN_TEST_TIMEOUT)
def test_peers_quick_runs_every_side_and_confirms_on_the_same_seeds(tmp_path: Path) -> None:
    assert "peers" in available()
    done = run_quick("peers", tmp_path, "--cpu-threads", "1")
    payload = done.results("peers")
    seeds = payload["seeds"]
    assert len(seeds) == 2 and not set(seeds) & {42, 7, 1234}  # fresh: not the sweep's
    # The searched hyperparameters (num_train_epochs is fixed at --quick, and so is
    # label_smoothing_factor in the study file).
    searched = {name for name, spec in payload["search_space"].items() if isinstance(spec, dict)}
    assert {"learning_rate", "per_device_train_batch_size", "seed"} <= searched
    for side in SIDES:
        search = payload[side]
        assert search["wall_seconds"] > 0 and search["examples"] > 0, side
        assert len(search["trials"]) == 3, side
        assert searched <= set(search["chosen_params"]), side
        assert 0 <= search["chosen_at_seconds"] <= search["wall_seconds"] + 1, side
        confirmed = payload[f"{side}_confirmation"]
        assert sorted(run["seed"] for run in confirmed["runs"]) == sorted(seeds), side
        assert confirmed["objective"]["n"] == 2 and confirmed["test_accuracy"]["n"] == 2, side
    hps, ray = payload["hyperparameter_search"], payload["ray_tune"]
    assert "MedianPruner" in hps["route"] and "ASHAScheduler" in ray["route"]
    assert ray["ray"].startswith("2.") and "max_t=" in ray["scheduler"]
    for trial in ray["trials"]:
        assert 0 < trial["examples"] <= trial["planned_examples"]
    # The chosen configuration is a trial the side ran, scored as that side scores it.
    for side in SIDES[1:]:
        chosen = payload[side]["trials"][payload[side]["chosen_trial"]]
        assert chosen["params"] == payload[side]["chosen_params"]
    summary = payload["summary"]
    assert summary["fastest_peer"] in SIDES[1:] and summary["best_peer"] in SIDES[1:]
    assert isinstance(summary["quality_met"], bool) and isinstance(summary["target_met"], bool)
    assert summary["against_best_peer"]["paired_seeds"] == 2
    assert "[peers] target: sweeper's wall time" in done.stdout


def _side(wall: float, mean: float, std: float, values: dict[int, float]) -> dict[str, Any]:
    return {
        "search": {"wall_seconds": wall, "examples": 1},
        "confirmed": {
            "objective": {"mean": mean, "std": std, "n": len(values)},
            "runs": [{"seed": seed, "objective": value} for seed, value in values.items()],
        },
    }


@pytest.mark.parametrize(
    ("sides", "expected"),
    [
        # sweeper fastest and best: everything met
        (
            {
                "sweeper": _side(60, 0.50, 0.02, {1: 0.49, 2: 0.51}),
                "hyperparameter_search": _side(100, 0.55, 0.02, {1: 0.54, 2: 0.56}),
                "ray_tune": _side(120, 0.52, 0.02, {1: 0.51, 2: 0.53}),
            },
            {
                "fastest_peer": "hyperparameter_search",
                "best_peer": "ray_tune",
                "time_ratio": 0.6,
                "time_met": True,
                "stretch_met": True,
                "quality_met": True,
                "target_met": True,
            },
        ),
        # worse than the best peer by more than the seed noise: quality missed
        (
            {
                "sweeper": _side(80, 0.60, 0.01, {1: 0.59, 2: 0.61}),
                "hyperparameter_search": _side(100, 0.50, 0.01, {1: 0.49, 2: 0.51}),
                "ray_tune": _side(90, 0.55, 0.01, {1: 0.54, 2: 0.56}),
            },
            {
                "fastest_peer": "ray_tune",
                "best_peer": "hyperparameter_search",
                "time_met": True,
                "stretch_met": False,
                "quality_met": False,
                "target_met": False,
            },
        ),
        # a tie on quality goes to the faster peer; slower than the fastest: time missed
        (
            {
                "sweeper": _side(150, 0.505, 0.02, {1: 0.50, 2: 0.51}),
                "hyperparameter_search": _side(100, 0.50, 0.02, {1: 0.49, 2: 0.51}),
                "ray_tune": _side(90, 0.50, 0.02, {1: 0.49, 2: 0.51}),
            },
            {
                "fastest_peer": "ray_tune",
                "best_peer": "ray_tune",
                "time_met": False,
                "quality_met": True,
                "target_met": False,
            },
        ),
    ],
)
def test_summary_rules(sides: dict[str, dict[str, Any]], expected: dict[str, Any]) -> None:
    payload: dict[str, Any] = {}
    for side, parts in sides.items():
        payload[side] = parts["search"]
        payload[f"{side}_confirmation"] = parts["confirmed"]
    summary = summarize(payload)
    for key, value in expected.items():
        assert (
            summary[key] == pytest.approx(value)
            if isinstance(value, float)
            else summary[key] == value
        ), key
    against = summary["against_best_peer"]
    assert against["paired_seeds"] == 2 and len(against["paired_ci95"]) == 2


def test_a_peer_not_run_leaves_no_target() -> None:
    payload = {
        "sweeper": {"wall_seconds": 10.0, "examples": 1},
        "hyperparameter_search": "not asked",
        "ray_tune": "not asked",
    }
    summary = summarize(payload)
    assert "time_ratio" not in summary and "target_met" not in summary


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["peers", "--quick"], "python -m benchmarks peers needs the Python package 'ray'"),
        (["--quick"], "python -m benchmarks peers needs the Python package 'ray'"),
    ],
)
def test_a_missing_extra_is_one_line_before_anything_runs(argv: list[str], says: str) -> None:
    # `None` in sys.modules makes `import ray` fail as if the bench extra were not installed.
    code = (
        "import sys; sys.modules['ray'] = None; from benchmarks.__main__ import main; "
        f"sys.exit(main({argv!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""  # nothing ran
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("benchmarks: error: " + says)
    assert "make bench-peers" in line and "pip install -e '.[bench]'" in line


def test_peers_without_ray_tune_needs_no_ray() -> None:
    import argparse

    from benchmarks import missing_requirements
    from benchmarks import peers as peers_module

    args = argparse.Namespace(sides="sweeper,hyperparameter_search")
    assert missing_requirements(peers_module, args) == []
