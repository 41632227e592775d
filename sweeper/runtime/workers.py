"""Workers: many processes, on many machines, run one study until its budget is met.

:func:`run_trials` is the entry point. It is a loop of ``study.optimize(n_trials=1)`` calls,
so every trial runs under Optuna's own machinery (heartbeats, stale-trial retries,
callbacks), with two things Optuna leaves to the caller:

- **A shared budget.** ``MaxTrialsCallback`` only stops a worker after its trial ends, so 4
  workers at 19/20 would all start one more. Here every start is claimed in the database
  (:class:`~sweeper.runtime.storage.ResilientRDBStorage`): the transaction that makes the
  trial RUNNING (a new one, or an enqueued one popped from the queue) locks the study's row,
  counts finished and running trials and refuses when the budget is taken, so a study with
  ``n_trials=20`` ends with exactly 20 finished trials however many workers join it, and the
  lock lasts one short transaction, not a whole start. A worker that finds the budget taken
  by running trials waits, holding no connection: one of them may die and come back as a
  retry.
- **A clean stop.** The first SIGINT/SIGTERM/SIGUSR1 stops training at the next step
  boundary, saves a checkpoint, fails the trial and enqueues its retry at once (Optuna
  would leave it RUNNING until its heartbeat went stale). Signals within
  ``STOP_WINDOW_SECONDS`` of it are the same stop arriving again (the process group, a
  ``--gpus`` parent forwarding it, Slurm signalling every process); a second Ctrl-C after
  that exits immediately.
- **A database that goes away.** Once the loop runs, the storage rides out an outage
  (:mod:`sweeper.runtime.outage`): every call retries for up to
  ``workers.storage_outage_seconds``. Past that, a trial stops with a checkpoint and is left
  RUNNING, untold (telling it would need the database): its heartbeat goes stale and it is
  retried like a dead worker's, and the worker exits with
  :class:`~sweeper.errors.StorageOutageError`.
- **A failing trial fails alone.** Anything a trial raises (other than a stop we asked
  for and storage errors) fails that trial with its reason stored on it, and the worker
  goes on. After ``workers.max_consecutive_failures`` such trials in a row (all workers
  counted) every worker stops with :class:`~sweeper.errors.TrialsFailingError`.

:func:`spawn_gpu_workers` starts one worker process per GPU (or ``trials_per_gpu`` of them,
each held to its share of the GPU's memory) for ``sweeper worker --gpus``.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Literal

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from sweeper.attributes import (
    FAILURE_ATTR,
    TRACEBACK_ATTR,
)
from sweeper.errors import (
    ConfigError,
    StorageError,
    TrialCrashed,
    TrialInterrupted,
    TrialsFailingError,
)
from sweeper.runtime.storage import (
    BUDGET_STATES,
    BudgetTaken,
    ResilientRDBStorage,
    StorageLock,
    TrialBudget,
    end_heartbeat,
    open_lock,
    redact,
    retry_callback,
    storage_health,
)
from sweeper.settings.config import WorkersConfig

StudyCallback = Callable[[optuna.Study, FrozenTrial], None]


class _QuietInterruptedTrials(logging.Filter):
    """Optuna logs a failed trial with its whole chained traceback. A stop we asked for is
    no failure, and a trial that raised gets one line of ours (its frames are stored on it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, (TrialInterrupted, TrialCrashed))


logging.getLogger("optuna.study._optimize").addFilter(_QuietInterruptedTrials())


# --- stopping on a signal --------------------------------------------------------------------


# Stop signals: Ctrl-C, SIGTERM (kill, Slurm preemption and scancel, Kubernetes pod
# deletion), SIGUSR1 (the time-limit warning of the Slurm script `sweeper slurm` writes).
STOP_SIGNALS: tuple[int, ...] = (signal.SIGINT.value, signal.SIGTERM.value, signal.SIGUSR1.value)
# Stop signals within this many seconds of the first are the same stop delivered again.
STOP_WINDOW_SECONDS = 3.0


