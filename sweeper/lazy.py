"""A package's public surface, loaded on first use (PEP 562): importing one module of a
subpackage loads no other (the CLI starts without torch), and ``sweeper.trial.train_trial``
still works. Each subpackage's ``__init__`` lists its surface by the module that defines
each name; tests/test_layers.py checks that other packages import nothing else."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def public_surface(
    package: str, by_module: Mapping[str, Sequence[str]]
) -> tuple[list[str], Callable[[str], Any]]:
    """(``__all__``, the module's ``__getattr__``) for ``package``'s surface ``by_module``
    ({module: [names]}); a name defined in two modules is an error here, not a surprise."""
    home: dict[str, str] = {}
    for module, names in by_module.items():
        for name in names:
            if name in home:
                raise ImportError(f"{package}: {name!r} is in {home[name]!r} and {module!r}")
            home[name] = module

    def load(name: str) -> Any:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{home[name]}"), name)

    return sorted(home), load
