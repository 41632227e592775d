"""The command line (cli) and the launchers that start workers on a cluster (cluster:
Slurm job arrays, Kubernetes Jobs). The top layer: nothing imports it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweeper.launch.cli import main

# What the other packages use, by the module that defines it; anything else in the
# package is its own business (tests/test_layers.py keeps this true).
_SURFACE = {
    "cli": ["main"],
}
_HOME = {name: module for module, names in _SURFACE.items() for name in names}
__all__ = ["main"]


def __getattr__(name: str) -> Any:
    """Loaded on first use, so importing one module of the package loads no other."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
