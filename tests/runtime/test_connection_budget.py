"""One PostgreSQL for many workers: a connection budget, starts claimed in the database, and
reads of only what a decision needs.

A worker holds at most one connection while it trains and none while it waits (for work or
for a lock); every start is claimed in the transaction that makes the trial RUNNING; a
pruner judging a report reads the curves at its grid point and decides as it would on the
whole study. The scale benchmark's ``--quick`` run (12 worker processes against
``max_connections=10``) is tests/benchmarks/test_scale.py.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from sweeper.runtime.storage import BudgetTaken, TrialBudget, open_lock, open_storage
from sweeper.runtime.worker_reads import reading_at_grid_point, worker_storage
from sweeper.runtime.workers import StopReason, run_trials
from sweeper.settings.config import WorkersConfig
from sweeper.settings.pruners import PRUNER_TYPES
from tests.support.servers import Server


@contextmanager
def sampled_connections(server: Server, phase: dict[str, str]) -> Iterator[list[tuple[str, int]]]:
    """(phase, the sweeper role's connections) every 20 ms, from a superuser connection."""
    samples: list[tuple[str, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            rows = server.sql(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'sweeper'", admin=True
            )
            samples.append((phase["name"], int(rows[0][0])))  # type: ignore[call-overload]

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()


@pytest.mark.timeout(180)
def test_a_training_worker_holds_one_connection_at_most_and_a_waiting_one_none(
    server: Server,
) -> None:
    workers = WorkersConfig(heartbeat_interval_seconds=1, grace_period_seconds=60, poll_seconds=0.2)
    storage = open_storage(server.url, workers=workers)
    study = optuna.create_study(storage=worker_storage(storage), study_name="budget")
    phase = {"name": "starting"}

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        phase["name"] = "training"
        for step in range(8):  # reports and heartbeats while it trains
            time.sleep(0.4)
            trial.report(x, step)
            trial.should_prune()
        phase["name"] = "ending"
        return x

    with sampled_connections(server, phase) as samples:
        result = run_trials(
            study, objective, storage_url=server.url, workers=workers, n_trials=1, log=print
        )
        assert result.reason is StopReason.BUDGET_MET
        # Another worker's trial takes the last place of a budget of 2: this one waits.
        other = open_storage(server.url, workers=workers)
        other.create_new_trial(study._study_id)
        other.engine.dispose()
        phase["name"] = "waiting"
        result = run_trials(
            study,
            objective,
            storage_url=server.url,
            workers=workers,
            n_trials=2,
            timeout_seconds=3,
            log=print,
        )
        phase["name"] = "done"
    assert result.reason is StopReason.TIMEOUT and result.trials_run == 0
    training = [count for name, count in samples if name == "training"]
    waiting = [count for name, count in samples if name == "waiting"]
    assert len(training) > 50 and len(waiting) > 50
    # Its reports and heartbeats took turns on one connection, closed 50 ms after each
    # burst (CONNECTION_IDLE_SECONDS): none held in between, while training or waiting.
    assert max(training) == 1 and training.count(0) > len(training) / 2
    assert max(waiting) <= 1 and waiting.count(0) > len(waiting) / 2


@pytest.mark.timeout(120)
def test_a_worker_waiting_for_a_lock_holds_no_connection(server: Server) -> None:
    name = f"budget/test-{uuid.uuid4().hex}"
    holder, waiter = open_lock(server.url, name), open_lock(server.url, name)
    phase = {"name": "held"}
    acquired = threading.Event()

    def wait_for_it() -> None:
        waiter.acquire()
        acquired.set()

    try:
        holder.acquire()
        with sampled_connections(server, phase) as samples:
            thread = threading.Thread(target=wait_for_it)
            thread.start()
            time.sleep(2.0)
            assert not acquired.is_set()  # exclusive
            holder.release()
            phase["name"] = "released"
            assert acquired.wait(10)  # within its backoff, capped at 2 s
            thread.join()
        held = [count for name, count in samples if name == "held"]
        assert len(held) > 30
        # The holder's connection, and now and then the waiter's, for one try: none between.
        assert min(held) == 1 and max(held) <= 2
        assert held.count(1) > 0.8 * len(held)
    finally:
        holder.close()
        waiter.close()


def _study_with_trials(storage_url: str) -> tuple[optuna.Study, optuna.Study]:
    """A study of finished, pruned and running trials with curves, opened as Optuna opens
    it and as a worker does."""
    rng = random.Random(7)
    name = f"grid-{uuid.uuid4().hex[:8]}"
    storage = open_storage(storage_url, heartbeat=False)
    plain = optuna.create_study(study_name=name, storage=storage)
    distribution = optuna.distributions.FloatDistribution(0.0, 1.0)

    def curve(length: int) -> dict[int, float]:
        level = rng.uniform(0.3, 0.9)
        return {step: level + rng.gauss(0.0, 0.05) - 0.02 * step for step in range(length)}

    for index in range(10):
        state = TrialState.COMPLETE if index % 3 else TrialState.PRUNED
        values = curve(6 if state == TrialState.COMPLETE else 2)
        plain.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=min(values.values()) if state == TrialState.COMPLETE else None,
                params={"x": rng.random()},
                distributions={"x": distribution},
                intermediate_values=values,
            )
        )
    for _ in range(4):
        running = optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params={"x": rng.random()},
            distributions={"x": distribution},
            intermediate_values=curve(4),
        )
        storage.create_new_trial(plain._study_id, template_trial=running)
    worker = optuna.load_study(study_name=name, storage=worker_storage(storage))
    return plain, worker


