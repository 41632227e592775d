"""The command line (cli) and the launchers that start workers on a cluster (cluster:
Slurm job arrays, Kubernetes Jobs). The top layer: nothing imports it."""
