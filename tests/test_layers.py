"""The package as a newcomer reads it: each subpackage names its public surface (``__all__``
in its ``__init__``, by the module that defines each name), another package imports only
that surface, every name of it loads from its module, and a function nothing outside its
module calls is marked private. (`make lint` checks the layers themselves: import-linter.)
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "sweeper"
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def cross_package_imports() -> Iterator[tuple[Path, str, str, str]]:
    """(importing file, package, module, name) of every import across subpackages."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        importer = parts[1] if len(parts) > 2 else None
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.module):
                continue
            module = node.module.split(".")
            if module[0] == "sweeper" and len(module) >= 3 and module[1] != importer:
                for alias in node.names:
                    yield path, module[1], module[2], alias.name


def test_another_package_imports_only_a_subpackages_surface() -> None:
    outside = [
        f"{path.relative_to(REPO_ROOT)} imports sweeper.{package}.{module}.{name}"
        for path, package, module, name in cross_package_imports()
        if name not in importlib.import_module(f"sweeper.{package}")._SURFACE.get(module, [])
    ]
    assert outside == [], (
        "not in the package's surface: add the name to _SURFACE in its __init__.py, or keep "
        "it inside the package\n" + "\n".join(outside)
    )


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_each_name_of_a_surface_loads_from_its_module(package: str) -> None:
    surface = importlib.import_module(f"sweeper.{package}")
    homes = {name: module for module, names in surface._SURFACE.items() for name in names}
    assert surface.__all__ == sorted(homes), f"sweeper.{package} names no public surface"
    for name in surface.__all__:
        home = importlib.import_module(f"sweeper.{package}.{homes[name]}")
        assert getattr(surface, name) is getattr(home, name), name
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        surface.nothing_here  # noqa: B018


def test_a_function_nothing_outside_its_module_names_is_private() -> None:
    """A module-level function another file (code, tests, benchmarks, docs) never names is a
    helper: its name starts with an underscore, so a reader knows it can change freely."""
    sources = [
        *PACKAGE.rglob("*.py"),
        *(REPO_ROOT / "tests").rglob("*.py"),
        *(REPO_ROOT / "benchmarks").rglob("*.py"),
        *(REPO_ROOT / "scripts").rglob("*.py"),
        *(REPO_ROOT / "docs").rglob("*.md"),
        REPO_ROOT / "README.md",
        REPO_ROOT / "Makefile",
        REPO_ROOT / "pyproject.toml",
    ]
    texts = {path: path.read_text(encoding="utf-8") for path in sources}
    public_helpers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        for node in ast.parse(texts[path]).body:
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
                continue
            word = re.compile(rf"\b{re.escape(node.name)}\b")
            if not any(word.search(text) for other, text in texts.items() if other != path):
                public_helpers.append(f"{path.relative_to(REPO_ROOT)}: {node.name}")
    assert public_helpers == [], "name these _private:\n" + "\n".join(public_helpers)
