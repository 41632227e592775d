"""``python -m benchmarks [--quick]`` runs every available benchmark with its defaults;
``python -m benchmarks trial-loop [--quick] [options]`` runs one (``--help`` lists them)."""

from __future__ import annotations

import argparse
import os
import sys

# Before anything imports transformers or datasets: benchmarks never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks import available, missing_requirements


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    modules = available()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="sweeper benchmarks; with no benchmark named, runs all of them: "
        + ", ".join(modules),
    )
    parser.add_argument(
        "--quick",
        dest="quick_all",
        action="store_true",
        help="smoke-test sizes for every benchmark run",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    subparsers = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    sub: dict[str, argparse.ArgumentParser] = {}
    for name, module in modules.items():
        sub[name] = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub[name])
    return parser, sub


def main(argv: list[str] | None = None) -> int:
    parser, sub = build_parser()
    args = parser.parse_args(argv)
    modules = available()
    if args.list:
        for name, module in modules.items():
            print(f"{name}: {module.HELP}")
        return 0
    if args.benchmark is not None:
        # `--quick trial-loop` as well as `trial-loop --quick`
        args.quick = bool(getattr(args, "quick", False) or args.quick_all)
        runs = [(modules[args.benchmark], args)]
    else:
        runs = [
            (module, sub[name].parse_args(["--quick"] if args.quick_all else []))
            for name, module in modules.items()
        ]
    # Every run's packages are checked before the first starts: none fails half-way.
    missing = [line for module, own in runs for line in missing_requirements(module, own)]
    if missing:
        for line in missing:
            print(f"benchmarks: error: {line}", file=sys.stderr)
        return 2
    status = 0
    for module, own in runs:
        if len(runs) > 1:
            print(f"=== benchmark {module.NAME} ===", flush=True)
        status = max(status, int(module.run(own)))
    return status


if __name__ == "__main__":
    sys.exit(main())
