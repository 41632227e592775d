"""sweeper's tests: one folder per subpackage of sweeper, end_to_end/ for whole sweeps through
the command line and worker processes, benchmarks/ for the benchmarks' quick runs, and support/
for what they share (test servers, study builders)."""