class StopRequest:
    """SIGINT/SIGTERM/SIGUSR1 handling: one clean stop however many signals ask for it.

    The first signal asks for a clean stop: the handler only sets a flag, which training
    checks at each step boundary (see ``training.train_trial``) and the worker loop between
    trials. Signals that arrive within ``window_seconds`` of the first are the same stop
    arriving again (Ctrl-C reaches the whole process group, so a ``--gpus`` worker gets it
    directly and once more forwarded by its parent; Slurm signals every process of a task)
    and are ignored. A signal after the window is a second request: exit at once (the
    heartbeat then retries the trial).

    SIGUSR1 is Slurm's time-limit warning (``--signal=B:USR1@<seconds>``, see
    :mod:`sweeper.launch.cluster`): the same clean stop, after which the worker requeues its own
    Slurm task (:func:`sweeper.runtime.slurm.requeue_own_slurm_task`).

    ``forward``, when given, is called with the signal instead of stopping this process,
    once per stop (and again for a second stop after the window): what the ``--gpus`` parent
    does for its worker processes.
    """

    def __init__(
        self,
        window_seconds: float = STOP_WINDOW_SECONDS,
        forward: Callable[[int], None] | None = None,
    ) -> None:
        self._event = threading.Event()
        self.signal_number: int | None = None
        self.window_seconds = window_seconds
        self.forward = forward
        self._first_at: float | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on a stop request; True when one came."""
        return self._event.wait(seconds)

    def request(self, signal_number: int) -> None:
        if self._first_at is None:
            self._first_at = time.monotonic()
        if self.signal_number is None:
            self.signal_number = signal_number
        self._event.set()

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        name = signal.Signals(signal_number).name
        now = time.monotonic()
        if self._first_at is not None and now - self._first_at < self.window_seconds:
            return  # the same stop, delivered again (process group, forwarded, every process)
        if self.forward is not None:
            # The --gpus parent: pass each distinct stop on once; its workers decide.
            first = self._first_at is None
            self._first_at = now
            if self.signal_number is None:
                self.signal_number = signal_number
            self._event.set()
            word = "stopping every worker cleanly" if first else "telling every worker to exit now"
            print(f"\n[sweeper] {name}: {word}", file=sys.stderr, flush=True)
            self.forward(signal_number)
            return
        if self._event.is_set():
            print(f"\n[sweeper] second {name}: exiting now", file=sys.stderr, flush=True)
            os._exit(128 + signal_number)
        self.request(signal_number)
        print(
            f"\n[sweeper] {name}: stopping at the next training step, saving a checkpoint and "
            f"leaving the trial to be retried (Ctrl-C again, after {self.window_seconds:g} s, "
            "exits at once)",
            file=sys.stderr,
            flush=True,
        )

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle the stop signals while the block runs (main thread only; a no-op
        elsewhere). ``sweeper`` runs its sweep and worker commands inside it from the start,
        so a stop during tokenization is as clean as one during training; nested use
        changes nothing."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
        try:
            for number in STOP_SIGNALS:
                signal.signal(number, self._handle)
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


# --- a failing trial fails alone -------------------------------------------------------------

# A trial that raised stores why, as user attributes: ``failure`` ("RuntimeError: ...")
# and ``failure_traceback`` (its last frames). A trial stopped by a signal stores only
# ``failure``; a dead worker's trial, failed by the heartbeat check, stores neither.
TRACEBACK_FRAMES = 5
MAX_FAILURE_CHARS = 1000
MAX_TRACEBACK_CHARS = 4000

# Exceptions that are no failure of the trial's own: they stop the worker (a stop we asked
# for, the storage) or are Optuna's own verdict (pruned), so they pass through unrecorded.
PASSED_THROUGH: tuple[type[Exception], ...] = (
    optuna.TrialPruned,
    TrialInterrupted,
    StorageError,
    optuna.exceptions.StorageInternalError,
    sqlalchemy.exc.SQLAlchemyError,
)


def _describe_failure(error: BaseException) -> str:
    """``"RuntimeError: message"``, as a user attribute holds it."""
    message = str(error).strip()
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text if len(text) <= MAX_FAILURE_CHARS else text[: MAX_FAILURE_CHARS - 3] + "..."


def failure_traceback(error: BaseException) -> str:
    """The last frames of ``error``'s traceback and its message, as Python prints them."""
    frames = traceback.extract_tb(error.__traceback__)[-TRACEBACK_FRAMES:]
    text = "".join(traceback.format_list(frames) + traceback.format_exception_only(error))
    return text if len(text) <= MAX_TRACEBACK_CHARS else "..." + text[-MAX_TRACEBACK_CHARS:]