PRUNERS = [
    {"type": "median", "n_startup_trials": 2},
    {"type": "percentile", "percentile": 40.0, "n_startup_trials": 1},
    {"type": "median", "n_startup_trials": 2, "patience": 1},
    {"type": "rank", "keep_top": 2, "keep_fraction": 0.3, "n_warmup_steps": 0},
    {"type": "threshold", "upper": 0.7},
]


@pytest.mark.parametrize("settings", PRUNERS, ids=[str(p["type"]) for p in PRUNERS])
def test_a_pruner_at_its_grid_point_decides_as_on_the_whole_study(
    storage_url: str, settings: dict[str, Any]
) -> None:
    plain, worker = _study_with_trials(storage_url)
    pruner = PRUNER_TYPES[settings["type"]].model_validate(settings).build()
    narrowed = reading_at_grid_point(pruner)
    assert narrowed is not pruner  # a curve-only pruner reads the grid point alone
    verdicts = []
    for trial in plain.get_trials(states=(TrialState.RUNNING,)):
        for step in sorted(trial.intermediate_values):
            judged = _judged(trial, step)
            whole = pruner.prune(plain, judged)
            assert narrowed.prune(worker, judged) == whole, (trial.number, step)
            verdicts.append(whole)
    assert True in verdicts and False in verdicts  # the table can tell them apart


def _judged(trial: FrozenTrial, step: int | None = None) -> FrozenTrial:
    """A running trial as a pruner judges it at ``step`` (its curve up to there; default:
    its last report)."""
    return FrozenTrial(
        number=trial.number,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=trial.datetime_start,
        datetime_complete=None,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs={},
        system_attrs={},
        intermediate_values={
            at: value
            for at, value in trial.intermediate_values.items()
            if step is None or at <= step
        },
        trial_id=trial._trial_id,
    )


@pytest.mark.parametrize("through", ["grid point", "whole study"])
def test_with_the_method_searched_a_trial_is_ranked_among_its_own_methods(
    storage_url: str, through: str
) -> None:
    """Full fine-tunes reach 0.30-0.40 at the first grid point, LoRA ones 0.60-0.70 (they
    start slower): a LoRA trial at 0.62 is the best of its method and goes on, though the
    full ones would have ranked it last; one at 0.75 is the worst LoRA trial and stops. The
    same verdicts through the grid-point read (a worker's RDB storage) and the whole study
    (any other storage)."""
    name = f"methods-{uuid.uuid4().hex[:8]}"
    storage = open_storage(storage_url, heartbeat=False)
    study = optuna.create_study(study_name=name, storage=storage)
    methods = optuna.distributions.CategoricalDistribution(["full", "lora"])
    for method, value in [("full", 0.30), ("full", 0.35), ("full", 0.40), ("lora", 0.65)]:
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                value=value,
                params={"method": method},
                distributions={"method": methods},
                intermediate_values={1: value},
            )
        )
    for value in (0.62, 0.75):
        running = optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params={"method": "lora"},
            distributions={"method": methods},
            intermediate_values={1: value},
        )
        storage.create_new_trial(study._study_id, template_trial=running)
    opened = optuna.load_study(
        study_name=name,
        storage=worker_storage(storage) if through == "grid point" else storage,
    )
    rank = {"type": "rank", "keep_top": 1, "keep_fraction": 0.01, "n_warmup_steps": 0}
    pruner = PRUNER_TYPES["rank"].model_validate(rank).build()
    running_trials = study.get_trials(states=(TrialState.RUNNING,))
    verdicts = [reading_at_grid_point(pruner).prune(opened, _judged(t)) for t in running_trials]
    assert verdicts == [False, True]
    # Ranked with every trial (what Optuna's own read gives the pruner), both would stop.
    assert [pruner.prune(study, _judged(t)) for t in running_trials] == [True, True]


