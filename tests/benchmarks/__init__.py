"""The benchmarks run at their quick size, and their analysis code (marked benchmark: make test-fast leaves them out)."""
