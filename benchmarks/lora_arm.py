"""One study of the LoRA benchmark (``benchmarks.lora``), run in a process of its own.

``python -m benchmarks.lora_arm SPEC OUT`` runs the study that ``SPEC`` (a JSON file: the
study file, data, sizes, model, scratch folder, label) names to its budget, through
``benchmarks.pruning.run_search`` (sweeper's ``run_study``, what ``sweeper sweep`` runs), and
writes to ``OUT`` that search's record with each trial's costs added (trainable and total
parameters, the bytes of its kept checkpoint, the seconds of each checkpoint save, its
method) and the process's memory. A process per study, so that each arm's peak memory is its
own: the parent reads the child's maximum resident set from ``os.wait4`` (:func:`run_arm`),
which no earlier arm's peak can hide, and on a GPU the child records
``torch.cuda.max_memory_allocated`` itself.

The parent builds the same configuration with :func:`arm_config` to confirm the study's
choice afterwards, so both processes agree on the study's name and storage.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, quiet

TAG = "lora"


def arm_config(spec: dict[str, Any]) -> Any:
    """The study of ``spec``: the pruning benchmark's study (its sizes, no baselines, the
    examples grid) from the study file ``spec["study"]``, named ``lora-<label>``."""
    from benchmarks.pruning import study_config

    task = argparse.Namespace(study=Path(spec["study"]), data=Path(spec["data"]))
    return study_config(
        task, spec["sizes"], spec["model"], Path(spec["scratch"]), spec["label"], False, TAG
    )


def trial_method(config: Any, params: dict[str, Any]) -> str:
    """The fine-tuning method a trial ran: its ``method`` parameter where the study searches
    it, else the study's one method."""
    return str(params.get("method", config.space.methods()[0]))


def trial_costs(config: Any, trials: list[Any]) -> dict[int, dict[str, Any]]:
    """What each trial stored of its costs, by trial number."""
    from sweeper.attributes import (
        CHECKPOINT_BYTES_ATTR,
        SAVE_SECONDS_ATTR,
        TOTAL_PARAMETERS_ATTR,
        TRAINABLE_PARAMETERS_ATTR,
    )

    return {
        trial.number: {
            "method": trial_method(config, trial.params),
            "trainable_parameters": trial.user_attrs.get(TRAINABLE_PARAMETERS_ATTR),
            "total_parameters": trial.user_attrs.get(TOTAL_PARAMETERS_ATTR),
            "checkpoint_bytes": trial.user_attrs.get(CHECKPOINT_BYTES_ATTR),
            "save_seconds": list(trial.user_attrs.get(SAVE_SECONDS_ATTR) or []),
        }
        for trial in trials
    }


def resident_bytes() -> int | None:
    """This process's resident set now (VmRSS), in bytes; None where /proc has none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def run_study_here(spec: dict[str, Any]) -> dict[str, Any]:
    """The study of ``spec`` run to its budget in this process: its search record, each
    trial's costs, the resident memory before the study started (after the imports and the
    data) and, on a GPU, the peak of allocated GPU memory."""
    import torch

    from benchmarks.pruning import run_search

    quiet()
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    config = arm_config(spec)
    rss_before = resident_bytes()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    study, search = run_search(config, spec["label"], tag=TAG)
    costs = trial_costs(config, study.get_trials(deepcopy=False))
    for row in search["trials"]:
        row.update(costs.get(row["number"], {}))
    search["rss_bytes_before_study"] = rss_before
    search["self_max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    search["cuda_max_allocated_bytes"] = (
        torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    )
    search["threads"] = torch.get_num_threads()
    return search


def run_arm(spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``spec``'s study run in a child process (its output interleaved with ours): its
    search record, the child's wall seconds and its peak resident memory (``ru_maxrss`` of
    that child alone, from ``os.wait4``). A child that failed: its exit code, no record."""
    folder.mkdir(parents=True, exist_ok=True)
    spec_path, out_path = folder / f"{spec['label']}.spec.json", folder / f"{spec['label']}.json"
    spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    out_path.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    started = time.perf_counter()
    command = [sys.executable, "-m", "benchmarks.lora_arm", str(spec_path), str(out_path)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    process_seconds = round(time.perf_counter() - started, 2)
    measured = {"process_seconds": process_seconds, "max_rss_bytes": usage.ru_maxrss * 1024}
    if process.returncode != 0 or not out_path.is_file():
        return {"status": f"failed: exit code {process.returncode}", **measured}
    search: dict[str, Any] = json.loads(out_path.read_text(encoding="utf-8"))
    return {**search, **measured}


def main(argv: list[str] | None = None) -> int:
    spec_path, out_path = (argv if argv is not None else sys.argv[1:])[:2]
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    search = run_study_here(spec)
    Path(out_path).write_text(json.dumps(search, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    # Before anything imports transformers or datasets, as in benchmarks.__main__.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
