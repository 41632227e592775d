"""The one exception family sweeper raises for problems a user can fix.

Messages follow Optuna's style: name the key, the value that was given and what was
expected, e.g. ``dataset.text_column='body' is not a column of imdb.csv; the columns are
['review', 'sentiment']``. The CLI prints them without a traceback and exits non-zero.
"""


class SweeperError(Exception):
    """Base class of every error sweeper reports to a user."""


class ConfigError(SweeperError):
    """A study file or a command-line override is invalid."""


class DataError(SweeperError):
    """The dataset cannot be used: missing file or column, unknown label, empty split."""


class ModelError(SweeperError):
    """The model or tokenizer cannot be loaded."""


class StorageError(SweeperError):
    """The Optuna storage cannot be reached or does not hold the study."""


class StorageOutageError(StorageError):
    """The study database could not be reached for longer than
    ``workers.storage_outage_seconds`` while a worker ran: the worker saved what it could
    (the trial's checkpoint) and exits with :data:`EXIT_STORAGE_OUTAGE`; the trial is
    retried later, by this worker restarted or by another."""


class PreflightError(ConfigError):
    """The pre-flight check found something that would fail every trial."""


class TrialsFailingError(SweeperError):
    """The study's last ``workers.max_consecutive_failures`` trials all raised: every worker
    stops rather than spend the budget on more trials that fail the same way."""


class TrialInterrupted(SweeperError):
    """Raised by an objective that stopped because the worker was asked to stop."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number


class TrialCrashed(Exception):
    """Raised, from the original exception, for a trial whose own code raised, once its
    reason is stored; the worker's ``study.optimize(catch=...)`` fails the trial and goes
    on. Never seen outside :func:`sweeper.runtime.workers.run_trials`."""


class ExportError(SweeperError):
    """The best trial cannot be exported: no checkpoint, or an unusable target directory."""


class DashboardError(SweeperError):
    """The dashboard cannot start (the port is taken, the host cannot be bound)."""


class CardError(SweeperError):
    """The study cannot give a model card (no complete trial yet, an invalid license)."""


class CheckpointStoreError(SweeperError):
    """The checkpoint store (checkpoint_root an s3:// or gs:// URL) cannot be used, or a
    checkpoint in it is missing, partial or corrupt."""


class CheckpointStoreReadError(CheckpointStoreError):
    """The store could not be read at all (unreachable, refused): nothing is known about the
    checkpoint, so a resume must not pass it over as if it were corrupt."""


class ConfirmError(SweeperError):
    """Confirmation cannot start or go on: no finished trial, a plan that differs, no seeds."""


# Exit codes of `sweeper sweep`/`worker` (and the others), defined once: the README's
# "Exit statuses", the Slurm script and the Kubernetes podFailurePolicy (sweeper.launch.cluster)
# use these names; they live beside the errors they stand for.
# The budget is met (or the timeout passed, or nothing was left to do).
EXIT_OK = 0
# A problem a restart will not fix: study file, data, model, storage, options (SweeperError).
EXIT_USER_ERROR = 2
# The study's last workers.max_consecutive_failures trials all raised (TrialsFailingError).
EXIT_TRIALS_FAILING = 3
# The study database was unreachable for longer than workers.storage_outage_seconds while the
# worker ran (StorageOutageError): checkpoint saved, the trial is retried later. A restart
# may well fix it, so the schedulers restart the worker (EX_TEMPFAIL of sysexits.h).
EXIT_STORAGE_OUTAGE = 75
# Stopped by a signal, cleanly: checkpoint saved, trial re-enqueued (128 + the signal).
EXIT_STOPPED_SIGINT = 130  # Ctrl-C
EXIT_STOPPED_SIGUSR1 = 138  # Slurm's time-limit warning: the worker requeued its own task
EXIT_STOPPED_SIGTERM = 143  # kill, Slurm preemption or scancel, Kubernetes pod deletion
