"""What a study found, shown: the terminal tables (console), the figures, the HTML report,
the model card, the export of the best checkpoint and optuna-dashboard. Views read the
records (sweeper.records) and never train or write a trial."""

from sweeper.lazy import public_surface

# What the other packages use, by the module that defines it; anything else in the
# package is its own business (tests/test_layers.py keeps this true).
_SURFACE = {
    "card": ["write_card"],
    "console": ["best_summary", "confirmation_table", "trials_table"],
    "dashboard": ["Dashboard"],
    "export": ["confirmed_export", "export_best"],
    "report": ["write_report"],
}
__all__, __getattr__ = public_surface(__name__, _SURFACE)
