"""Whole sweeps through the command line and worker processes (marked end_to_end: make test-fast leaves them out)."""
