"""Storage: what sharing one study through an Optuna RDB storage costs, and what a kill loses.

Two measurements:

1. **Trials per second through storage.** 1, 4 and 8 worker processes run one study
   through sweeper's own worker loop (:func:`sweeper.runtime.workers.run_trials`: heartbeats, the
   cross-process budget lock, stale-trial checks) on a trivial objective that suggests six
   parameters and reports five intermediate values, like a short trial. On SQLite and on
   PostgreSQL. Per-trial storage overhead = worker-seconds / trials.
2. **Training lost to a SIGKILL.** A worker training a real (tiny, random) BERT is killed at
   a random moment mid-trial; another worker retries the trial from its last checkpoint.
   Lost training = time from that checkpoint to the kill; the target is less than one
   evaluation interval (checkpoints are written at every evaluation:
   ``resume_checkpoint_minutes: 0``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, environment, random_bert, write_results

NAME = "storage"
HELP = (
    "trials/s through SQLite and PostgreSQL with 1/4/8 workers on a trivial objective, and "
    "the training time a SIGKILL mid-trial loses"
)
POSTGRES_URL_ENV = "SWEEPER_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://sweeper:sweeper@127.0.0.1:5432/sweeper"
QUICK: dict[str, Any] = {"workers": "1,4", "trials": 40, "kills": 1}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="smoke-test sizes: 1 and 4 workers, 40 trials, 1 kill"
    )
    parser.add_argument("--workers", default=None, help="worker counts (default 1,4,8)")
    parser.add_argument("--trials", type=int, default=None, help="trials per run (default 200)")
    parser.add_argument(
        "--backends", default="sqlite,postgresql", help="storages to measure (default %(default)s)"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL),
        help=f"PostgreSQL URL (default ${POSTGRES_URL_ENV} or the local `make postgres` one)",
    )
    parser.add_argument("--kills", type=int, default=None, help="SIGKILL repeats (default 3)")


# --- 1. trials per second --------------------------------------------------------------------


def _trivial_objective(trial: Any) -> float:
    value = 0.0
    for name in ("learning_rate", "batch", "epochs", "seed", "warmup", "decay"):
        value += trial.suggest_float(name, 0.0, 1.0)
    for step in range(1, 6):
        trial.report(value / step, step)
    return value


def _worker(storage_url: str, study_name: str, n_trials: int, start_at: float) -> None:
    import optuna

    from sweeper.runtime.storage import open_storage
    from sweeper.runtime.workers import run_trials
    from sweeper.settings.config import WorkersConfig

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workers = WorkersConfig(poll_seconds=0.2)
    storage = open_storage(storage_url, workers=workers)
    study = optuna.load_study(
        study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler()
    )
    time.sleep(max(start_at - time.time(), 0.0))
    run_trials(
        study,
        _trivial_objective,
        storage_url=storage_url,
        workers=workers,
        n_trials=n_trials,
        log=lambda line: None,
    )


def measure_throughput(storage_url: str, n_workers: int, n_trials: int) -> dict[str, Any]:
    import optuna

    from sweeper.runtime.storage import open_storage

    name = f"bench-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=open_storage(storage_url, heartbeat=False))
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 5.0  # every worker imported and connected before the clock starts
    processes = [
        context.Process(target=_worker, args=(storage_url, name, n_trials, start_at))
        for _ in range(n_workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    wall = time.time() - start_at
    study = optuna.load_study(study_name=name, storage=open_storage(storage_url, heartbeat=False))
    finished = len(study.get_trials(deepcopy=False))
    return {
        "workers": n_workers,
        "trials": finished,
        "exact_budget": finished == n_trials,
        "exit_codes": [process.exitcode for process in processes],
        "wall_seconds": round(wall, 3),
        "trials_per_second": round(finished / wall, 2),
        "ms_per_trial_per_worker": round(1000 * wall * n_workers / finished, 1),
    }


# --- 2. training lost to a SIGKILL -----------------------------------------------------------


def _tiny_model(directory: Path) -> Path:
    return random_bert(directory, hidden=64, layers=2, heads=2, intermediate=128)


def _kill_study_file(directory: Path, model: Path, eval_steps: int) -> Path:
    import yaml

    study = {
        "name": "kill",
        "dataset": {
            "path": str(REPO_ROOT / "data" / "imdb-3k.csv.gz"),
            "text_column": "review",
            "label_column": "sentiment",
            "validation_fraction": 0.1,
            "max_train_rows": 800,
            "max_validation_rows": 100,
        },
        "model": {"name": str(model), "max_length": 128},
        "search_space": {
            "learning_rate": 1e-4,
            "per_device_train_batch_size": 8,
            "num_train_epochs": 3,
            "seed": 42,
            "warmup_ratio": 0.0,
            "weight_decay": 0.0,
        },
        "evaluation": {"strategy": "steps", "steps": eval_steps},
        "pruner": {"type": "none"},
        "budget": {"n_trials": 1},
        "workers": {
            "heartbeat_interval_seconds": 1,
            "grace_period_seconds": 3,
            "poll_seconds": 0.5,
        },
        "output_dir": str(directory / "runs"),
        # A resume point at every evaluation (the default saves at new bests and every 10
        # minutes): what bounds the training a kill loses to one evaluation interval.
        "resume_checkpoint_minutes": 0,
    }
    path = directory / "kill.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


def _start(study_file: Path, storage_url: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "sweeper", "worker", str(study_file), "--no-progress"]
    return subprocess.Popen(
        [*command, "--storage", storage_url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO_ROOT,
    )


def _checkpoint_times(directory: Path) -> list[tuple[int, float]]:
    times = []
    for state in directory.glob("checkpoint-*/trainer_state.json"):
        times.append((int(state.parent.name.removeprefix("checkpoint-")), state.stat().st_mtime))
    return sorted(times)


def measure_kill(workdir: Path, model: Path, rng: random.Random) -> dict[str, Any]:
    import optuna

    from sweeper.runtime.storage import open_storage

    eval_steps = 25
    study_file = _kill_study_file(workdir, model, eval_steps)
    storage_url = f"sqlite:///{workdir / 'kill.db'}"
    checkpoints = workdir / "runs" / "kill" / "checkpoints" / "trial-0"
    first = _start(study_file, storage_url)
    # Wait for two checkpoints to learn the evaluation interval, then kill at a random point
    # of the next one.
    while len(_checkpoint_times(checkpoints)) < 2:
        if first.poll() is not None:
            raise RuntimeError("the worker ended before its second checkpoint")
        time.sleep(0.02)
    (_, earlier), (_, later) = _checkpoint_times(checkpoints)[-2:]
    interval = later - earlier
    time.sleep(rng.uniform(0.0, interval))
    first.send_signal(signal.SIGKILL)
    killed_at = time.time()
    first.wait()
    last_step, last_saved = _checkpoint_times(checkpoints)[-1]
    retry_started = time.time()
    second = _start(study_file, storage_url)
    code = second.wait()
    study = optuna.load_study(study_name="kill", storage=open_storage(storage_url, heartbeat=False))
    retry = study.get_trials()[-1]
    return {
        "eval_interval_steps": eval_steps,
        "eval_interval_seconds": round(interval, 3),
        "lost_training_seconds": round(killed_at - last_saved, 3),
        "lost_fraction_of_interval": round((killed_at - last_saved) / interval, 3),
        "resumed_from_step": retry.user_attrs.get("resumed_from_step"),
        "last_checkpoint_step": last_step,
        "retry_state": retry.state.name,
        "retry_exit_code": code,
        "retry_wall_seconds": round(time.time() - retry_started, 1),
    }


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workers = [
        int(n) for n in (args.workers or (QUICK["workers"] if args.quick else "1,4,8")).split(",")
    ]
    n_trials = args.trials or (QUICK["trials"] if args.quick else 200)
    kills = args.kills or (QUICK["kills"] if args.quick else 3)
    results: dict[str, Any] = {
        "environment": environment(("sqlalchemy", "psycopg")),
        "throughput": [],
    }
    with tempfile.TemporaryDirectory(prefix="sweeper-bench-storage-") as temporary:
        workdir = Path(temporary)
        urls = {"sqlite": f"sqlite:///{workdir / 'throughput.db'}", "postgresql": args.postgres_url}
        print(
            f"{'storage':<11} {'workers':>7} {'trials':>6} {'wall s':>7} {'trials/s':>9} {'ms/trial/worker':>16}"
        )
        for backend in args.backends.split(","):
            for count in workers:
                row = {"storage": backend, **measure_throughput(urls[backend], count, n_trials)}
                results["throughput"].append(row)
                print(
                    f"{backend:<11} {count:>7} {row['trials']:>6} {row['wall_seconds']:>7} "
                    f"{row['trials_per_second']:>9} {row['ms_per_trial_per_worker']:>16}"
                    + ("" if row["exact_budget"] else "  (budget NOT exact)"),
                    flush=True,
                )
        model = _tiny_model(workdir / "tiny-bert")
        rng = random.Random(0)
        results["kills"] = []
        for index in range(kills):
            kill_dir = workdir / f"kill-{index}"
            kill_dir.mkdir()
            outcome = measure_kill(kill_dir, model, rng)
            results["kills"].append(outcome)
            print(
                f"SIGKILL {index + 1}/{kills}: lost {outcome['lost_training_seconds']} s of training "
                f"= {outcome['lost_fraction_of_interval']:.2f} of an evaluation interval "
                f"({outcome['eval_interval_seconds']} s, {outcome['eval_interval_steps']} steps); "
                f"retry resumed at step {outcome['resumed_from_step']} and ended "
                f"{outcome['retry_state']}",
                flush=True,
            )
    exact = all(row["exact_budget"] for row in results["throughput"])
    under_interval = all(kill["lost_fraction_of_interval"] < 1.0 for kill in results["kills"])
    resumed = all((kill["resumed_from_step"] or 0) > 0 for kill in results["kills"])
    print(f"exact budget in every run: {exact}; every kill lost < 1 interval: {under_interval}")
    print(f"results: {write_results(NAME, results)}")
    return 0 if exact and under_interval and resumed else 1
