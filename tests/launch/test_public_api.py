"""The documented Python API (``sweeper.__all__``) and ``sweeper --version``."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

import sweeper


def test_version_flag_prints_the_installed_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sweeper", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sweeper {version('sweeper')}"
    assert sweeper.__version__ == version("sweeper")


def test_every_public_name_resolves_and_importing_the_package_is_cheap() -> None:
    for name in sweeper.__all__:
        assert getattr(sweeper, name) is not None, name
    # The package itself must not pull in torch (the CLI's --help and --version stay fast).
    probe = "import sys, sweeper; print('torch' in sys.modules, 'transformers' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'sweeper' has no attribute 'run'"):
        sweeper.run  # noqa: B018
