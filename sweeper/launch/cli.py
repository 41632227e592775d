"""The ``sweeper`` command: sweep, worker, check, create, slurm, k8s, confirm, show, best,
report, card, export, dashboard.

Settings resolve as command line, then study file, then defaults. Every SweeperError is
printed as one readable message with exit status 2 (3 when the study's last trials all
failed: TrialsFailingError; 75 when the study database was gone for longer than
workers.storage_outage_seconds: StorageOutageError). A database error that reaches here
unexplained is one line too, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sweeper import __version__
from sweeper.attributes import (
    BASELINE_ATTR,
    OBJECTIVE_METRIC_ATTR,
    WARM_START_SOURCE_ATTR,
)
from sweeper.credentials import STORAGE_ENV, without_credentials
from sweeper.errors import (
    EXIT_OK,
    EXIT_STORAGE_OUTAGE,
    EXIT_TRIALS_FAILING,
    EXIT_USER_ERROR,
    ConfigError,
    StorageOutageError,
    SweeperError,
    TrialsFailingError,
)
from sweeper.settings.config import StudyConfig, check_trials_per_gpu_flag
from sweeper.settings.study_file import DEFAULT_STUDIES_DIR, find_study_file

# `sweeper dashboard`'s defaults (and so `make dashboard`'s): this machine only, optuna-dashboard's
# usual port.
DASHBOARD_HOST = "127.0.0.1"
DASHBOARD_PORT = 8080


def _study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="a study name under studies/ or a path to a study file")
    parser.add_argument(
        "--storage",
        help=f"Optuna storage URL (default: ${STORAGE_ENV}, else the study file's storage, "
        "else SQLite under the runs directory); a URL with a password is best passed in "
        f"${STORAGE_ENV} or ~/.pgpass, where other users cannot read it",
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


def _warm_start_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--warm-start",
        dest="warm_start",
        action="append",
        default=None,
        metavar="STUDY[@STORAGE]",
        help="start a new study from an earlier one (repeatable; warm_start.sources): its best "
        "configurations enqueued after the baselines, its finished trials informing the "
        "sampler. STORAGE is the earlier study's storage URL when it is not this study's; "
        "leave its password to PGPASSWORD or ~/.pgpass (never stored)",
    )


def _sweep_arguments(parser: argparse.ArgumentParser) -> None:
    _study_arguments(parser)
    _warm_start_argument(parser)
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


class _Parser(argparse.ArgumentParser):
    """No abbreviated options: `--stor URL` would otherwise pass for --storage and slip past
    what the --gpus parent strips from its children's command lines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sweeper", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_sweep_commands(commands)
    _add_confirm_command(commands)
    for name, text in (
        ("show", "print the study's trials as a table"),
        ("best", "print the best trial's params and checkpoint"),
    ):
        command = commands.add_parser(name, help=text)
        _study_arguments(command)
    _add_cluster_commands(commands)
    _add_view_commands(commands)
    return parser


def _add_sweep_commands(commands: Any) -> None:
    """sweep, worker, check: run a study's trials, or check what would fail them."""
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
    _warm_start_argument(check)
    check.add_argument(
        "--checkpoint-root",
        help="where trial checkpoints would go (a shared filesystem for several machines)",
    )


def _seeds_argument(text: str) -> int | list[int]:
    """``--seeds 5`` (a count) or ``--seeds 11,22,33`` (the seeds)."""
    try:
        if "," not in text:
            return int(text)
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count (--seeds 3) or comma-separated whole numbers (--seeds 11,22,33), "
            f"got {text!r}"
        ) from None


def _add_confirm_command(commands: Any) -> None:
    confirm = commands.add_parser(
        "confirm",
        help="re-train the sweep's best configurations and its baselines with fresh seeds, and "
        "say which is best as mean ± std over seeds, with paired 95%% intervals",
    )
    _study_arguments(confirm)
    confirm.add_argument(
        "--top",
        type=int,
        metavar="K",
        help="the sweep's K best configurations (distinct in everything but the seed) to "
        "re-train, beside the baselines (default 3; frozen when confirmation first starts)",
    )
    confirm.add_argument(
        "--seeds",
        type=_seeds_argument,
        metavar="N|S1,S2,...",
        help="fresh seeds per configuration, at least 2 (default 3), derived from the study's "
        "name; or the seeds themselves, comma-separated (e.g. the same seeds for several "
        "studies). Frozen at the first run",
    )
    confirm.add_argument(
        "--checkpoint-root",
        help="where the re-runs' checkpoints go (a shared filesystem for several machines)",
    )
    confirm.add_argument(
        "--no-progress", action="store_true", help="no progress bars, only one line per trial"
    )


