"""Full fine-tuning against LoRA, measured on the same task with the same budget.

``python -m benchmarks lora`` (part of ``make bench``; ``make bench-lora``; ``--quick`` for a
smoke run) runs the peers benchmark's task (``benchmarks.pruning``'s study at its default
size: the pretrained MiniLM, ``data/imdb-3k.csv.gz``, 384 train / 128 validation reviews at
64 tokens, an evaluation every 96 training examples, no baselines, the study file's TPE
sampler, rank pruner, near-chance rule and early stopping), each method with the search
space its user would give it:

1. **full** and **lora**: ``studies/imdb.yaml``'s space for full fine-tuning,
   ``studies/imdb-lora.yaml``'s (LoRA's learning-rate region, rank, alpha, dropout and target
   modules) for LoRA; the same trial budget, rules and sampler seeds (42, 43: the study
   files' own seed, then the next). Each study runs in a process of its own
   (``benchmarks.lora_arm``), so its peak memory is its own. Per arm: wall time, training
   examples per second (the examples the trials trained, each trial's last evaluation's, over
   the sum of their ``train_seconds``), the bytes of the best trial's kept checkpoint and the
   mean over trials, seconds per checkpoint save, the child's peak resident memory,
   trainable parameters; and each run's final choice confirmed (``sweeper confirm``'s
   ``run_confirmation``, top 1) with the same fresh seeds for every run: validation loss and
   accuracy, test accuracy.
2. **method**: one study of imdb-lora.yaml that searches ``model.method: {choices: [full,
   lora]}`` with one learning-rate range per method (full: imdb.yaml's, lora:
   imdb-lora.yaml's), the same budget and the first sampler seed: which method its best
   trials use (top 3, and the confirmed winner), how many trials of each ran, were pruned,
   completed.
3. **replay**: the same mixed study recorded with no pruner, no near-chance rule and no early
   stopping (every curve whole: the near-chance rule judges a share of a trial's *planned*
   training, which an early-stopped curve would hide), then replayed (``benchmarks.replay``,
   a simulation: no training) through the rank pruner ranking every trial together and
   ranking within each method (what sweeper does), each with and without the near-chance
   rule, all with the study file's early stopping (``benchmarks.lora_replay``).

Results: ``benchmarks/results/latest/lora.json`` (and ``$OUT/lora.json``), rewritten after
every stage; docs/benchmarks/lora.md.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import pruning
from benchmarks.common import (
    MINILM_PACKAGE,
    REPO_ROOT,
    Results,
    arm_sizes,
    chosen_arms,
    close_staged_run,
    environment,
    report_staged_run,
    spread_text,
    start_model_run,
)
from benchmarks.lora_summary import chosen_text, print_tables, summarize

NAME = "lora"
HELP = (
    "full fine-tuning against LoRA on the peers task (each with its own search space, the "
    "same budget and seeds): speed, checkpoint bytes, peak memory, confirmed quality; a study "
    "that searches the method; the pruner on a shared grid, replayed"
)

ARMS = ("full", "lora", "method", "replay")
METHOD_ARMS = ("full", "lora")
DEFAULT_LORA_STUDY = REPO_ROOT / "studies" / "imdb-lora.yaml"
FIRST_SAMPLER_SEED = 42  # the study files' own

FULL: dict[str, Any] = {
    **{key: value for key, value in pruning.FULL.items() if key != "seeds"},
    "seeds_per_arm": 2,
    "confirm_seeds": 2,
    "first_sampler_seed": FIRST_SAMPLER_SEED,
}
QUICK: dict[str, Any] = {
    "trials": 2,
    "max_epochs": 1,
    "train_rows": 64,
    "validation_rows": 32,
    "max_length": 32,
    "eval_examples": 32,
    "seeds_per_arm": 1,
    "confirm_seeds": 2,  # sweeper confirm's least
    # The mixed study's first two trials draw both methods at this seed (at 42 both are
    # LoRA): the smoke run's method study and replay hold trials of each.
    "first_sampler_seed": 48,
}
SIZE_HELP = {
    "trials": "trials of every study (default {})",
    "max_epochs": "num_train_epochs searched in 1..this (default {})",
    "train_rows": "training rows (default {})",
    "validation_rows": "validation rows (the test split is capped at as many; default {})",
    "max_length": "tokens (default {})",
    "eval_examples": "evaluate every this many training examples (default {})",
    "seeds_per_arm": "sampler seeds of the full and lora arms, from --first-sampler-seed "
    "(default {})",
    "confirm_seeds": "fresh seeds per confirmed choice, the same for every run (at least 2; "
    "default {})",
    "first_sampler_seed": "the first run's sampler.seed; the next ones count up (default {}; "
    f"{QUICK['first_sampler_seed']} at --quick)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke-test sizes: {QUICK['trials']} trials of {QUICK['max_epochs']} epoch on "
        f"{QUICK['train_rows']} rows at {QUICK['max_length']} tokens, one sampler seed, "
        f"{QUICK['confirm_seeds']} confirmation seeds (explicit options still win)",
    )
    pruning.add_task_arguments(parser)
    parser.add_argument(
        "--lora-study",
        type=Path,
        default=DEFAULT_LORA_STUDY,
        help="the LoRA study file (--study is full fine-tuning's; default studies/imdb-lora.yaml)",
    )
    for key, text in SIZE_HELP.items():
        parser.add_argument(
            f"--{key.replace('_', '-')}", type=int, default=None, help=text.format(FULL[key])
        )
    parser.add_argument(
        "--arms",
        default=",".join(ARMS),
        help="comma-separated arms to run (default all: %(default)s)",
    )
    parser.add_argument(
        "--cpu-threads", type=int, default=None, help="torch's CPU threads (default: its own)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--summary-from",
        type=Path,
        metavar="JSON",
        help="no training: summarize an earlier run's lora.json again (this code's summary), "
        "print its tables and write it to the results folder",
    )


def requirements(args: argparse.Namespace) -> dict[str, str]:
    """peft, for the LoRA trials (the lora extra; `make bench-lora` installs it)."""
    return {"peft": "run `make bench-lora`, or `pip install -e '.[lora]'`"}


def resolve_sizes(args: argparse.Namespace) -> dict[str, Any]:
    return arm_sizes(args, FULL, QUICK)


def parse_arms(text: str) -> list[str]:
    return chosen_arms(text, ARMS)


# --- the studies ------------------------------------------------------------------------------


def learning_rates(args: argparse.Namespace) -> dict[str, Any]:
    """Each method's learning-rate range as its own study file gives it."""
    from sweeper.settings.study_file import load_study_config

    ranges = {}
    for method, study in (("full", args.study), ("lora", args.lora_study)):
        config = load_study_config(study, {}, notify=lambda message: None)
        spec: Any = config.search_space.learning_rate
        ranges[method] = spec.model_dump(mode="json") if hasattr(spec, "model_dump") else spec
    return ranges


