"""What a study found, shown: the summary every view reads (results, confirmation), the
terminal (console), the figures, the HTML report, the model card, the export of the best
checkpoint and optuna-dashboard."""
