"""The ``sweeper`` command: sweep, worker, check, show, best, report, card, export, dashboard.

Settings resolve as command line, then study file, then defaults. Every SweeperError is
printed as one readable message with exit status 2 (3 when the study's last trials all
failed: TrialsFailingError); nothing else is caught here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweeper.config import (
    DEFAULT_STUDIES_DIR,
    StudyConfig,
    find_study_file,
    load_study_config,
    parse_overrides,
)
from sweeper.errors import ConfigError, SweeperError, TrialsFailingError

EXIT_USER_ERROR = 2
# The study's last workers.max_consecutive_failures trials all raised (TrialsFailingError).
EXIT_TRIALS_FAILING = 3


def _study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="a study name under studies/ or a path to a study file")
    parser.add_argument(
        "--storage", help="Optuna storage URL (default: SQLite under the runs directory)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a study-file key, e.g. --set model.max_length=128 (repeatable)",
    )
    parser.add_argument(
        "--studies-dir", type=Path, default=DEFAULT_STUDIES_DIR, help=argparse.SUPPRESS
    )


def _sweep_arguments(parser: argparse.ArgumentParser) -> None:
    _study_arguments(parser)
    parser.add_argument(
        "--n-trials",
        type=int,
        help="the study's total trial budget (finished trials in storage, all workers, count)",
    )
    parser.add_argument(
        "--timeout", type=float, help="stop starting trials after this many seconds"
    )
    parser.add_argument(
        "--checkpoint-root",
        help="where trial checkpoints go (a shared filesystem for several machines)",
    )
    parser.add_argument(
        "--keep-all-checkpoints",
        action="store_true",
        default=None,
        help="keep the checkpoints of pruned and non-best trials (default: delete them)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars, only one line per trial"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweeper", description=__doc__.splitlines()[0] if __doc__ else None
    )
    commands = parser.add_subparsers(dest="command", required=True)

    sweep = commands.add_parser("sweep", help="run or resume a study until its budget is met")
    _sweep_arguments(sweep)
    worker = commands.add_parser(
        "worker",
        help="join a study (e.g. on PostgreSQL) and run its trials until the shared budget is met",
    )
    _sweep_arguments(worker)
    worker.add_argument(
        "--gpus",
        help="start one worker per GPU, pinned with CUDA_VISIBLE_DEVICES: 'all' or e.g. 0,1,3",
    )
    worker.add_argument(
        "--trials-per-gpu",
        type=int,
        metavar="N",
        help="with --gpus: N worker processes share each GPU, each running its own trial in "
        "1/N of the GPU's memory (default: the study's workers.trials_per_gpu, 1)",
    )

    check = commands.add_parser(
        "check",
        help="check, writing nothing, what would fail every trial (model, data, storage, disk)",
    )
    _study_arguments(check)
    check.add_argument(
        "--checkpoint-root",
        help="where trial checkpoints would go (a shared filesystem for several machines)",
    )

    for name, text in (
        ("show", "print the study's trials as a table"),
        ("best", "print the best trial's params and checkpoint"),
    ):
        command = commands.add_parser(name, help=text)
        _study_arguments(command)
    _add_view_commands(commands)
    return parser


def _add_view_commands(commands: Any) -> None:
    """report, card, export, dashboard: what a finished (or running) study found."""
    report = commands.add_parser("report", help="write the study's HTML report (opens offline)")
    _study_arguments(report)
    report.add_argument(
        "--out",
        type=Path,
        help="the HTML file to write (default: <output_dir>/<study>/report.html)",
    )
    card = commands.add_parser("card", help="write the best trial's model card (README.md)")
    _study_arguments(card)
    card.add_argument(
        "--out",
        type=Path,
        help="the file or directory to write (default: <output_dir>/<study>/card/)",
    )
    export = commands.add_parser(
        "export", help="write the best trial's best checkpoint, tokenizer and card to a directory"
    )
    _study_arguments(export)
    export.add_argument("--to", type=Path, required=True, help="the directory to write")
    export.add_argument(
        "--force", action="store_true", help="write into --to even when it is not empty"
    )
    dashboard = commands.add_parser(
        "dashboard", help="serve optuna-dashboard on the study's storage"
    )
    _study_arguments(dashboard)
    dashboard.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only)",
    )
    dashboard.add_argument(
        "--port",
        type=int,
        default=8080,
        help="port to listen on (default: 8080; 0 = any free port)",
    )


def resolve_config(args: argparse.Namespace) -> StudyConfig:
    """CLI flags win over ``--set``, which wins over the study file, which wins over defaults."""
    overrides: dict[str, Any] = parse_overrides(args.overrides)
    flag_keys = {
        "storage": "storage",
        "n_trials": "budget.n_trials",
        "timeout": "budget.timeout_seconds",
        "checkpoint_root": "checkpoint_root",
        "keep_all_checkpoints": "keep_all_checkpoints",
        "trials_per_gpu": "workers.trials_per_gpu",
    }
    for attribute, key in flag_keys.items():
        value = getattr(args, attribute, None)
        if value is not None:
            overrides[key] = value
    return load_study_config(args.study, overrides, studies_dir=args.studies_dir)


def _study_name_and_storage(args: argparse.Namespace) -> tuple[str, str, str]:
    """For read-only commands a study file is optional when --storage is given."""
    try:
        find_study_file(args.study, args.studies_dir)
    except ConfigError:
        if args.storage:
            return Path(args.study).stem, args.storage, "validation_loss"
        raise
    config = resolve_config(args)
    return config.name, config.storage_url, config.objective.metric


def command_sweep(args: argparse.Namespace) -> int:
    from sweeper.reporting import best_summary
    from sweeper.study import run_study
    from sweeper.workers import StopRequest, apply_gpu_memory_fraction

    config = resolve_config(args)
    # One of several workers sharing a GPU (sweeper worker --trials-per-gpu): keep to its share.
    apply_gpu_memory_fraction()
    stop = StopRequest()
    study = run_study(config, show_progress=not args.no_progress, stop=stop)
    if stop.signal_number is not None:
        return 128 + stop.signal_number
    print(best_summary(study, config.objective.metric))
    return 0


def command_check(args: argparse.Namespace) -> int:
    from sweeper.preflight import run_preflight
    from sweeper.storage import redact

    config = resolve_config(args)
    checked = run_preflight(config)
    print(
        f"[sweeper] study {config.name!r} passed the pre-flight check: model {config.model.name!r} "
        f"at max_length {config.model.max_length}, {len(checked.splits.train)} training and "
        f"{len(checked.splits.validation)} validation rows, {len(checked.splits.label_names)} labels, "
        f"storage {redact(config.storage_url)}"
    )
    for notice in checked.notices:
        print(f"[sweeper] note: {notice}")
    return 0


def command_worker(args: argparse.Namespace) -> int:
    per_gpu_flag = getattr(args, "trials_per_gpu", None)
    if per_gpu_flag is not None and per_gpu_flag < 1:
        raise ConfigError(
            f"--trials-per-gpu must be at least 1, but got --trials-per-gpu={per_gpu_flag}; "
            "pass 1 for one trial per GPU, or more to share each GPU between trials"
        )
    if args.gpus is None:
        # (A worker that --gpus started gets the flag too, and its memory share: no note.)
        started_by_gpus = "SWEEPER_GPU_MEMORY_FRACTION" in os.environ
        if per_gpu_flag is not None and per_gpu_flag > 1 and not started_by_gpus:
            print(
                f"[sweeper] --trials-per-gpu={per_gpu_flag} applies with --gpus only; "
                "running one worker",
                flush=True,
            )
        return command_sweep(args)
    from sweeper.workers import gpu_count, parse_gpus, spawn_gpu_workers

    config = resolve_config(args)  # a bad study file fails here, once, not in every child
    available = gpu_count()
    if available == 0:
        print(
            f"[sweeper] --gpus={args.gpus}: no GPU found (CUDA is unavailable); "
            "running one worker on the CPU",
            flush=True,
        )
        return command_sweep(args)
    gpus = parse_gpus(args.gpus, available)
    return spawn_gpu_workers(_without_gpus(args.argv), gpus, config.workers.trials_per_gpu)


def _without_gpus(argv: Sequence[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
        elif item == "--gpus":
            skip = True
        elif not item.startswith("--gpus="):
            kept.append(item)
    return kept


def command_show(args: argparse.Namespace) -> int:
    from sweeper.reporting import trials_table
    from sweeper.study import load_existing_study

    name, storage, _ = _study_name_and_storage(args)
    print(trials_table(load_existing_study(name, storage)))
    return 0


def command_best(args: argparse.Namespace) -> int:
    from sweeper.reporting import best_summary
    from sweeper.study import load_existing_study

    name, storage, metric = _study_name_and_storage(args)
    study = load_existing_study(name, storage)
    print(best_summary(study, study.user_attrs.get("objective_metric", metric)))
    return 0


def _study_output_dir(study: Any) -> Path:
    """Where the sweep wrote its files: <output_dir>/<study> from the stored config."""
    config = study.user_attrs.get("config") or {}
    return Path(str(config.get("output_dir") or "runs")) / study.study_name


def _open_existing_study(args: argparse.Namespace) -> tuple[str, Any]:
    from sweeper.study import load_existing_study

    name, storage, _ = _study_name_and_storage(args)
    return name, load_existing_study(name, storage)


def command_report(args: argparse.Namespace) -> int:
    from sweeper.report import write_report

    name, study = _open_existing_study(args)
    path = write_report(study, args.out or _study_output_dir(study) / "report.html")
    print(f"[sweeper] report of study {name!r} written to {path}")
    return 0


def command_card(args: argparse.Namespace) -> int:
    from sweeper.card import write_card

    name, study = _open_existing_study(args)
    path = write_card(study, args.out or _study_output_dir(study) / "card")
    print(f"[sweeper] model card of study {name!r} written to {path}")
    return 0


def command_export(args: argparse.Namespace) -> int:
    from sweeper.export import export_best

    name, study = _open_existing_study(args)
    target = export_best(study, args.to, force=args.force)
    print(
        f"[sweeper] best model of study {name!r} exported to {target}; load it with "
        f'transformers.pipeline("text-classification", model="{target}")'
    )
    return 0


def command_dashboard(args: argparse.Namespace) -> int:
    from sweeper.dashboard import Dashboard
    from sweeper.storage import redact

    name, storage, _ = _study_name_and_storage(args)
    dashboard = Dashboard(storage, name, host=args.host, port=args.port)
    print(
        f"[sweeper] optuna-dashboard for study {name!r} in {redact(storage)}\n"
        f"[sweeper] open {dashboard.url}  (Ctrl-C stops it)",
        flush=True,
    )
    try:
        dashboard.serve_forever()
    except KeyboardInterrupt:
        print("[sweeper] dashboard stopped")
    finally:
        dashboard.shutdown()
    return 0


COMMANDS = {
    "sweep": command_sweep,
    "worker": command_worker,
    "check": command_check,
    "show": command_show,
    "best": command_best,
    "report": command_report,
    "card": command_card,
    "export": command_export,
    "dashboard": command_dashboard,
}


def quiet_libraries() -> None:
    """Our own lines and bars say what is going on; the libraries' per-load bars and
    Optuna's per-trial INFO line would only repeat it."""
    import datasets
    import optuna
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    disable_progress_bars()


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # what --gpus children rerun
    quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except SweeperError as exc:
        print(f"sweeper: error: {exc}", file=sys.stderr)
        return EXIT_TRIALS_FAILING if isinstance(exc, TrialsFailingError) else EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