def _trials_per_gpu_argument(parser: argparse.ArgumentParser, holder: str) -> None:
    parser.add_argument(
        "--trials-per-gpu",
        type=int,
        metavar="N",
        help=f"N workers share each {holder}'s GPU, each with its own trial (default: the "
        "study's workers.trials_per_gpu, 1)",
    )


def _add_cluster_commands(commands: Any) -> None:
    """create, slurm, k8s: a study made ready once, and workers a scheduler runs."""
    _add_create_command(commands)
    _add_slurm_command(commands)
    _add_k8s_command(commands)


def _add_create_command(commands: Any) -> None:
    create = commands.add_parser(
        "create",
        help="create the study once, before any worker starts: pre-flight check, baselines, "
        "stored config (idempotent)",
    )
    _study_arguments(create)
    _warm_start_argument(create)
    create.add_argument(
        "--checkpoint-root",
        help="where trial checkpoints will go (checked for room and writes, not written)",
    )


def _add_slurm_command(commands: Any) -> None:
    slurm = commands.add_parser(
        "slurm", help="write (and with --submit, submit) a Slurm job array of workers"
    )
    _study_arguments(slurm)
    slurm.add_argument("--workers", type=int, required=True, help="array tasks, one GPU each")
    _trials_per_gpu_argument(slurm, "task")
    slurm.add_argument("--partition", help="the partition (default: the cluster's default)")
    slurm.add_argument("--account", help="the account to charge (default: your default)")
    slurm.add_argument(
        "--time", default="24:00:00", help="each task's time limit (default: 24:00:00)"
    )
    slurm.add_argument("--cpus-per-task", type=int, default=8, help="CPUs per task (default: 8)")
    slurm.add_argument("--mem", default="32G", help="memory per task (default: 32G)")
    slurm.add_argument(
        "--max-concurrent",
        type=int,
        help="at most N tasks running at once (the array's %%N; default: no limit)",
    )
    slurm.add_argument(
        "--gres", default="gpu:1", help="generic resources per task (default: gpu:1)"
    )
    slurm.add_argument(
        "--signal-seconds",
        type=int,
        help="SIGUSR1 this long before the time limit: the worker stops cleanly and requeues "
        "its task (default: 300, a training step plus a checkpoint; more for a checkpoint "
        "store and a large model, from the checkpoint's size)",
    )
    slurm.add_argument(
        "--checkpoint-root",
        help="where trial checkpoints go: a filesystem every node mounts at the same path",
    )
    slurm.add_argument(
        "--log-dir",
        type=Path,
        help="per-task logs (default: <output_dir>/<study>/slurm/logs)",
    )
    slurm.add_argument(
        "--python",
        default=sys.executable,
        help="the Python with sweeper installed, as the nodes see it (default: this one)",
    )
    slurm.add_argument(
        "--sbatch-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="one more #SBATCH line, e.g. --sbatch-option=--qos=high (repeatable)",
    )
    slurm.add_argument(
        "--out", type=Path, help="the script to write (default: <output_dir>/<study>/slurm/)"
    )
    slurm.add_argument(
        "--submit",
        action="store_true",
        help="also create the study and sbatch the script; prints the job id",
    )


