"""One process of the scale benchmark: ``threads`` whole sweeper workers, one per thread.

Run by path (``python benchmarks/scale_worker.py SPEC OUT``) so that ``sweeper`` comes from
``PYTHONPATH``: the benchmark points it at this tree, or at an earlier commit's for the
"before" runs. It imports nothing from ``benchmarks``. The storage URL comes in the
environment (``SWEEPER_STORAGE``), never on the command line.

Each thread opens its own storage (own engine, own Optuna cache: nothing is shared between
threads but the interpreter) and runs sweeper's worker loop (``run_trials``) with the real
TPE sampler, the rank pruner, heartbeats, the budget and the outage handling. The trial
trains no model: it sleeps and reports a made-up validation-loss curve.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import resource
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from sweeper.runtime import storage as storage_module
from sweeper.runtime.outage import DeferredReports
from sweeper.runtime.storage import open_storage, storage_health
from sweeper.runtime.workers import run_trials
from sweeper.settings.config import WorkersConfig
from sweeper.settings.pruners import RankPrunerConfig
from sweeper.settings.samplers import TPESamplerConfig, build_sampler


def _identity(value: Any) -> Any:
    return value


try:  # this tree; an earlier commit has neither
    from sweeper.runtime import worker_reads

    reading_at_grid_point: Any = worker_reads.reading_at_grid_point
    worker_storage: Any = worker_reads.worker_storage
except ImportError:  # the "before" runs
    reading_at_grid_point = worker_storage = _identity


_phase = threading.local()
_lock = threading.Lock()
_queries: dict[str, list[int]] = {}  # phase -> [queries, rows, connections opened]


def _count(phase_counts: tuple[int, int, int]) -> None:
    phase = getattr(_phase, "name", "heartbeat")  # Optuna's heartbeat threads set none
    with _lock:
        counts = _queries.setdefault(phase, [0, 0, 0])
        for index, amount in enumerate(phase_counts):
            counts[index] += amount


def _count_query(conn: Any, cursor: Any, statement: Any, *args: Any) -> None:
    rows = cursor.rowcount if cursor.description is not None and cursor.rowcount > 0 else 0
    _count((1, rows, 0))


def _count_connection(dbapi_connection: Any, record: Any) -> None:
    _count((0, 0, 1))


sqlalchemy.event.listen(sqlalchemy.engine.Engine, "after_cursor_execute", _count_query)
sqlalchemy.event.listen(sqlalchemy.pool.Pool, "connect", _count_connection)


def _time_budget_lock(study_name: str, holds: list[float]) -> None:
    """Before this tree, the budget was a session advisory lock held through each start: time
    how long each worker held it (the lock of this tree is not used for the budget)."""
    lock_class = storage_module._PostgresAdvisoryLock
    digest = hashlib.blake2b(f"sweeper/budget/{study_name}".encode(), digest_size=8).digest()
    budget_key = int.from_bytes(digest, "big", signed=True)
    acquire, release = lock_class.acquire, lock_class.release
    taken: dict[int, float] = {}

    def timed_acquire(self: Any) -> None:
        acquire(self)
        if self._key == budget_key:
            taken[id(self)] = time.monotonic()

    def timed_release(self: Any) -> None:
        started = taken.pop(id(self), None)
        release(self)
        if started is not None:
            holds.append(time.monotonic() - started)

    lock_class.acquire, lock_class.release = timed_acquire, timed_release  # type: ignore[method-assign]


def _objective(spec: dict[str, Any], record: dict[str, Any]) -> Any:
    rng = random.Random(spec["seed"])
    reports = spec["reports"]

    def objective(trial: optuna.Trial) -> float:
        learning_rate = trial.suggest_float("learning_rate", 1e-6, 1e-3, log=True)
        batch = trial.suggest_categorical("per_device_train_batch_size", [8, 16, 32, 64])
        epochs = trial.suggest_int("num_train_epochs", 1, 5)
        trial.suggest_int("seed", 0, 10_000)
        record["start_latency"].append(time.monotonic() - record["last_end"])
        _phase.name = "train"
        health = storage_health(trial.study)
        deferred = DeferredReports(trial, health)
        distance = abs(math.log10(learning_rate) + 4.3) + 0.05 * abs(math.log2(batch) - 5)
        best = math.inf
        try:
            for step in range(1, reports + 1):
                time.sleep(spec["trial_seconds"] / reports)
                value = 0.3 + 0.2 * distance + 0.4 * math.exp(-step * epochs / reports)
                value += rng.gauss(0.0, 0.01)
                best = min(best, value)
                _phase.name = "report"
                started = time.monotonic()
                prune = deferred.report(step, value)
                record["report_latency"].append(time.monotonic() - started)
                record["reports"] += 1
                _phase.name = "train"
                if prune:
                    raise optuna.TrialPruned(f"pruned at step {step}")
            deferred.flush()
            return best
        finally:
            record["trials"] += 1
            record["last_end"] = time.monotonic()
            _phase.name = "start"

    return objective


def _one_worker(spec: dict[str, Any], index: int, record: dict[str, Any]) -> None:
    _phase.name = "setup"  # opening the storage and the study, once per worker
    url = os.environ["SWEEPER_STORAGE"]
    workers = WorkersConfig(**spec["workers"])
    try:
        storage = open_storage(url, workers=workers)
        if storage.health is not None:
            storage.health._log = lambda line: record["log"].append(line)
        sampler = build_sampler(
            TPESamplerConfig(type="tpe", seed=spec["seed"], n_startup_trials=10)
        )
        pruner = reading_at_grid_point(RankPrunerConfig(type="rank").build())
        study = optuna.load_study(
            study_name=spec["study"],
            storage=worker_storage(storage),
            sampler=sampler,
            pruner=pruner,
        )
        time.sleep(max(0.0, spec["start_at"] - time.time()))
        _phase.name = "start"
        record["last_end"] = time.monotonic()
        run_trials(
            study,
            _objective(spec, record),
            storage_url=url,
            workers=workers,
            n_trials=spec["n_trials"],
            # Said once as a worker starts to wait for the budget: its polls are no start.
            log=lambda line: setattr(_phase, "name", "wait"),
        )
        record["claim_seconds"] = list(getattr(storage, "claim_seconds", []))
    except BaseException as error:  # every error is counted, none ends the other threads
        record["errors"].append(
            f"{type(error).__name__}: {error}"[:500] + "\n" + traceback.format_exc()[-1500:]
        )


def main(spec_path: str, out_path: str) -> int:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = json.loads(Path(spec_path).read_text())
    lock_holds: list[float] = []
    if not hasattr(storage_module, "TrialBudget"):
        _time_budget_lock(spec["study"], lock_holds)
    records = []
    threads = []
    for index in range(spec["threads"]):
        record: dict[str, Any] = {
            "trials": 0,
            "reports": 0,
            "start_latency": [],
            "report_latency": [],
            "errors": [],
            "log": [],
            "last_end": time.monotonic(),
        }
        records.append(record)
        thread_spec = {**spec, "seed": spec["seed"] + index}
        thread = threading.Thread(
            target=_one_worker, args=(thread_spec, index, record), name=f"worker-{index}"
        )
        threads.append(thread)
        thread.start()
    for thread in threads:
        thread.join()
    summary = {
        "trials": sum(record["trials"] for record in records),
        "reports": sum(record["reports"] for record in records),
        "start_latency": [x for record in records for x in record["start_latency"]],
        "report_latency": [x for record in records for x in record["report_latency"]],
        "claim_seconds": [x for record in records for x in record.get("claim_seconds", [])]
        or lock_holds,
        "errors": [error for record in records for error in record["errors"]],
        "log": [line for record in records for line in record["log"]],
        "queries": _queries,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    Path(out_path).write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