def _run_objective(objective: Callable[[optuna.Trial], float], trial: optuna.Trial) -> float:
    """``objective(trial)``; what it raises of its own is stored on the trial (before Optuna
    marks it FAIL) and raised again as :class:`TrialCrashed`."""
    inherited = trial.user_attrs  # a retry starts with a copy of its failed trial's
    for key in (FAILURE_ATTR, TRACEBACK_ATTR):
        if inherited.get(key) is not None:
            trial.set_user_attr(key, None)
    try:
        return objective(trial)
    except PASSED_THROUGH:
        raise
    except Exception as error:
        reason = _describe_failure(error)
        trial.set_user_attr(FAILURE_ATTR, reason)
        trial.set_user_attr(TRACEBACK_ATTR, failure_traceback(error))
        raise TrialCrashed(reason) from error


def is_crashed(trial: FrozenTrial) -> bool:
    """A trial that failed because its own code raised (not stopped, not a dead worker's)."""
    return trial.state == TrialState.FAIL and bool(trial.user_attrs.get(TRACEBACK_ATTR))


def failure_streak(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that raised since the last one that finished (completed or pruned), all
    workers counted, oldest first. Trials are taken in the order they ended; running and
    waiting ones, and failed ones that did not raise (stopped by a signal, or a dead
    worker's), neither count nor break the streak. On sweeper's RDB storage only the failed
    trials since the last finished one are read (sweeper.runtime.queries)."""
    backend = _resilient(study)
    if backend is not None:
        since = backend.failed_since_finished(study._study_id)
        return [trial for trial in map(backend.get_trial, since) if is_crashed(trial)]
    ended = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    )
    ended.sort(key=lambda trial: (trial.datetime_complete or datetime.datetime.min, trial.number))
    streak: list[FrozenTrial] = []
    for trial in reversed(ended):
        if trial.state != TrialState.FAIL:
            break
        if is_crashed(trial):
            streak.append(trial)
    return streak[::-1]


def check_failure_streak(study: optuna.Study, workers: WorkersConfig) -> None:
    """Raise :class:`TrialsFailingError` when the study's last trials all raised."""
    limit = workers.max_consecutive_failures
    streak = failure_streak(study)
    if len(streak) < limit:
        return
    shown = streak[-10:]
    numbers = ("..., " if len(streak) > len(shown) else "") + ", ".join(
        f"#{trial.number}" for trial in shown
    )
    last = streak[-1]
    reason = (str(last.user_attrs.get(FAILURE_ATTR) or "").strip().splitlines() or ["?"])[0]
    raise TrialsFailingError(
        f"the last {len(streak)} trials of study {study.study_name!r} ({numbers}) all failed, "
        f"reaching workers.max_consecutive_failures={limit}; trial #{last.number} failed with "
        f"{reason}. Every worker stops rather than spend the budget on trials that fail "
        "the same way. Fix the cause (`sweeper show` lists each trial's reason, and its user "
        "attribute failure_traceback holds the last frames), then run the same command with "
        f"--set workers.max_consecutive_failures={len(streak) + 1} to try one more trial; "
        "the count starts again from 0 as soon as a trial completes or is pruned"
    )


# --- the shared budget -------------------------------------------------------------------------


class StopReason(enum.Enum):
    """Why a worker's loop ended."""

    BUDGET_MET = "budget met"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"


@dataclass
class WorkerResult:
    trials_run: int
    reason: StopReason
    signal_number: int | None = None


def _resilient(study: optuna.Study) -> ResilientRDBStorage | None:
    """The study's storage when sweeper opened it (it claims trials and counts in SQL)."""
    storage = getattr(study._storage, "_backend", study._storage)
    return storage if isinstance(storage, ResilientRDBStorage) else None


def _state_counts(study: optuna.Study) -> dict[TrialState, int]:
    """Trials in each state, across every worker: counted in the database where it can."""
    backend = _resilient(study)
    if backend is not None:
        return backend.state_counts(study._study_id)
    counts: dict[TrialState, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] = counts.get(trial.state, 0) + 1
    return counts


def budget_counts(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials in storage, across every worker."""
    counts = _state_counts(study)
    return sum(counts.get(state, 0) for state in BUDGET_STATES), counts.get(TrialState.RUNNING, 0)


def _fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's own check: RUNNING trials whose heartbeat stopped are failed and retried."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _budget_action(
    counts: dict[TrialState, int], n_trials: int | None, queue_only: bool
) -> tuple[Literal["done", "wait", "run"], str]:
    finished = sum(counts.get(state, 0) for state in BUDGET_STATES)
    running = counts.get(TrialState.RUNNING, 0)
    waiting = counts.get(TrialState.WAITING, 0)
    if n_trials is not None and finished >= n_trials:
        return "done", ""
    if queue_only and waiting == 0 and running == 0:
        return "done", ""
    full = n_trials is not None and finished + running >= n_trials
    if full or (queue_only and waiting == 0):
        done = f"{finished}/{n_trials}" if n_trials is not None else f"{finished}"
        return "wait", (
            f"[sweeper] {done} finished and {running} running "
            "elsewhere: waiting in case one of them dies and is retried"
        )
    return "run", ""


def _next_action(
    study: optuna.Study, workers: WorkersConfig, n_trials: int | None, queue_only: bool
) -> tuple[Literal["done", "wait", "run"], str]:
    """Whether the budget is met, a trial may start, or the worker waits (the budget is
    taken by running trials, one of which may die and come back); with the line to log when
    it waits. Counts only: the start itself is claimed in the database (a claim that finds
    the last place taken in between raises BudgetTaken, and the worker counts again)."""
    counts = _state_counts(study)
    action, note = _budget_action(counts, n_trials, queue_only)
    if action == "wait" and counts.get(TrialState.RUNNING, 0):
        # Optuna checks for stale trials as a trial starts; a worker about to wait checks
        # too, so that a dead worker's trial comes back as a retry it can start.
        _fail_stale_trials(study)
        action, note = _budget_action(_state_counts(study), n_trials, queue_only)
    if action != "done":
        # Before a trial is started (a worker on a study whose last trials failed stops at
        # once) and while waiting (so every worker stops).
        check_failure_streak(study, workers)
    return action, note


def _freeze_startup_heap() -> None:
    """Move everything alive before the first trial (the imported libraries, the tokenized
    data, the study) out of the garbage collector's way: it lives as long as the worker.

    Every trial ends in a full collection (accelerate frees memory as training starts,
    :func:`sweeper.trial.training.release_memory` as it ends, so a long study does not grow),
    and a full collection walks every tracked object: over the half a million that torch
    and transformers leave behind it took 0.23 s, twice a trial, on a 2-core CPU; after the
    freeze it walks only what the trial made (docs/benchmarks/speed.md). ``run_trials``
    unfreezes it when it returns."""
    gc.collect()
    gc.freeze()


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
    queue_only: bool = False,
) -> WorkerResult:
    """Run trials of ``study`` until ``n_trials`` have finished in storage (all workers
    counted), ``timeout_seconds`` have passed, or a stop is requested. A trial that raises
    fails alone; ``workers.max_consecutive_failures`` of them in a row raise
    :class:`~sweeper.errors.TrialsFailingError`.

    With ``queue_only`` the budget is the study's queue of enqueued (WAITING) trials, as
    ``sweeper confirm`` enqueues them: the worker never samples a trial of its own, ends
    when no trial is waiting or running, and waits while some run elsewhere (one may die
    and come back as a retry)."""
    stop = stop or StopRequest()
    health = storage_health(study)
    if health is not None:
        health.armed = True  # started: from now on an outage is ridden out, not an error
    backend = _resilient(study)
    # Sweeper's storage claims each start in the database (ResilientRDBStorage.budget);
    # any other storage takes a lock around the whole start, as it cannot.
    lock = None if backend is not None else open_lock(storage_url, f"budget/{study.study_name}")
    if backend is not None:
        backend.budget = TrialBudget(study._study_id, n_trials, queue_only)
    started = time.monotonic()
    current: dict[str, int] = {}
    gated = _gated_objective(objective, lock, current)
    loop = _Loop(
        study, gated, callbacks, workers, log, lock, storage_url, n_trials, queue_only, current
    )
    _freeze_startup_heap()  # undone in the finally below: a caller's heap is its own after
    try:
        return _turns(loop, stop, None if timeout_seconds is None else started + timeout_seconds)
    finally:
        if backend is not None:
            backend.budget = None
        if lock is not None:
            lock.close()
        gc.unfreeze()


def _turns(loop: _Loop, stop: StopRequest, deadline: float | None) -> WorkerResult:
    """``run_trials``'s loop: a turn at a time until the budget is met, the deadline (a
    ``time.monotonic()`` value) passes or a stop comes."""
    trials_run, waiting_logged = 0, False
    while True:
        if stop.requested:
            return WorkerResult(trials_run, StopReason.INTERRUPTED, stop.signal_number)
        if deadline is not None and time.monotonic() >= deadline:
            return WorkerResult(trials_run, StopReason.TIMEOUT)
        action, waiting_note = _start_one(loop)
        if isinstance(action, int):
            stop.request(action)
            return WorkerResult(trials_run, StopReason.INTERRUPTED, action)
        if action == "done":
            return WorkerResult(trials_run, StopReason.BUDGET_MET)
        if action == "wait":
            if not waiting_logged:
                loop.log(waiting_note)
                waiting_logged = True
            stop.wait(loop.workers.poll_seconds)
            continue
        waiting_logged = False
        if action == "ran":
            trials_run += 1


@dataclass
class _Loop:
    """What each turn of ``run_trials``'s loop works with."""

    study: optuna.Study
    gated: Callable[[optuna.Trial], float]
    callbacks: Sequence[StudyCallback]
    workers: WorkersConfig
    log: Callable[[str], None]
    lock: StorageLock | None
    storage_url: str
    n_trials: int | None
    queue_only: bool
    current: dict[str, int]


def _start_one(loop: _Loop) -> tuple[Literal["done", "wait", "ran", "taken"] | int, str]:
    """One turn of the loop: count, then run a trial when there is room. Returns what
    happened (the signal number when a stop interrupted the trial) and the line to log
    when the worker is to wait."""
    if loop.lock is not None:
        loop.lock.acquire()
    try:
        action, waiting_note = _next_action(
            loop.study, loop.workers, loop.n_trials, loop.queue_only
        )
        if action != "run":
            return action, waiting_note
        loop.current.clear()
        try:
            interrupted = _optimize_one(
                loop.study, loop.gated, loop.callbacks, loop.current, loop.workers, loop.log
            )
        except BudgetTaken:
            return "taken", ""  # another worker claimed the last place since we counted
        return ("ran" if interrupted is None else interrupted), ""
    except optuna.exceptions.StorageInternalError as exc:
        raise StorageError(
            f"storage {redact(loop.storage_url)} failed during the sweep: {exc}"
        ) from exc
    finally:
        if loop.lock is not None:
            loop.lock.release()


def _gated_objective(
    objective: Callable[[optuna.Trial], float],
    lock: StorageLock | None,
    current: dict[str, int],
) -> Callable[[optuna.Trial], float]:
    """``objective`` as ``run_trials`` runs it: a budget lock (storages that cannot claim a
    start in the database) is released once the trial is RUNNING (other workers count it),
    and an outage past the limit leaves Optuna untold."""

    def gated(trial: optuna.Trial) -> float:
        if lock is not None:
            lock.release()
        current["trial_id"] = trial._trial_id
        try:
            return _run_objective(objective, trial)
        except StorageError as failure:
            # The database failed the trial (past the outage limit, or a fault waiting
            # cannot fix): Optuna must not tell it (that needs the database); it stays
            # RUNNING, goes stale and is retried.
            raise _AbandonedTrial(failure) from failure
        finally:
            end_heartbeat(trial.study, trial._trial_id)

    return gated


class _AbandonedTrial(BaseException):
    """Carries a StorageError out of ``study.optimize`` past Optuna's tell: Optuna tells
    the trial of any ``Exception``, and a failed tell ends in an ``UnboundLocalError``
    inside Optuna."""

    def __init__(self, failure: StorageError):
        super().__init__(str(failure))
        self.failure = failure


def _storage_error_in(error: BaseException) -> StorageError | None:
    """The StorageError behind ``error`` (Optuna may have raised on top of it)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, StorageError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _optimize_one(
    study: optuna.Study,
    gated: Callable[[optuna.Trial], float],
    callbacks: Sequence[StudyCallback],
    current: dict[str, int],
    workers: WorkersConfig,
    log: Callable[[str], None],
) -> int | None:
    """One trial through Optuna; the signal number when a stop interrupted it (its retry is
    enqueued at once), else None (a trial that raised is reported, and fails alone)."""
    try:
        study.optimize(gated, n_trials=1, callbacks=list(callbacks), catch=(TrialCrashed,))
    except TrialInterrupted as interrupted:
        _retry_now(study, current.get("trial_id"), workers, log)
        return interrupted.signal_number
    except _AbandonedTrial as abandoned:
        raise abandoned.failure from None
    except Exception as error:
        failure = _storage_error_in(error)
        if failure is not None:
            raise failure from None
        if _failed_elsewhere(study, current.get("trial_id"), error, log):
            return None
        raise
    _report_crash(study, current.get("trial_id"), log)
    return None


def _failed_elsewhere(
    study: optuna.Study, trial_id: int | None, error: Exception, log: Callable[[str], None]
) -> bool:
    """Whether Optuna's tell failed because another worker had already failed this trial as
    stale (its heartbeat came late: a starved or paused process) and retried it: the retry
    carries on, and so does this worker. Said in one line."""
    told_late = False
    link: BaseException | None = error
    while link is not None and not told_late:  # Optuna asserts on top of its own error
        # Tell's check found the trial finished (ValueError), or the trial was failed between
        # that check and the write (the scale run at da0ee06 met it three times).
        told_late = isinstance(link, optuna.exceptions.UpdateFinishedTrialError) or (
            isinstance(link, ValueError) and str(link).startswith("Cannot tell a")
        )
        link = link.__context__
    if trial_id is None or not told_late:
        return False
    frozen = study._storage.get_trial(trial_id)
    if frozen.state != TrialState.FAIL:
        return False
    log(
        f"[sweeper] trial #{frozen.number} ended here, but another worker had failed it as "
        "stale (its heartbeat came later than workers.grace_period_seconds) and retried it; "
        "its retry counts, this result does not"
    )
    return True


def _report_crash(study: optuna.Study, trial_id: int | None, log: Callable[[str], None]) -> None:
    """Say that a trial raised (the worker goes on); free what its traceback held."""
    if trial_id is None:
        return
    frozen = study._storage.get_trial(trial_id)
    if not is_crashed(frozen):
        return
    gc.collect()  # the exception's frames held the trial's model and trainer
    log(
        f"[sweeper] trial #{frozen.number} failed and is not retried: {frozen.user_attrs[FAILURE_ATTR]}"
    )


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


# Set by `sweeper worker --gpus` for each worker it starts when several share a GPU: the
# share of the GPU's memory that worker may allocate (see apply_gpu_memory_fraction).
GPU_MEMORY_FRACTION_ENV = "SWEEPER_GPU_MEMORY_FRACTION"
# Test-only: the number of GPUs `sweeper worker --gpus` believes this machine has, so the
# several-workers-per-GPU path runs on a CPU machine (the workers then train on the CPU).
FAKE_GPU_COUNT_ENV = "SWEEPER_FAKE_GPU_COUNT"


def gpu_count() -> int:
    """GPUs on this machine (or ``SWEEPER_FAKE_GPU_COUNT`` in tests)."""
    fake = os.environ.get(FAKE_GPU_COUNT_ENV)
    if fake is not None:
        if not fake.strip().isdigit():
            raise ConfigError(
                f"{FAKE_GPU_COUNT_ENV} must be a whole number of GPUs (it is for tests only), "
                f"but got {FAKE_GPU_COUNT_ENV}={fake!r}; unset it to use the real GPUs"
            )
        return int(fake)
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_worker_environments(
    gpus: Sequence[int], trials_per_gpu: int = 1
) -> list[tuple[int, dict[str, str]]]:
    """(GPU, extra environment) of each worker process: ``trials_per_gpu`` per GPU, each
    pinned with CUDA_VISIBLE_DEVICES and, when several share a GPU, told its memory share.
    ``trials_per_gpu`` comes checked from the flag or the study's configuration."""
    # GPU indices count the devices this process sees: where CUDA_VISIBLE_DEVICES already
    # narrows them (a Slurm task's --gres, a user's own pinning), index i is its i-th entry.
    visible = [
        part.strip()
        for part in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
        if part.strip()
    ]
    workers = []
    for gpu in gpus:
        device = visible[gpu] if gpu < len(visible) else str(gpu)
        for _ in range(trials_per_gpu):
            extra = {"CUDA_VISIBLE_DEVICES": device}
            if trials_per_gpu > 1:
                extra[GPU_MEMORY_FRACTION_ENV] = f"{1.0 / trials_per_gpu:.6f}"
            workers.append((gpu, extra))
    return workers


def apply_gpu_memory_fraction() -> float | None:
    """Limit this process to its share of the GPU's memory, as ``SWEEPER_GPU_MEMORY_FRACTION``
    says (set for each of several workers sharing a GPU), so a trial that outgrows its share
    runs out of memory itself (and is pruned) instead of taking its neighbours down.
    Returns the fraction applied, or None (no variable, or no CUDA)."""
    raw = os.environ.get(GPU_MEMORY_FRACTION_ENV)
    if raw is None or not raw.strip():
        return None
    try:
        fraction = float(raw)
    except ValueError:
        fraction = float("nan")
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(
            f"{GPU_MEMORY_FRACTION_ENV} must be a fraction in (0, 1], but got "
            f"{GPU_MEMORY_FRACTION_ENV}={raw!r}; `sweeper worker --gpus ... --trials-per-gpu N` "
            "sets it to 1/N, so unset it or use --trials-per-gpu"
        )
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.set_per_process_memory_fraction(fraction)
    return fraction


# Set in the environment of each worker `sweeper worker --gpus` starts: the parent, not
# they, speaks for the Slurm task (it requeues the task once, see sweeper.launch.cluster).
SPAWNED_BY_GPUS_ENV = "SWEEPER_SPAWNED_BY_GPUS"
# And its index among them (0, 1, ...): a seeded sampler adds it to its seed (sweeper.study.sweep).
WORKER_INDEX_ENV = "SWEEPER_WORKER_INDEX"


def worker_index() -> int:
    """This process's index among the workers `sweeper worker --gpus` started (0 alone)."""
    value = os.environ.get(WORKER_INDEX_ENV, "0")
    return int(value) if value.isdigit() else 0


def spawn_gpu_workers(
    worker_argv: Sequence[str],
    gpus: Sequence[int],
    *,
    trials_per_gpu: int = 1,
    stop: StopRequest | None = None,
    sampler_seed: int | None = None,
    environment: Mapping[str, str] | None = None,
) -> int:
    """Start ``python -m sweeper <worker_argv>`` ``trials_per_gpu`` times per GPU, pinned
    with CUDA_VISIBLE_DEVICES (and each held to 1/trials_per_gpu of the GPU's memory);
    forward each stop (SIGINT/SIGTERM/SIGUSR1) to them once; return the worst exit code.

    Worker i gets ``SWEEPER_WORKER_INDEX=i``; with a seeded sampler it samples with seed
    ``sampler_seed + i`` (sweeper.study.sweep.open_study): each process would otherwise draw the
    same random sequence, and workers started together would run the same sampled trials.
    The study's stored configuration keeps the one seed.

    Ctrl-C reaches the workers directly as well (one process group), and Slurm signals every
    process of a task: they take the forwarded copy, which comes within
    :data:`STOP_WINDOW_SECONDS`, as the same stop. ``stop`` tells the caller which signal
    stopped them. ``environment`` is added to theirs: the storage URL travels there, never on
    their command lines."""
    processes: list[subprocess.Popen[bytes]] = []

    def forward(signal_number: int) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal_number)

    stop = stop or StopRequest()
    stop.forward = forward
    with stop.installed():
        workers = gpu_worker_environments(gpus, trials_per_gpu)
        for index, (gpu, extra) in enumerate(workers):
            if stop.requested:
                break  # stopped while starting them: start no more
            child_environment = {
                **os.environ,
                **(environment or {}),
                **extra,
                SPAWNED_BY_GPUS_ENV: "1",
                WORKER_INDEX_ENV: str(index),
            }
            argv = list(worker_argv)
            seeded = ""
            if sampler_seed is not None and len(workers) > 1:
                seeded = f", sampler seed {sampler_seed + index}"
            processes.append(
                subprocess.Popen([sys.executable, "-m", "sweeper", *argv], env=child_environment)
            )
            share = f" (1/{trials_per_gpu} of its memory)" if trials_per_gpu > 1 else ""
            print(f"[sweeper] worker {processes[-1].pid} on GPU {gpu}{share}{seeded}", flush=True)
        codes = [process.wait() for process in processes]
    if not codes and stop.signal_number is not None:
        return 128 + stop.signal_number
    return max(codes, key=abs, default=0)