def test_successive_halving_reads_the_study_as_optuna_gives_it() -> None:
    pruner = (
        PRUNER_TYPES["successive_halving"].model_validate({"type": "successive_halving"}).build()
    )
    assert reading_at_grid_point(pruner) is pruner


def test_a_start_is_claimed_only_while_the_budget_has_room(storage_url: str) -> None:
    storage = open_storage(storage_url, heartbeat=False)
    study = optuna.create_study(
        study_name=f"claims-{uuid.uuid4().hex[:8]}", storage=worker_storage(storage)
    )
    storage.budget = TrialBudget(study._study_id, n_trials=2)
    first, second = study.ask(), study.ask()
    with pytest.raises(BudgetTaken, match="0 finished, 2 running, 0 waiting"):
        study.ask()
    study.enqueue_trial({"x": 0.5})
    with pytest.raises(BudgetTaken, match="0 finished, 2 running, 1 waiting"):
        study.ask()  # the enqueued trial is not popped past the budget either
    study.tell(first, 1.0)
    study.tell(second, state=TrialState.FAIL)  # failed: its place is free again
    popped = study.ask()
    assert popped.number == 2 and popped.params == {} and study.trials[2].state.name == "RUNNING"
    assert len(storage.claim_seconds) == 3

    # Queue only (what `sweeper confirm` runs): enqueued trials, never a new one.
    storage.budget = TrialBudget(study._study_id, n_trials=None, queue_only=True)
    with pytest.raises(BudgetTaken):
        study.ask()
    study.enqueue_trial({"x": 0.25})
    assert study.ask().number == 3
    assert [trial.state for trial in study.get_trials()].count(TrialState.RUNNING) == 2


@pytest.mark.timeout(120)
def test_a_role_connection_limit_is_waited_for_as_a_full_server_is(server: Server) -> None:
    """The guard the how-to suggests (ALTER ROLE ... CONNECTION LIMIT): a worker refused by
    it waits for a connection, as for a server with none left."""
    import sqlalchemy

    from sweeper.runtime.outage import classify
    from sweeper.runtime.storage import check_reachable

    server.sql("ALTER ROLE sweeper CONNECTION LIMIT 1", admin=True)
    engine = sqlalchemy.create_engine(server.url, poolclass=sqlalchemy.pool.NullPool)
    held = engine.connect()
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError) as refused:
            engine.connect()
        assert "too many connections for role" in str(refused.value)
        assert classify(refused.value) == "too many clients"
        releaser = threading.Timer(1.5, held.close)
        releaser.start()
        started = time.monotonic()
        check_reachable(server.url, WorkersConfig(storage_outage_seconds=30))
        releaser.join()
        assert time.monotonic() - started >= 1.0  # it waited for the held one to close
    finally:
        held.close()
        engine.dispose()