def arm_changes(arm: str, seed: int, rates: dict[str, Any], quick: bool) -> dict[str, Any]:
    """What an arm's study file changes of its template (dotted keys): the sampler seed; for
    the method arm and the replay's recording, the searched method with one learning-rate
    range per method; for the recording, no pruner, near-chance rule or early stopping. At
    --quick no near-chance rule (see ``peers.study_configs``: every tiny trial is near
    chance)."""
    changes: dict[str, Any] = {"sampler.seed": seed}
    if arm in ("method", "replay"):
        changes["model.method"] = {"choices": list(METHOD_ARMS)}
        changes["search_space.learning_rate"] = dict(rates)
    if arm == "replay":
        changes |= {
            "pruner": {"type": "none"},
            "near_chance.at_fraction": None,
            "early_stopping.patience": None,
        }
    if quick:
        changes["near_chance.at_fraction"] = None
    return changes


class Studies:
    """Each (arm, sampler seed)'s study: a changed copy of its study file (imdb.yaml for
    full, imdb-lora.yaml for the others) and the spec a child process runs it from."""

    def __init__(self, args: argparse.Namespace, sizes: dict[str, Any], model: str, scratch: Path):
        self.args, self.sizes, self.model, self.scratch = args, sizes, model, scratch
        self.rates = learning_rates(args)
        self.specs: dict[tuple[str, int], dict[str, Any]] = {}

    def spec(self, arm: str, seed: int) -> dict[str, Any]:
        from benchmarks.warmstart import changed_study_file

        if (arm, seed) not in self.specs:
            label = f"{arm}-s{seed}"
            template = self.args.study if arm == "full" else self.args.lora_study
            changes = arm_changes(arm, seed, self.rates, self.sizes["quick"])
            path = changed_study_file(template, changes, self.scratch / "studies" / f"{label}.yaml")
            self.specs[(arm, seed)] = {
                "study": str(path),
                "data": str(Path(self.args.data).resolve()),
                "sizes": self.sizes,
                "model": self.model,
                "scratch": str(self.scratch),
                "label": label,
                "threads": self.args.cpu_threads,
            }
        return self.specs[(arm, seed)]

    def config(self, arm: str, seed: int) -> Any:
        from benchmarks.lora_arm import arm_config

        return arm_config(self.spec(arm, seed))


