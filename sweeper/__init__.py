"""sweeper: Optuna hyperparameter sweeps for fine-tuning transformer text classifiers.

The command line (``sweeper --help``) is the usual way in; the same steps from Python::

    import sweeper

    config = sweeper.load_study_config("studies/imdb.yaml", {"budget.n_trials": 4})
    study = sweeper.run_study(config)                    # runs or resumes; an optuna.Study
    summary = sweeper.summarize(sweeper.load_study(config.name, config.storage_url))
    print(summary.best.value if summary.best else "no trial finished")

Everything else is internal and may change between versions. Importing this package is
cheap: the parts that need torch and transformers load on first use.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from sweeper.errors import SweeperError

if TYPE_CHECKING:
    from sweeper.records.results import StudySummary, summarize
    from sweeper.settings.config import StudyConfig
    from sweeper.settings.study_file import load_study_config
    from sweeper.study.sweep import create_study, run_study
    from sweeper.study.sweep import load_existing_study as load_study

__all__ = [
    "StudyConfig",
    "StudySummary",
    "SweeperError",
    "__version__",
    "create_study",
    "load_study",
    "load_study_config",
    "run_study",
    "summarize",
]

try:
    __version__ = version("sweeper")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

# name -> (module, attribute): loaded on first use (PEP 562), so `sweeper --version` and
# config checks do not pay for importing torch.
_LAZY = {
    "StudyConfig": ("sweeper.settings.config", "StudyConfig"),
    "load_study_config": ("sweeper.settings.study_file", "load_study_config"),
    "StudySummary": ("sweeper.records.results", "StudySummary"),
    "summarize": ("sweeper.records.results", "summarize"),
    "create_study": ("sweeper.study.sweep", "create_study"),
    "run_study": ("sweeper.study.sweep", "run_study"),
    "load_study": ("sweeper.study.sweep", "load_existing_study"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'sweeper' has no attribute {name!r}")
