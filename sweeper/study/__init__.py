"""The study and its confirmation: which configuration a command runs with (resolve), the
pre-flight check (preflight), the sweep itself (sweep) and the re-training of its best
configurations with fresh seeds (confirm)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweeper.study.confirm import check_arguments, run_confirmation, run_pending_confirmation
    from sweeper.study.preflight import checkpoint_bytes
    from sweeper.study.resolve import locate_study, resolve_study, typed_overrides
    from sweeper.study.sweep import (
        create_study,
        load_existing_study,
        preflight_with_notices,
        run_study,
    )

# What the other packages use, by the module that defines it; anything else in the
# package is its own business (tests/test_layers.py keeps this true).
_SURFACE = {
    "confirm": ["check_arguments", "run_confirmation", "run_pending_confirmation"],
    "preflight": ["checkpoint_bytes"],
    "resolve": ["locate_study", "resolve_study", "typed_overrides"],
    "sweep": ["create_study", "load_existing_study", "preflight_with_notices", "run_study"],
}
_HOME = {name: module for module, names in _SURFACE.items() for name in names}
__all__ = [
    "check_arguments",
    "checkpoint_bytes",
    "create_study",
    "load_existing_study",
    "locate_study",
    "preflight_with_notices",
    "resolve_study",
    "run_confirmation",
    "run_pending_confirmation",
    "run_study",
    "typed_overrides",
]


def __getattr__(name: str) -> Any:
    """Loaded on first use, so importing one module of the package loads no other."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
