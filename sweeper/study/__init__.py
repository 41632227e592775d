"""The study and its confirmation: which configuration a command runs with (resolve), the
pre-flight check (preflight), the sweep itself (sweep) and the re-training of its best
configurations with fresh seeds (confirm)."""