def test_a_trial_failed_as_stale_elsewhere_does_not_stop_its_worker(storage_url: str) -> None:
    """A worker starved for longer than the grace period (1,000 workers on two cores did
    it) finds its trial failed and retried by another when it ends: one line, and it goes
    on; the retry counts."""
    from sweeper.runtime.storage import retry_callback

    workers = WorkersConfig(heartbeat_interval_seconds=1, grace_period_seconds=60, poll_seconds=0.2)
    storage = open_storage(storage_url, workers=workers)
    study = optuna.create_study(
        storage=worker_storage(storage), study_name=f"stale-{uuid.uuid4().hex[:8]}"
    )

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number == 0:  # what another worker's heartbeat check does to a late trial
            other = open_storage(storage_url, heartbeat=False)
            other.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            judged = optuna.load_study(study_name=study.study_name, storage=other)
            retry_callback(workers)(judged, other.get_trial(trial._trial_id))
        return x

    lines: list[str] = []
    result = run_trials(
        study, objective, storage_url=storage_url, workers=workers, n_trials=2, log=lines.append
    )
    assert result.reason is StopReason.BUDGET_MET
    trials = study.get_trials()
    assert [trial.state for trial in trials] == [
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    assert trials[1].params == trials[0].params  # the retry ran the same configuration
    assert any("another worker had failed it as stale" in line for line in lines), lines


@pytest.mark.timeout(120)
def test_a_heartbeat_refused_a_connection_waits_for_one_until_its_trial_ends(
    server: Server,
) -> None:
    """One try per beat is not enough on a full server: at 1,000 workers on 90 connections a
    live worker's four tries in a row were refused and its trial was failed as stale."""
    import sqlalchemy

    from sweeper.runtime.local_postgres import run_sql, superuser_url
    from sweeper.runtime.storage import end_heartbeat

    workers = WorkersConfig(heartbeat_interval_seconds=60, grace_period_seconds=120)
    storage = open_storage(server.url, workers=workers)
    study = optuna.create_study(storage=storage, study_name="beats")
    trial_id = study.ask()._trial_id
    beats = f"SELECT count(*) FROM trial_heartbeats WHERE trial_id = {trial_id}"
    admin = superuser_url(server.url, "sweeper")  # not the sweeper role: never refused
    server.sql("ALTER ROLE sweeper CONNECTION LIMIT 1", admin=True)
    engine = sqlalchemy.create_engine(server.url, poolclass=sqlalchemy.pool.NullPool)
    time.sleep(0.5)  # the storage's idle connection is closed after 50 ms
    held = engine.connect()
    try:
        releaser = threading.Timer(2.0, held.close)
        releaser.start()
        started = time.monotonic()
        storage.record_heartbeat(trial_id)  # refused, then written once the slot frees
        releaser.join()
        assert time.monotonic() - started >= 1.5
        assert run_sql(admin, beats) == [(1,)]

        # Refused for good: it waits until its objective returns, not half the interval.
        time.sleep(0.5)
        held = engine.connect()
        beating = threading.Thread(target=storage.record_heartbeat, args=(trial_id,))
        beating.start()
        time.sleep(1.0)
        end_heartbeat(study, trial_id)
        beating.join(timeout=15)
        assert not beating.is_alive()
    finally:
        held.close()
        engine.dispose()
        storage.engine.dispose()


def _under_optunas_assertion(write: Any) -> Exception:
    """The error of ``write()`` as Optuna's ``_run_trial`` leaves it: its ``finally`` asserts
    on top of a failed tell, the tell's error as the assertion's context."""
    try:
        try:
            write()
        finally:
            raise AssertionError("Should not reach.")
    except AssertionError as error:
        return error
    raise AssertionError("not raised")


@pytest.mark.parametrize("when", ["before the tell", "between the tell's check and its write"])
def test_a_trial_failed_elsewhere_is_known_however_the_tell_finds_out(
    storage_url: str, when: str
) -> None:
    from sweeper.runtime.workers import _failed_elsewhere

    storage = open_storage(storage_url, heartbeat=False)
    study = optuna.create_study(storage=storage, study_name=f"told-{uuid.uuid4().hex[:8]}")
    trial = study.ask()
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # another worker's verdict
    if when == "before the tell":  # Optuna's check: ValueError("Cannot tell a FAIL trial")
        error = _under_optunas_assertion(lambda: study.tell(trial, 1.0))
    else:  # the check saw RUNNING; the write finds FAIL: UpdateFinishedTrialError
        error = _under_optunas_assertion(
            lambda: storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [1.0])
        )
    lines: list[str] = []
    assert _failed_elsewhere(study, trial._trial_id, error, lines.append)
    assert lines == [
        "[sweeper] trial #0 ended here, but another worker had failed it as stale (its "
        "heartbeat came later than workers.grace_period_seconds) and retried it; its retry "
        "counts, this result does not"
    ]
    # Any other failure of the tell is not this: it is raised.
    other = _under_optunas_assertion(lambda: study.tell(trial._trial_id + 99, 1.0))
    assert not _failed_elsewhere(study, trial._trial_id + 99, other, lines.append)


@pytest.mark.timeout(120)
def test_a_worker_waiting_for_a_free_connection_waits_through_a_restart(server: Server) -> None:
    """Queued for a connection at start-up, then the server restarts: it waits on (a server
    that cannot be reached at all at start-up is still an error within seconds)."""
    import sqlalchemy

    from sweeper.runtime.storage import check_reachable

    server.sql("ALTER ROLE sweeper CONNECTION LIMIT 1", admin=True)
    engine = sqlalchemy.create_engine(server.url, poolclass=sqlalchemy.pool.NullPool)
    held = engine.connect()
    outcome: list[object] = []

    def join() -> None:
        try:
            check_reachable(server.url, WorkersConfig(storage_outage_seconds=60))
            outcome.append("joined")
        except Exception as error:  # the assertion below names it
            outcome.append(error)

    waiter = threading.Thread(target=join)
    waiter.start()
    try:
        time.sleep(1.5)  # refused: too many connections for role
        assert not outcome
        held.invalidate()
        server.stop()  # the server goes away while it waits
        time.sleep(2.0)
        server.start()
        waiter.join(60)
        assert outcome == ["joined"]
    finally:
        held.close()
        engine.dispose()