def study_run(spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    """One study run in its own process, with its choice (and the choice's method)."""
    from benchmarks.lora_arm import run_arm

    run = run_arm(spec, folder)
    chosen = run.get("best_trial")
    methods = {row["number"]: row.get("method") for row in run.get("trials", [])}
    return {
        **run,
        "chosen_trial": chosen,
        "chosen_params": run.get("best_params"),
        "chosen_value": run.get("best_value"),
        "chosen_method": methods.get(chosen),
    }


def run_searches(results: Results, studies: Studies, arms: list[str], seeds: list[int]) -> None:
    """The full and lora runs seed by seed, one arm after the other (a run cut short
    leaves both arms equally measured); then the method study and the replay's recording,
    on the first seed."""
    plan = [(arm, seed) for seed in seeds for arm in METHOD_ARMS if arm in arms]
    plan += [(arm, seeds[0]) for arm in ("method", "replay") if arm in arms]
    for arm, seed in plan:
        stage = time.perf_counter()
        run = study_run(studies.spec(arm, seed), studies.scratch / "arms")
        results.payload["runs"][arm][str(seed)] = run
        results.save()
        print(
            f"[{NAME}] {arm} s{seed}: {time.perf_counter() - stage:.0f} s, {chosen_text(run)}",
            flush=True,
        )


def run_confirmations(
    results: Results, studies: Studies, arms: list[str], seeds: list[int]
) -> None:
    """Each run's final choice confirmed with the same fresh seeds; an arm's runs that chose
    the same configuration share one confirmation. The replay's recording is not confirmed."""
    from benchmarks.peers import same_configuration

    confirm_seeds = results.payload["confirm_seeds"]
    for arm in [a for a in ARMS if a in arms and a != "replay"]:
        done: list[tuple[str, dict[str, Any]]] = []
        for key, run in results.payload["runs"][arm].items():
            if not isinstance(run, dict) or run.get("chosen_params") is None:
                results.payload["confirmations"][arm][key] = "nothing to confirm"
                continue
            twin = next((d for d in done if same_configuration(d[1], run["chosen_params"])), None)
            stage = time.perf_counter()
            if twin is not None:
                confirmed = {
                    **results.payload["confirmations"][arm][twin[0]],
                    "same_choice_as": f"{arm} s{twin[0]}",
                }
            else:
                confirmed = pruning.confirm(studies.config(arm, int(key)), confirm_seeds)
                done.append((key, run["chosen_params"]))
            results.payload["confirmations"][arm][key] = confirmed
            results.save()
            print(
                f"[{NAME}] confirm {arm} s{key}: {time.perf_counter() - stage:.0f} s: "
                f"{spread_text(confirmed.get('objective'))}",
                flush=True,
            )


def file_near_chance(args: argparse.Namespace, config: Any) -> Any:
    """The LoRA study file's near-chance rule (its own, also at --quick, where the live
    studies run without it) with ``config``'s validation majority rate; None when the file
    has it off."""
    from sweeper.settings.study_file import load_study_config
    from sweeper.trial.grid import NearChance

    rule = load_study_config(args.lora_study, {}, notify=lambda message: None).near_chance
    majority = pruning.majority_rate(config)
    if rule.at_fraction is None or majority is None:
        return None
    return NearChance(rule.at_fraction, rule.margin, majority)


def run_replay_stage(results: Results, studies: Studies, seed: int) -> None:
    """The recorded mixed study replayed (a simulation), and the replay checked against the
    live method study on the trials both drew alike."""
    from benchmarks.lora_replay import SWEEPER_RULES, SWEEPER_RULES_NO_CHANCE, run_replay

    recorded = results.payload["runs"]["replay"][str(seed)]
    if "status" in recorded:
        results.set("replay", f"not run: the recording {recorded['status']}")
        return
    config = studies.config("method", seed)
    near = file_near_chance(studies.args, config)
    replayed = run_replay(recorded, config, near)
    live = results.payload["runs"].get("method", {}).get(str(seed))
    same_rules = (
        SWEEPER_RULES if config.near_chance.at_fraction is not None else SWEEPER_RULES_NO_CHANCE
    )
    if isinstance(live, dict) and "status" not in live and same_rules in replayed["strategies"]:
        replayed["against_live"] = {
            "strategy": same_rules,
            **(
                pruning.replay_vs_live(
                    {
                        "unpruned": recorded,
                        "default_live": live,
                        "replay": {"strategies": {"default": replayed["strategies"][same_rules]}},
                    }
                )
                or {}
            ),
        }
    replayed["near_chance"] = None if near is None else asdict(near)
    results.set("replay", replayed)
    print(f"[{NAME}] replay of the recorded curves done (a simulation)", flush=True)


# --- the run ----------------------------------------------------------------------------------


def start_results(
    settings: dict[str, Any], studies: Studies, arms: list[str], seeds: list[int]
) -> Results:
    """The results before any stage: the task, each arm's space, every stage not run yet."""
    from benchmarks.peers import fresh_seeds
    from benchmarks.pruning import default_rules, device_text

    full = studies.config("full", seeds[0])
    lora = studies.config("lora", seeds[0])
    method = studies.config("method", seeds[0])
    arm_seeds = {arm: seeds if arm in METHOD_ARMS else seeds[:1] for arm in arms}
    results = Results(
        NAME,
        {
            "benchmark": NAME,
            "settings": settings,
            "device": device_text(),
            "environment": environment((MINILM_PACKAGE, "peft")),
            "search_spaces": {
                "full": full.search_space.model_dump(mode="json"),
                "lora": lora.search_space.model_dump(mode="json"),
                "method": method.search_space.model_dump(mode="json"),
            },
            "lora_section": lora.lora.model_dump(mode="json"),
            "sampler": full.sampler.model_dump(mode="json"),
            "rules": {"full": default_rules(full), "lora": default_rules(lora)},
            "direction": full.objective.study_direction,
            "arms": arms,
            "sampler_seeds": arm_seeds,
            "confirm_seeds": fresh_seeds(full, settings["confirm_seeds"]),
            "runs": {arm: {str(s): "not run" for s in arm_seeds[arm]} for arm in arms},
            "confirmations": {
                arm: {str(s): "not run" for s in arm_seeds[arm]} for arm in arms if arm != "replay"
            },
            "replay": "not run" if "replay" in arms else "not asked",
        },
    )
    results.save()
    return results


def summary_again(path: Path) -> int:
    """``--summary-from``: a stored run summarized again, its tables printed."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    payload["summary"] = summarize(payload)
    payload["summarized_again_from"] = str(path)
    print_tables(payload)
    print(f"[{NAME}] summary written to {Results(NAME, payload).save()}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.summary_from is not None:
        return summary_again(args.summary_from)
    arms = parse_arms(str(args.arms))
    sizes = resolve_sizes(args)
    seeds = [int(sizes["first_sampler_seed"]) + i for i in range(sizes["seeds_per_arm"])]
    scratch, model, threads = start_model_run(args, NAME)
    studies = Studies(args, sizes, model, scratch)
    settings = {
        **sizes,
        "model": model,
        "model_given": args.model,
        "study": str(args.study),
        "lora_study": str(args.lora_study),
        "threads": threads,
    }
    results = start_results(settings, studies, arms, seeds)
    print(
        f"[{NAME}] arms {', '.join(arms)}; {sizes['trials']} trials a study of "
        f"1-{sizes['max_epochs']} epochs on {sizes['train_rows']} train rows at "
        f"{sizes['max_length']} tokens; sampler seeds {seeds} (method and replay: {seeds[0]}); "
        f"choices confirmed with seeds {results.payload['confirm_seeds']}; "
        f"{results.payload['device']}",
        flush=True,
    )
    started = time.perf_counter()
    try:
        run_searches(results, studies, arms, seeds)
        run_confirmations(results, studies, arms, seeds)
        if "replay" in arms:
            run_replay_stage(results, studies, seeds[0])
    finally:
        close_staged_run(results, started, summarize, scratch, args.keep)
    return report_staged_run(results, print_tables)