def _add_k8s_command(commands: Any) -> None:
    k8s = commands.add_parser(
        "k8s", help="write Kubernetes manifests: a study-creator Job and a worker Job"
    )
    _study_arguments(k8s)
    k8s.add_argument("--image", required=True, help="the image built from the Dockerfile")
    k8s.add_argument(
        "--storage-secret",
        required=True,
        help="the Secret holding the storage URL (never written into the manifests)",
    )
    k8s.add_argument(
        "--storage-secret-key", default="url", help="its key holding the URL (default: url)"
    )
    k8s.add_argument("--workers", type=int, required=True, help="worker pods, one GPU each")
    _trials_per_gpu_argument(k8s, "pod")
    k8s.add_argument("--namespace", help="the namespace (default: kubectl's current one)")
    k8s.add_argument(
        "--checkpoint-pvc",
        default="sweeper-checkpoints",
        help="a ReadWriteMany PersistentVolumeClaim for checkpoints, shared by every pod "
        "(default: sweeper-checkpoints)",
    )
    k8s.add_argument(
        "--grace-seconds",
        type=int,
        help="terminationGracePeriodSeconds: a training step plus a checkpoint (default: 300; "
        "more for a checkpoint store and a large model, from the checkpoint's size)",
    )
    k8s.add_argument(
        "--checkpoint-root",
        help="an object store for checkpoints (s3://bucket/prefix, gs://...): no shared volume, "
        "an emptyDir cache per pod (default: the study's checkpoint_root, else --checkpoint-pvc)",
    )
    k8s.add_argument(
        "--store-secret",
        help="with an object store: the Secret whose keys become the pods' environment "
        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...; never written into "
        "the manifests); leave it out where pods get credentials otherwise (workload identity)",
    )
    k8s.add_argument("--backoff-limit", type=int, help="pod failures allowed (default: 3 x N)")
    k8s.add_argument("--cpu", help="CPU request per worker pod, e.g. 8")
    k8s.add_argument("--memory", help="memory request and limit per worker pod, e.g. 32Gi")
    k8s.add_argument(
        "--study-path",
        help="the study file inside the image, relative to its WORKDIR (default: the "
        "file's path relative to this directory, as the Dockerfile copies it)",
    )
    k8s.add_argument(
        "--out", type=Path, help="the directory to write (default: <output_dir>/<study>/k8s/)"
    )


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
    export.add_argument(
        "--adapter",
        action="store_true",
        help="a LoRA trial's adapter alone (adapter_config.json, adapter_model.safetensors: "
        "peft loads it onto the base model) instead of the adapters merged into a plain "
        "transformers model; an error for a full fine-tune",
    )
    dashboard = commands.add_parser(
        "dashboard", help="serve optuna-dashboard on the study's storage"
    )
    _study_arguments(dashboard)
    dashboard.add_argument(
        "--host",
        default=DASHBOARD_HOST,
        help=f"address to bind (default: {DASHBOARD_HOST}, this machine only)",
    )
    dashboard.add_argument(
        "--port",
        type=int,
        default=DASHBOARD_PORT,
        help=f"port to listen on (default: {DASHBOARD_PORT}; 0 = any free port)",
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """What the command line types: ``--set`` pairs, the command's flags, the storage
    (sweeper.study.resolve.typed_overrides holds the precedence)."""
    from sweeper.study.resolve import typed_overrides

    return typed_overrides(args.overrides, vars(args), args.storage)


def resolve_config(args: argparse.Namespace) -> StudyConfig:
    """The configuration the command runs with: a new study's from its study file (CLI
    flags, then ``--set``, then the file, then defaults); an existing study's stored one,
    with the run and machine keys (sweeper.settings.config.RUN_KEYS) typed on the command
    line, the study file being only a template there (sweeper.study.resolve)."""
    from sweeper.study.resolve import resolve_study

    return resolve_study(
        args.study, _overrides(args), studies_dir=args.studies_dir, notify=_notify()
    ).config


def _notify() -> Callable[[str], None]:
    """Notes go to stderr once per command: the workers `--gpus` starts stay quiet, as their
    parent resolved the same study and said it."""
    from sweeper.runtime.workers import SPAWNED_BY_GPUS_ENV
    from sweeper.settings.study_file import notice

    return (lambda _message: None) if SPAWNED_BY_GPUS_ENV in os.environ else notice


def _study_name_and_storage(args: argparse.Namespace) -> tuple[str, str]:
    """For the commands that only read a study: its name and storage; the study file is
    optional (everything they show is stored)."""
    from sweeper.study.resolve import locate_study

    return locate_study(args.study, _overrides(args), args.studies_dir)


def _command_sweep(args: argparse.Namespace) -> int:
    from sweeper.runtime.workers import StopRequest, apply_gpu_memory_fraction
    from sweeper.study.confirm import run_pending_confirmation
    from sweeper.study.sweep import run_study
    from sweeper.views.console import best_summary

    config = resolve_config(args)
    # One of several workers sharing a GPU (sweeper worker --trials-per-gpu): keep to its share.
    apply_gpu_memory_fraction()
    stop = getattr(args, "stop", None) or StopRequest()
    # A worker whose sweep is done helps with a confirmation `sweeper confirm` started.
    study = run_study(
        config,
        show_progress=not args.no_progress,
        stop=stop,
        on_budget_met=run_pending_confirmation,
    )
    if stop.signal_number is not None:
        _requeue_on_time_limit(stop.signal_number)
        return 128 + stop.signal_number
    print(best_summary(study, config.objective.metric))
    return 0


def _command_confirm(args: argparse.Namespace) -> int:
    from sweeper.records.confirmation import describe_test_split
    from sweeper.study.confirm import check_arguments, run_confirmation
    from sweeper.views.console import confirmation_table

    check_arguments(args.top, args.seeds)  # before the study file is even read
    config = resolve_config(args)
    stop = getattr(args, "stop", None)
    confirmation = run_confirmation(
        config, top_k=args.top, seeds=args.seeds, show_progress=not args.no_progress, stop=stop
    )
    if confirmation is None:
        signal_number = stop.signal_number if stop is not None else None
        print(
            f"[sweeper] confirmation of study {config.name!r} stopped before its last re-run "
            "finished; run the same command again to carry on",
            flush=True,
        )
        return 128 + signal_number if signal_number is not None else EXIT_OK
    print(confirmation_table(confirmation, describe_test_split(config.dataset)))
    return EXIT_OK


def _command_check(args: argparse.Namespace) -> int:
    from sweeper.runtime.storage import redact
    from sweeper.study.resolve import resolve_study
    from sweeper.study.sweep import preflight_with_notices
    from sweeper.trial.data import check_unchanged
    from sweeper.trial.models import check_same_model

    resolved = resolve_study(
        args.study, _overrides(args), studies_dir=args.studies_dir, notify=_notify()
    )
    config = resolved.config
    checked = preflight_with_notices(config)
    for line in checked.warm_start.notes if checked.warm_start is not None else ():
        # What creating the study would enqueue and model, said before anything is written.
        print(f"[sweeper] warm start (when created): {line}", flush=True)
    if resolved.user_attrs is not None:
        # An existing study: this machine's data and model must be the ones it was made with.
        check_unchanged(resolved.user_attrs, checked.splits, config.name)
        check_same_model(
            resolved.user_attrs, checked.model_fingerprint, config.model.name, config.name
        )
    print(
        f"[sweeper] study {config.name!r} passed the pre-flight check: model {config.model.name!r} "
        f"at max_length {config.model.max_length}, {len(checked.splits.train)} training and "
        f"{len(checked.splits.validation)} validation rows, {len(checked.splits.label_names)} labels, "
        f"storage {redact(config.storage_url)}"
    )
    return 0


def _command_worker(args: argparse.Namespace) -> int:
    per_gpu_flag = getattr(args, "trials_per_gpu", None)
    check_trials_per_gpu_flag(per_gpu_flag)
    if args.gpus is None:
        from sweeper.runtime.workers import SPAWNED_BY_GPUS_ENV

        # (A worker that --gpus started gets the flag too: no note.)
        started_by_gpus = SPAWNED_BY_GPUS_ENV in os.environ
        if per_gpu_flag is not None and per_gpu_flag > 1 and not started_by_gpus:
            print(
                f"[sweeper] --trials-per-gpu={per_gpu_flag} applies with --gpus only; "
                "running one worker",
                flush=True,
            )
        return _command_sweep(args)
    from sweeper.runtime.workers import gpu_count, parse_gpus, spawn_gpu_workers

    config = resolve_config(args)  # a bad study file fails here, once, not in every child
    available = gpu_count()
    if available == 0:
        print(
            f"[sweeper] --gpus={args.gpus}: no GPU found (CUDA is unavailable); "
            "running one worker on the CPU",
            flush=True,
        )
        return _command_sweep(args)
    gpus = parse_gpus(args.gpus, available)
    stop = getattr(args, "stop", None)
    code = spawn_gpu_workers(
        _child_argv(args.argv),
        gpus,
        environment={STORAGE_ENV: config.storage_url},
        trials_per_gpu=config.workers.trials_per_gpu,
        stop=stop,
        sampler_seed=config.sampler.seed,
    )
    if stop is not None and stop.signal_number is not None:
        _requeue_on_time_limit(stop.signal_number)
    elif code == EXIT_STORAGE_OUTAGE:
        _requeue_after_outage()
    return code


def _requeue_on_time_limit(signal_number: int) -> None:
    """Stopped by Slurm's time-limit warning (SIGUSR1): requeue this task, once per task
    (by the `--gpus` parent, not by each of its workers)."""
    import signal

    from sweeper.runtime.slurm import requeue_own_slurm_task
    from sweeper.runtime.workers import SPAWNED_BY_GPUS_ENV

    if signal_number == signal.SIGUSR1 and SPAWNED_BY_GPUS_ENV not in os.environ:
        requeue_own_slurm_task()


def _requeue_after_outage() -> None:
    """A worker that gave up on the study database under Slurm requeues its task, once per
    task (by the `--gpus` parent, not by each of its workers): the new run waits in the
    queue, then resumes the trial from its checkpoint if the database is back."""
    from sweeper.runtime.slurm import requeue_own_slurm_task
    from sweeper.runtime.workers import SPAWNED_BY_GPUS_ENV

    if SPAWNED_BY_GPUS_ENV not in os.environ:
        requeue_own_slurm_task(why="study database unreachable")


def _database_failure(exc: BaseException) -> str:
    """One line for a database error no command explained (never a traceback)."""
    from sweeper.runtime.outage import classify, short_reason

    reason = short_reason(exc)
    if classify(exc) == "too many clients":
        return (
            f"the study database has no free connection ({reason}): its max_connections is "
            "taken; raise max_connections on the server, or run fewer workers"
        )
    return (
        f"the study database failed: {reason}; check that it is up and reachable (host, "
        "port, credentials), then run the same command again"
    )


def _child_argv(argv: Sequence[str]) -> list[str]:
    """The worker's own arguments for the workers ``--gpus`` starts: without ``--gpus``, and
    without the storage URL (``--storage``, ``--set storage=``), which reaches them through
    the environment, and ``--warm-start`` sources without a password, so no password shows
    on a child's command line."""
    kept: list[str] = []
    items = iter(argv)
    for item in items:
        if item in ("--gpus", "--storage"):
            next(items, None)
        elif item == "--warm-start":
            # A source's storage password stays off the children's command lines too.
            kept += [item, without_credentials(next(items, ""))]
        elif item.startswith("--warm-start="):
            kept.append(f"--warm-start={without_credentials(item.partition('=')[2])}")
        elif item == "--set":
            pair = next(items, "")
            if not pair.startswith("storage="):
                kept += [item, pair]
        elif not item.startswith(("--gpus=", "--storage=", "--set=storage=")):
            kept.append(item)
    return kept


def _command_show(args: argparse.Namespace) -> int:
    from sweeper.study.sweep import load_existing_study
    from sweeper.views.console import trials_table

    name, storage = _study_name_and_storage(args)
    print(trials_table(load_existing_study(name, storage)))
    return 0


def _command_best(args: argparse.Namespace) -> int:
    from sweeper.study.sweep import load_existing_study
    from sweeper.views.console import best_summary

    name, storage = _study_name_and_storage(args)
    study = load_existing_study(name, storage)
    print(best_summary(study, study.user_attrs.get(OBJECTIVE_METRIC_ATTR, "validation_loss")))
    return 0


def _study_output_dir(study: Any) -> Path:
    """Where the sweep wrote its files: <output_dir>/<study> from the stored config."""
    from sweeper.settings.stored import stored_config

    return stored_config(study.study_name, study.user_attrs).study_dir


def _open_existing_study(args: argparse.Namespace) -> tuple[str, Any]:
    from sweeper.study.sweep import load_existing_study

    name, storage = _study_name_and_storage(args)
    return name, load_existing_study(name, storage)


def _command_report(args: argparse.Namespace) -> int:
    from sweeper.views.report import write_report

    name, study = _open_existing_study(args)
    path = write_report(study, args.out or _study_output_dir(study) / "report.html")
    print(f"[sweeper] report of study {name!r} written to {path}")
    return 0


def _command_card(args: argparse.Namespace) -> int:
    from sweeper.views.card import write_card

    name, study = _open_existing_study(args)
    path = write_card(study, args.out or _study_output_dir(study) / "card")
    print(f"[sweeper] model card of study {name!r} written to {path}")
    return 0


def _command_export(args: argparse.Namespace) -> int:
    from sweeper.views.export import confirmed_export, export_best

    name, study = _open_existing_study(args)
    exported = export_best(study, args.to, force=args.force, adapter=args.adapter)
    which = confirmed_export(study) or (
        f"the sweep's best trial #{exported.trial.number} (a single-seed validation score; "
        f"`sweeper confirm {name}` re-trains the best configurations with fresh seeds)"
    )
    # A LoRA trial's line says which form was written: merged onto its base, or the adapter.
    form = f" as {exported.what()}" if exported.form != "full" else ""
    print(
        f"[sweeper] {which}, of study {name!r}, exported to {exported.target}{form}; load it "
        f"with {exported.how_to_load()}"
    )
    return 0


def _command_dashboard(args: argparse.Namespace) -> int:
    from sweeper.runtime.storage import redact
    from sweeper.views.dashboard import Dashboard

    name, storage = _study_name_and_storage(args)
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


def _command_create(args: argparse.Namespace) -> int:
    from sweeper.runtime.storage import redact
    from sweeper.study.sweep import create_study

    config = resolve_config(args)
    created = create_study(config)
    trials = created.study.get_trials(deepcopy=False)
    baselines = sum(1 for trial in trials if BASELINE_ATTR in trial.user_attrs)
    warm = sum(1 for trial in trials if WARM_START_SOURCE_ATTR in trial.user_attrs)
    if created.created:
        state = "created"
    elif created.completed:
        state = "existed without its baselines or config, now completed"
    else:
        state = "already exists and is ready"
    print(
        f"[sweeper] study {config.name!r} in {redact(config.storage_url)} {state}: "
        f"{baselines} baseline trial(s), "
        + (f"{warm} warm-start trial(s), " if warm else "")
        + f"{len(trials)} trial(s) in all; workers can start"
    )
    return EXIT_OK


def _cluster_config(args: argparse.Namespace) -> StudyConfig:
    """The study as a cluster's workers will see it; the storage must be a server. Writing
    a script or manifests needs no database: only ``--submit`` (which creates the study)
    reads the stored configuration; the workers resolve their own when they start."""
    from sweeper.launch.cluster import require_server_storage
    from sweeper.settings.study_file import load_study_config

    if getattr(args, "submit", False):
        config = resolve_config(args)
    else:
        config = load_study_config(args.study, _overrides(args), studies_dir=args.studies_dir)
    require_server_storage(config.storage_url, "--storage" if args.storage else "storage")
    return config


def _command_slurm(args: argparse.Namespace) -> int:
    from sweeper.launch.cluster import (
        SlurmOptions,
        render_sbatch,
        sbatch_path,
        slurm_next_steps,
        submit_sbatch,
        write_private,
    )
    from sweeper.study.sweep import create_study

    if args.submit:
        sbatch_path()  # missing sbatch fails before the storage is even asked
    config = _cluster_config(args)
    slurm_dir = config.study_dir / "slurm"
    options = SlurmOptions(
        study_file=find_study_file(args.study, args.studies_dir),
        study_name=config.name,
        storage_url=config.storage_url,
        workers=args.workers,
        partition=args.partition,
        account=args.account,
        time=args.time,
        cpus_per_task=args.cpus_per_task,
        mem=args.mem,
        max_concurrent=args.max_concurrent,
        gres=args.gres,
        signal_seconds=_stop_seconds(args.signal_seconds, config, "--signal-seconds"),
        log_dir=args.log_dir or slurm_dir / "logs",
        python=args.python,
        checkpoint_root=config.checkpoint_root,
        overrides=[item for item in args.overrides if not item.startswith("storage=")],
        sbatch_options=args.sbatch_option,
        trials_per_gpu=config.workers.trials_per_gpu,
    )
    text = render_sbatch(options)  # every option is checked before anything is written
    if args.submit:
        create_study(config)
    script = write_private(args.out or slurm_dir / f"{config.name}.sbatch", text)
    options.log_dir.absolute().mkdir(parents=True, exist_ok=True)
    if not args.submit:
        print(
            f"[sweeper] wrote {script} ({args.workers} array tasks); on a Slurm login node, "
            f"with the storage URL exported as {STORAGE_ENV} (the tasks take it from there), run\n"
            f"  sweeper create {args.study}   (once)\n  sbatch {script}"
        )
        return EXIT_OK
    job_id = submit_sbatch(script, config.storage_url)
    print(slurm_next_steps(job_id, options, script))
    return EXIT_OK


def _store_root(config: StudyConfig) -> str | None:
    """The study's checkpoint_root when it is an object store (the pods' --checkpoint-root)."""
    return str(config.checkpoint_root) if config.checkpoint_store else None


def _stop_seconds(given: int | None, config: StudyConfig, flag: str) -> int:
    """``given``, or what a stopped worker needs for this model's checkpoint (said once)."""
    if given is not None:
        return given
    from sweeper.launch.cluster import stop_seconds
    from sweeper.study.preflight import checkpoint_bytes
    from sweeper.trial.models import load_model_config

    try:
        size = checkpoint_bytes(load_model_config(config.model.name), config)
    except SweeperError:  # a hub id offline: the default, which a local save needs
        size = None
    seconds, why = stop_seconds(size, config.checkpoint_store is not None)
    print(f"[sweeper] {flag} {seconds} ({why})", flush=True)
    return seconds


def _command_k8s(args: argparse.Namespace) -> int:
    from sweeper.launch.cluster import (
        K8sOptions,
        dump_manifests,
        render_k8s,
        require_server_storage,
    )
    from sweeper.settings.study_file import load_study_config

    # The pods take the URL from the Secret; a --storage given here is only checked.
    config = load_study_config(args.study, _overrides(args), studies_dir=args.studies_dir)
    if args.storage:
        require_server_storage(args.storage)
    study_file = find_study_file(args.study, args.studies_dir)
    study_path = args.study_path
    if study_path is None:
        try:
            study_path = str(study_file.absolute().relative_to(Path.cwd()))
        except ValueError:
            raise ConfigError(
                f"study file {str(study_file)!r} is outside this directory, so where the "
                "Dockerfile puts it in the image is unknown; pass --study-path with its path "
                "inside the image (e.g. studies/imdb.yaml)"
            ) from None
    options = K8sOptions(
        study_name=config.name,
        study_path=study_path,
        image=args.image,
        storage_secret=args.storage_secret,
        storage_secret_key=args.storage_secret_key,
        workers=args.workers,
        namespace=args.namespace,
        checkpoint_pvc=args.checkpoint_pvc,
        grace_seconds=_stop_seconds(args.grace_seconds, config, "--grace-seconds"),
        checkpoint_store=_store_root(config),
        store_secret=args.store_secret,
        backoff_limit=args.backoff_limit,
        cpu=args.cpu,
        memory=args.memory,
        overrides=[item for item in args.overrides if not item.startswith("storage=")],
        trials_per_gpu=config.workers.trials_per_gpu,
    )
    manifests = render_k8s(options)
    out = args.out or config.study_dir / "k8s"
    out.mkdir(parents=True, exist_ok=True)
    for name, documents in manifests.items():
        (out / name).write_text(dump_manifests(documents), encoding="utf-8")
    print(
        f"[sweeper] wrote {out / 'study-creator.yaml'} and {out / 'workers.yaml'}; then\n"
        f"  kubectl apply -f {out / 'study-creator.yaml'}\n"
        f"  kubectl wait --for=condition=complete --timeout=30m job/{manifests['study-creator.yaml'][0]['metadata']['name']}\n"
        f"  kubectl apply -f {out / 'workers.yaml'}"
    )
    return EXIT_OK


COMMANDS = {
    "sweep": _command_sweep,
    "worker": _command_worker,
    "check": _command_check,
    "create": _command_create,
    "slurm": _command_slurm,
    "k8s": _command_k8s,
    "confirm": _command_confirm,
    "show": _command_show,
    "best": _command_best,
    "report": _command_report,
    "card": _command_card,
    "export": _command_export,
    "dashboard": _command_dashboard,
}


def _quiet_libraries() -> None:
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
    try:
        if args.command not in ("sweep", "worker", "confirm"):
            _quiet_libraries()
            return COMMANDS[args.command](args)
        from sweeper.runtime.workers import StopRequest

        # The stop signals are handled from the start, so a stop while the model loads or
        # the data is tokenized is as clean as one during training.
        args.stop = StopRequest()
        with args.stop.installed():
            _quiet_libraries()
            return COMMANDS[args.command](args)
    except StorageOutageError as exc:
        print(f"sweeper: error: {exc}", file=sys.stderr)
        if args.command in ("sweep", "worker"):
            _requeue_after_outage()
        return EXIT_STORAGE_OUTAGE
    except SweeperError as exc:
        print(f"sweeper: error: {exc}", file=sys.stderr)
        return EXIT_TRIALS_FAILING if isinstance(exc, TrialsFailingError) else EXIT_USER_ERROR
    except Exception as exc:
        import optuna
        import sqlalchemy

        if not isinstance(
            exc, (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)
        ):
            raise
        print(f"sweeper: error: {_database_failure(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
