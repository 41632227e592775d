"""Benchmarks for sweeper: ``python -m benchmarks`` (or ``make bench``) runs every one available.

Each benchmark is a module of this package listed in :data:`BENCHMARK_MODULES`. A module
that is not there yet (``storage`` until someone writes it) is skipped; one that is there
but fails to import is an error, never silently skipped. A benchmark module defines:

``NAME``
    the command-line name, e.g. ``"trial-loop"`` (``python -m benchmarks trial-loop``);
``HELP``
    one line for ``--help``;
``add_arguments(parser)``
    its options on an ``argparse.ArgumentParser``; every option needs a default, and
    ``--quick`` (a smoke test of the harness in about a minute) is expected;
``run(args) -> int``
    runs it, prints a summary, writes ``benchmarks/results/latest/<name>.json`` (see
    :func:`benchmarks.common.write_results`) and returns an exit status;
``requirements(args) -> dict[str, str]`` (optional)
    the packages this run needs beyond the venv, each with what installs it: checked
    before anything runs (:func:`missing_requirements`), so a missing extra is one line.

Heavy imports (torch, transformers) belong inside ``run`` so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import warnings
from types import ModuleType

# In the order `python -m benchmarks` runs them.
BENCHMARK_MODULES = (
    "trial_loop",
    "storage",
    "gpu",
    "pruning",
    "checkpoints",
    "peers",
    "warmstart",
    "lora",
    "overhead",
    "scale",
)


def missing_requirements(module: ModuleType, args: argparse.Namespace) -> list[str]:
    """One line per package the run of ``module`` with ``args`` needs and cannot import,
    saying what installs it."""
    needs: dict[str, str] = module.requirements(args) if hasattr(module, "requirements") else {}
    missing = []
    for package, install in needs.items():
        try:
            with warnings.catch_warnings():  # a package's import-time warning is no error line
                warnings.simplefilter("ignore")
                importlib.import_module(package)
        except ImportError:
            missing.append(
                f"python -m benchmarks {module.NAME} needs the Python package {package!r}, "
                f"which is not installed: {install}"
            )
    return missing


def available() -> dict[str, ModuleType]:
    """The benchmark modules of this package, by command-line name."""
    found: dict[str, ModuleType] = {}
    for module_name in BENCHMARK_MODULES:
        qualified = f"{__name__}.{module_name}"
        module = importlib.import_module(qualified)
        for attribute in ("NAME", "HELP", "add_arguments", "run"):
            if not hasattr(module, attribute):
                raise AttributeError(
                    f"benchmark module {qualified} lacks {attribute!r}; see benchmarks/__init__.py"
                )
        found[module.NAME] = module
    return found
