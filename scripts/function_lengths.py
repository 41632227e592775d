"""`make lint`: no function over 80 lines, and at most 3 over 60, in the given folders.

A function's length runs from its `def` (decorators excluded) to its last line, docstring
and comments included: what a reader has to hold at once. Split a long one where a name
explains the part.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

HARD_LIMIT = 80
SOFT_LIMIT = 60
ALLOWED_OVER_SOFT = 3


def function_lengths(folder: Path) -> list[tuple[int, str]]:
    lengths = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                lengths.append((length, f"{path}:{node.lineno} {node.name}"))
    return lengths


def main(folders: list[str]) -> int:
    lengths = sorted(
        (item for folder in folders for item in function_lengths(Path(folder))), reverse=True
    )
    too_long = [item for item in lengths if item[0] > HARD_LIMIT]
    long = [item for item in lengths if SOFT_LIMIT < item[0] <= HARD_LIMIT]
    for length, where in too_long:
        print(f"{where}: {length} lines, over the limit of {HARD_LIMIT}; split it")
    if len(long) > ALLOWED_OVER_SOFT:
        print(f"{len(long)} functions over {SOFT_LIMIT} lines (at most {ALLOWED_OVER_SOFT}):")
        for length, where in long:
            print(f"  {where}: {length} lines")
    if too_long or len(long) > ALLOWED_OVER_SOFT:
        return 1
    print(
        f"function lengths: none over {HARD_LIMIT} lines, {len(long)} over {SOFT_LIMIT} "
        f"(at most {ALLOWED_OVER_SOFT})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["sweeper"]))
