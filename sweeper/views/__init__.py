"""What a study found, shown: the terminal tables (console), the figures, the HTML report,
the model card, the export of the best checkpoint and optuna-dashboard. Views read the
records (sweeper.records) and never train or write a trial."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweeper.views.card import write_card
    from sweeper.views.console import best_summary, confirmation_table, trials_table
    from sweeper.views.dashboard import Dashboard
    from sweeper.views.export import confirmed_export, export_best
    from sweeper.views.report import write_report

# What the other packages use, by the module that defines it; anything else in the
# package is its own business (tests/test_layers.py keeps this true).
_SURFACE = {
    "card": ["write_card"],
    "console": ["best_summary", "confirmation_table", "trials_table"],
    "dashboard": ["Dashboard"],
    "export": ["confirmed_export", "export_best"],
    "report": ["write_report"],
}
_HOME = {name: module for module, names in _SURFACE.items() for name in names}
__all__ = [
    "Dashboard",
    "best_summary",
    "confirmation_table",
    "confirmed_export",
    "export_best",
    "trials_table",
    "write_card",
    "write_report",
]


def __getattr__(name: str) -> Any:
    """Loaded on first use, so importing one module of the package loads no other."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
