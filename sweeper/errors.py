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


class PreflightError(ConfigError):
    """The pre-flight check found something that would fail every trial."""


class TrialsFailingError(SweeperError):
    """The study's last ``workers.max_consecutive_failures`` trials all raised: every worker
    stops rather than spend the budget on more trials that fail the same way."""
