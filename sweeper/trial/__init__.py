"""One trial: the model and tokenizer (models), the data and its splits (data), one
fine-tuning run with transformers' Trainer (training), its checkpoints on disk
(checkpoints) and the scoring of a kept checkpoint on a split (evaluation)."""
