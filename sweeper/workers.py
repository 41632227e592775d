"""Workers: many processes, on many machines, run one study until its budget is met.

:func:`run_trials` is the entry point. It is a loop of ``study.optimize(n_trials=1)`` calls,
so every trial runs under Optuna's own machinery (heartbeats, stale-trial retries,
callbacks), with two things Optuna leaves to the caller:

- **A shared budget.** ``MaxTrialsCallback`` only stops a worker after its trial ends, so 4
  workers at 19/20 would all start one more. Here a cross-process lock (a PostgreSQL
  advisory lock, or a lock file beside a SQLite database) is held from counting the
  trials in storage until the new trial is RUNNING, so a study with ``n_trials=20`` ends
  with exactly 20 finished trials however many workers join it. A worker that finds the
  budget taken by running trials waits: one of them may die and come back as a retry.
- **A clean stop.** The first SIGINT/SIGTERM stops training at the next step boundary,
  saves a checkpoint, fails the trial and enqueues its retry at once (Optuna would leave
  it RUNNING until its heartbeat went stale); a second Ctrl-C exits immediately.

:func:`spawn_gpu_workers` starts one worker process per GPU for ``sweeper worker --gpus``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeper.config import WorkersConfig
from sweeper.errors import ConfigError, StorageError, SweeperError
from sweeper.storage import open_lock, redact, retry_callback

# Trials that used up budget. Failed trials do not: the heartbeat retries them.
BUDGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED)

StudyCallback = Callable[[optuna.Study, FrozenTrial], None]


class TrialInterrupted(SweeperError):
    """Raised by an objective that stopped because the worker was asked to stop."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number


class _QuietInterruptedTrials(logging.Filter):
    """Optuna logs a failed trial with its traceback; a stop we asked for is no failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, TrialInterrupted)


logging.getLogger("optuna.study._optimize").addFilter(_QuietInterruptedTrials())


# --- stopping on a signal --------------------------------------------------------------------


class StopRequest:
    """SIGINT/SIGTERM handling: the first signal asks for a clean stop, a second one exits.

    The handler only sets a flag: training checks it at each step boundary (see
    ``training.train_trial``), the worker loop between trials.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on a stop request; True when one came."""
        return self._event.wait(seconds)

    def request(self, signal_number: int) -> None:
        self.signal_number = signal_number
        self._event.set()

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        name = signal.Signals(signal_number).name
        if self._event.is_set():
            print(f"\n[sweeper] second {name}: exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signal_number)
        self.request(signal_number)
        print(
            f"\n[sweeper] {name}: stopping at the next training step, saving a checkpoint and "
            "leaving the trial to be retried (Ctrl-C again exits at once)",
            file=sys.stderr,
            flush=True,
        )

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle SIGINT/SIGTERM while the block runs (main thread only; a no-op elsewhere)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for number in (signal.SIGINT.value, signal.SIGTERM.value):
            self._previous[number] = signal.signal(number, self._handle)
        try:
            yield self
        finally:
            for number, handler in self._previous.items():
                signal.signal(number, handler)
            self._previous.clear()


# --- the shared budget -------------------------------------------------------------------------


# --- the loop ------------------------------------------------------------------------------------


@dataclass
class WorkerResult:
    trials_run: int
    reason: str  # "budget met", "timeout", "interrupted"
    signal_number: int | None = None


def budget_counts(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials in storage, across every worker."""
    finished = running = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state in BUDGET_STATES:
            finished += 1
        elif trial.state == TrialState.RUNNING:
            running += 1
    return finished, running


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's own check: RUNNING trials whose heartbeat stopped are failed and retried."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    storage_url: str,
    workers: WorkersConfig,
    n_trials: int | None,
    timeout_seconds: float | None = None,
    callbacks: Sequence[StudyCallback] = (),
    stop: StopRequest | None = None,
    log: Callable[[str], None] = print,
) -> WorkerResult:
    """Run trials of ``study`` until ``n_trials`` have finished in storage (all workers
    counted), ``timeout_seconds`` have passed, or a stop is requested."""
    stop = stop or StopRequest()
    lock = open_lock(storage_url, f"budget/{study.study_name}")
    started = time.monotonic()
    trials_run = 0
    current: dict[str, int] = {}

    def gated(trial: optuna.Trial) -> float:
        # The trial is RUNNING in storage now: other workers will count it.
        lock.release()
        current["trial_id"] = trial._trial_id
        return objective(trial)

    waiting_logged = False
    try:
        while True:
            if stop.requested:
                return WorkerResult(trials_run, "interrupted", stop.signal_number)
            if timeout_seconds is not None and time.monotonic() - started >= timeout_seconds:
                return WorkerResult(trials_run, "timeout")
            lock.acquire()
            try:
                fail_stale_trials(study)
                if n_trials is not None:
                    finished, running = budget_counts(study)
                    if finished >= n_trials:
                        return WorkerResult(trials_run, "budget met")
                    if finished + running >= n_trials:
                        lock.release()
                        if not waiting_logged:
                            log(
                                f"[sweeper] {finished}/{n_trials} finished and {running} running "
                                "elsewhere: waiting in case one of them dies and is retried"
                            )
                            waiting_logged = True
                        stop.wait(workers.poll_seconds)
                        continue
                waiting_logged = False
                current.clear()
                try:
                    study.optimize(gated, n_trials=1, callbacks=list(callbacks))
                except TrialInterrupted as interrupted:
                    _retry_now(study, current.get("trial_id"), workers, log)
                    stop.request(interrupted.signal_number)
                    return WorkerResult(trials_run, "interrupted", interrupted.signal_number)
                trials_run += 1
            except optuna.exceptions.StorageInternalError as exc:
                raise StorageError(
                    f"storage {redact(storage_url)} failed during the sweep: {exc}"
                ) from exc
            finally:
                lock.release()
    finally:
        lock.close()


