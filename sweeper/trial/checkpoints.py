"""A trial's checkpoints on disk: where they live, which one a retry resumes from, and their
removal. :func:`remove_checkpoints` is the one place sweeper deletes a checkpoint (the
finished trial's stale ones, the study's unneeded trials, a confirmation's re-runs, a new
trial's leftovers): a checkpoint store other than a local disk changes this module only.

A trial's checkpoints live in ``<checkpoint_dir>/trial-<N>``, N the number of the first
trial of its retry chain, so a retry finds its predecessor's; the Trainer writes
``checkpoint-<step>`` folders there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

CHECKPOINT_PREFIX = "checkpoint-"
# Written last by the Trainer: a checkpoint without it was cut short.
TRAINER_STATE_FILE = "trainer_state.json"


def trial_checkpoint_dir(checkpoint_dir: Path, first_trial: int) -> Path:
    """Where the retry chain that began with trial ``first_trial`` keeps its checkpoints."""
    return checkpoint_dir / f"trial-{first_trial}"


def last_checkpoint(output_dir: Path) -> tuple[Path, int] | None:
    """The newest complete checkpoint under ``output_dir`` and its step. The Trainer writes
    ``trainer_state.json`` last, so a checkpoint cut short by a kill has none and is skipped."""
    found: list[tuple[int, Path]] = []
    for path in output_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name.removeprefix(CHECKPOINT_PREFIX)
        if suffix.isdigit() and (path / TRAINER_STATE_FILE).is_file():
            found.append((int(suffix), path))
    if not found:
        return None
    newest_step, newest = max(found)
    return newest, newest_step


def remove_checkpoints(directory: Path | str, keep: Path | str | None = None) -> None:
    """Delete a trial's checkpoint directory whole, or with ``keep`` every checkpoint in it
    but that one. A directory that is gone already is not an error (another worker, or a
    previous clean-up, got there first)."""
    directory = Path(directory)
    if keep is None:
        shutil.rmtree(directory, ignore_errors=True)
        return
    if not directory.is_dir():
        return
    kept = Path(keep).resolve()
    for checkpoint in directory.glob(f"{CHECKPOINT_PREFIX}*"):
        if checkpoint.resolve() != kept:
            shutil.rmtree(checkpoint, ignore_errors=True)
