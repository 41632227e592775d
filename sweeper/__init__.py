"""sweeper: Optuna hyperparameter sweeps for fine-tuning transformer text classifiers."""

from sweeper.errors import SweeperError

__all__ = ["SweeperError", "__version__"]
__version__ = "0.1.0"