def _retry_now(
    study: optuna.Study,
    trial_id: int | None,
    workers: WorkersConfig,
    log: Callable[[str], None],
) -> None:
    """Enqueue the retry of a trial we stopped ourselves, as the heartbeat would have."""
    if trial_id is None:
        return
    frozen = study._storage.get_trial(trial_id)
    if frozen.state != TrialState.FAIL:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry_callback(workers)(study, frozen)
    log(
        f"[sweeper] trial #{frozen.number} stopped with a checkpoint and was re-enqueued; "
        "run the same command again to carry on"
    )


# --- one worker per GPU --------------------------------------------------------------------------


def parse_gpus(value: str, available: int) -> list[int]:
    """``all`` or ``0,1,3``: the GPU indices to start one worker on each."""
    if value.strip().lower() == "all":
        return list(range(available))
    try:
        indices = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"--gpus must be 'all' or comma-separated GPU indices like 0,1, but got --gpus={value!r}"
        ) from None
    if not indices:
        raise ConfigError(f"--gpus names no GPU, but got --gpus={value!r}")
    unknown = [index for index in indices if not 0 <= index < available]
    if unknown:
        raise ConfigError(
            f"--gpus={value!r} names GPU {unknown[0]}, but this machine has {available} "
            f"(indices 0..{available - 1})"
        )
    return list(dict.fromkeys(indices))


def spawn_gpu_workers(worker_argv: Sequence[str], gpus: Sequence[int]) -> int:
    """Start ``python -m sweeper <worker_argv>`` once per GPU, pinned with
    CUDA_VISIBLE_DEVICES; forward SIGINT/SIGTERM to them; return the worst exit code."""
    processes: list[subprocess.Popen[bytes]] = []
    for gpu in gpus:
        environment = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
        processes.append(
            subprocess.Popen([sys.executable, "-m", "sweeper", *worker_argv], env=environment)
        )
        print(f"[sweeper] worker {processes[-1].pid} on GPU {gpu}", flush=True)

    def forward(signal_number: int, frame: FrameType | None) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal_number)

    previous = {
        number: signal.signal(number, forward) for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        codes = [process.wait() for process in processes]
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return max(codes, key=abs, default=0)
