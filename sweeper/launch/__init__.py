"""The command line (cli) and the launchers that start workers on a cluster (cluster:
Slurm job arrays, Kubernetes Jobs). The top layer: nothing imports it."""

from sweeper.lazy import public_surface

# What the other packages use, by the module that defines it; anything else in the
# package is its own business (tests/test_layers.py keeps this true).
_SURFACE = {
    "cli": ["main"],
}
__all__, __getattr__ = public_surface(__name__, _SURFACE)
