"""The storage and the workers: Optuna's RDB storage and its locks (storage), the trial loop
every worker runs with its budget, signals and heartbeats (workers), the scheduler a worker
runs under (slurm), and a local PostgreSQL without root (local_postgres)."""
