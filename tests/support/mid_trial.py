"""Stopping workers mid-trial, for the tests that preempt them (test_stop, test_slurm).

A worker reports each evaluation to the storage. Holding PostgreSQL's table of reported
values locked makes every worker wait inside its next report, in the middle of a trial, for
as long as a test needs to deliver its signals, whatever the machine's speed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlalchemy


def newest_checkpoints(runs: Path) -> dict[str, int]:
    """{trial directory: its newest complete checkpoint's step}."""
    found: dict[str, int] = {}
    for state in runs.glob("trial-*/checkpoint-*/trainer_state.json"):
        step = int(state.parent.name.removeprefix("checkpoint-"))
        found[state.parent.parent.name] = max(step, found.get(state.parent.parent.name, 0))
    return found


@contextlib.contextmanager
def held_mid_trial(
    postgres_url: str,
    runs: Path,
    after: dict[str, int],
    describe: Callable[[], str],
    alive: Callable[[], bool] = lambda: True,
    timeout_seconds: float = 300,
) -> Iterator[None]:
    """Once two trial directories have a checkpoint newer than ``after`` (the study saves one
    at every evaluation: ``resume_checkpoint_minutes: 0``), hold the table of
    reported values locked while the block runs: each worker then waits in its next
    evaluation's report, mid-trial, and carries on (stopping, if it was told to) when the
    lock goes. ``describe()`` says what was going on when waiting fails; ``alive()`` false
    (the workers exited early) fails at once."""
    deadline = time.monotonic() + timeout_seconds
    while sum(step > after.get(name, 0) for name, step in newest_checkpoints(runs).items()) < 2:
        assert alive(), f"the workers exited early:\n{describe()}"
        assert time.monotonic() < deadline, (
            f"no two checkpoints newer than {after} after {timeout_seconds:.0f} s:\n{describe()}"
        )
        time.sleep(0.05)
    engine = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as holder:
            holder.begin()
            holder.exec_driver_sql("LOCK TABLE trial_intermediate_values IN EXCLUSIVE MODE")
            yield
            time.sleep(0.5)  # the signals are in before the workers go on
    finally:
        engine.dispose()
