"""The peers of the peers benchmark (``benchmarks.peers``), each run as its users run it.

- :func:`run_hyperparameter_search`: ``Trainer.hyperparameter_search(backend="optuna")``
  with Optuna's ``MedianPruner`` (its defaults) passed through to ``optuna.create_study``;
  the Trainer reports every evaluation to the trial and prunes by step, at a fixed
  ``eval_steps``. It scores a trial by its last evaluation. The search runs through
  :mod:`benchmarks.hyperparameter_search`, the harness the trial-loop benchmark shares.
- :func:`run_ray_tune`: a Ray Tune ``Tuner`` over a function trainable that fine-tunes with
  a Trainer and reports every evaluation to Tune; ``ASHAScheduler`` (its defaults but
  ``max_t``, the longest trial's number of evaluations) stops trials, ``OptunaSearch``
  samples. Tune picks its best trial by its last result (``get_best_result``'s default).

Both draw from sweeper's own search space (``suggest_params``, so the same names, ranges
and TPE sampler settings and seed as the sweeper side), get the same raw splits and
tokenize them inside their timed span, as a user's script would, and count their
training in examples (steps x batch size), as the sweeper side does.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT
from benchmarks.hyperparameter_search import (
    Search,
    SearchRun,
    TrialRecord,
    accuracy,
    classifier_init,
    examples_of,
    load_tokenized,
    run_search,
    without_printer,
)
from benchmarks.hyperparameter_search import training_arguments as shared_training_arguments

HPS_ROUTE = 'Trainer.hyperparameter_search(backend="optuna", pruner=optuna.pruners.MedianPruner())'
RAY_ROUTE = (
    "ray.tune.Tuner(function trainable reporting each Trainer evaluation, "
    "TuneConfig(search_alg=OptunaSearch(define-by-run space, TPE sampler), "
    "scheduler=ASHAScheduler(max_t=longest trial's evaluations)))"
)


@dataclass
class PeerTask:
    """What every peer gets: the same splits, model, search space, sampler, budget and
    threads as the sweeper side."""

    train_dir: Path  # the study's training split, untokenized (datasets' save_to_disk)
    validation_dir: Path
    model_dir: str
    label_names: list[str]
    max_length: int
    space: Any  # sweeper.settings.hyperparameters.ParamSpace (what Optuna sees)
    sampler: Any  # sweeper.settings.samplers.SamplerConfig
    n_trials: int
    eval_steps: int  # fixed, as these tools' users set it
    max_evaluations: int  # the longest trial's evaluations: ASHA's max_t
    fixed_arguments: dict[str, Any]  # the model cards' settings every side trains with
    threads: int
    scratch: Path
    log: Callable[[str], None] = field(default=print, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        # Ray ships the task to its trial processes: the log function stays behind.
        return {k: v for k, v in self.__dict__.items() if k != "log"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, log=print)


def raw_splits(task: PeerTask) -> tuple[Any, Any]:
    from datasets import load_from_disk

    return load_from_disk(str(task.train_dir)), load_from_disk(str(task.validation_dir))


def tokenized(task: PeerTask) -> tuple[Any, Any, Any]:
    """The tokenizer, and the train and validation splits tokenized (unpadded: the
    Trainer pads each batch, given the tokenizer as its processing_class)."""
    return load_tokenized(task.model_dir, raw_splits(task), task.max_length)


def training_arguments(task: PeerTask, output_dir: Path, params: dict[str, Any]) -> Any:
    """TrainingArguments as these tools' users write them: evaluation every ``eval_steps``,
    no checkpoints (neither tool needs one to choose), the searched ``params``."""
    import torch

    from sweeper.settings.hyperparameters import training_arguments as searched_arguments

    return shared_training_arguments(
        output_dir,
        task.eval_steps,
        save_strategy="no",
        dataloader_pin_memory=torch.cuda.is_available(),
        **task.fixed_arguments,
        **searched_arguments(params),
    )


def planned_examples(task: PeerTask, searched: dict[str, Any], train_rows: int) -> int:
    from sweeper.settings.hyperparameters import fixed_params

    params = {**fixed_params(task.space), **searched}
    batch = int(params["per_device_train_batch_size"])
    return math.ceil(train_rows / batch) * int(params["num_train_epochs"]) * batch


# --- Trainer.hyperparameter_search with Optuna (benchmarks.hyperparameter_search) ---------------


def run_hyperparameter_search(task: PeerTask) -> dict[str, Any]:
    import optuna

    from sweeper.settings.hyperparameters import suggest_params

    def trial_ended(number: int, record: TrialRecord) -> None:
        last = record.last_loss()
        task.log(
            f"[peers] hyperparameter_search trial {number + 1}/{task.n_trials}: "
            f"{record.examples} examples, last eval_loss "
            f"{'-' if last is None else f'{last:.4f}'}, {record.ended_at:.0f} s so far"
        )

    search = run_search(
        Search(
            model_dir=task.model_dir,
            label_names=task.label_names,
            max_length=task.max_length,
            load_splits=lambda: raw_splits(task),
            arguments=training_arguments(task, task.scratch / "hyperparameter-search", {}),
            space=lambda trial: suggest_params(trial, task.space),
            n_trials=task.n_trials,
            study_name="hyperparameter-search",
            sampler=task.sampler.build(),
            pruner=optuna.pruners.MedianPruner(),
            trial_ended=trial_ended,
        )
    )
    trials = [hps_trial(task, search, trial) for trial in search.study.get_trials(deepcopy=False)]
    chosen = next(t for t in trials if str(t["number"]) == str(search.best_run.run_id))
    return {
        "route": HPS_ROUTE,
        "pruner": "MedianPruner(n_startup_trials=5, n_warmup_steps=0) (Optuna's defaults)",
        **search_summary(search.wall_seconds, trials, chosen, "state"),
    }


def hps_trial(task: PeerTask, search: SearchRun, trial: Any) -> dict[str, Any]:
    record = search.record(trial.number)
    return {
        "number": trial.number,
        "state": trial.state.name,
        "params": trial.params,
        "value": trial.value,
        "examples": record.examples,
        "planned_examples": planned_examples(task, trial.params, search.train_rows),
        "ended_at_seconds": record.ended_at,
        "curve": [
            {
                "examples": row["examples"],
                "step": row["step"],
                "eval_loss": row["metrics"].get("eval_loss"),
                "eval_accuracy": row["metrics"].get("eval_accuracy"),
            }
            for row in record.evaluations
        ],
    }


def search_summary(
    wall: float, trials: list[dict[str, Any]], chosen: dict[str, Any], state_key: str
) -> dict[str, Any]:
    """What the peers benchmark compares of a side's search: its time, its training, how
    its trials ended, and the configuration it chose and when it first held it."""
    return {
        "wall_seconds": round(wall, 2),
        "examples": sum(t["examples"] for t in trials),
        "states": _states(t[state_key] for t in trials),
        "chosen_trial": chosen["number"],
        "chosen_params": chosen["params"],
        "chosen_value": chosen["value"],
        "chosen_at_seconds": chosen["ended_at_seconds"],
        "trials": trials,
    }


def _states(states: Any) -> dict[str, int]:
    return dict(sorted(Counter(states).items()))


# --- Ray Tune: ASHA with OptunaSearch ---------------------------------------------------------


def ray_trial(
    config: dict[str, Any], task: PeerTask, tokenizer: Any, train: Any, validation: Any
) -> None:
    """One Ray Tune trial: a Trainer fine-tuning ``config``, every evaluation reported to
    Tune (ASHA decides there whether the trial goes on)."""
    import torch
    from ray import tune
    from transformers import Trainer, TrainerCallback

    from sweeper.settings.hyperparameters import fixed_params

    torch.set_num_threads(task.threads)
    params = {**fixed_params(task.space), **config}

    class ReportToTune(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # type: ignore[no-untyped-def]
            metrics = metrics or {}
            tune.report(
                {
                    "eval_loss": metrics["eval_loss"],
                    "eval_accuracy": metrics.get("eval_accuracy"),
                    "examples": examples_of(args, state),
                    "step": state.global_step,
                }
            )

    output = task.scratch / "ray-trials" / tune.get_context().get_trial_id()
    without_printer(
        Trainer(
            model=None,
            args=training_arguments(task, output, params),
            processing_class=tokenizer,
            train_dataset=train,
            eval_dataset=validation,
            model_init=classifier_init(task.model_dir, task.label_names),
            compute_metrics=accuracy,
            callbacks=[ReportToTune()],
        )
    ).train()
    shutil.rmtree(output, ignore_errors=True)


class DefineByRun:
    """sweeper's search space as OptunaSearch's define-by-run function (a class, not a
    closure: Tune pickles its searcher with the experiment state)."""

    def __init__(self, space: Any):
        self.space = space

    def __call__(self, trial: Any) -> None:
        from sweeper.settings.hyperparameters import suggest_params

        suggest_params(trial, self.space)


def import_ray() -> Any:
    """Ray, imported with no usage report (nothing outside can be reached anyway), and with
    this package importable by the trial processes it starts (so they never reach a hub)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    import ray

    return ray


def trial_lines(task: PeerTask, started: float) -> Any:
    """A Tune callback printing one line per finished trial."""
    from ray import tune

    class TrialLines(tune.Callback):
        def __init__(self) -> None:
            self.finished = 0

        def on_trial_complete(self, iteration, trials, trial, **info):  # type: ignore[no-untyped-def]
            self.finished += 1
            last = trial.last_result or {}
            loss = last.get("eval_loss")
            task.log(
                f"[peers] ray_tune trial {self.finished}/{task.n_trials}: "
                f"{last.get('examples', 0)} examples, last eval_loss "
                f"{'-' if loss is None else f'{loss:.4f}'}, {time.time() - started:.0f} s so far"
            )

    return TrialLines()


def ray_tuner(task: PeerTask, data: tuple[Any, Any, Any], started: float) -> Any:
    """The Tuner: ``ray_trial`` on the tokenized ``data``, OptunaSearch sampling, ASHA
    stopping, one trial at a time."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    tokenizer, train, validation = data
    trainable = tune.with_parameters(
        ray_trial, task=task, tokenizer=tokenizer, train=train, validation=validation
    )
    return tune.Tuner(
        tune.with_resources(trainable, {"cpu": task.threads}),
        tune_config=tune.TuneConfig(
            # metric and mode go to the searcher and the scheduler themselves: Tune does
            # not hand them on through the limiter max_concurrent_trials puts around
            # OptunaSearch.
            search_alg=OptunaSearch(
                space=DefineByRun(task.space),
                metric="eval_loss",
                mode="min",
                sampler=task.sampler.build(),
            ),
            scheduler=ASHAScheduler(metric="eval_loss", mode="min", max_t=task.max_evaluations),
            num_samples=task.n_trials,
            max_concurrent_trials=1,
        ),
        run_config=tune.RunConfig(
            name="peers",
            storage_path=str((task.scratch / "ray-results").resolve()),
            verbose=0,
            callbacks=[trial_lines(task, started)],
        ),
    )


def ray_trial_row(
    task: PeerTask, index: int, result: Any, train_rows: int, started: float
) -> dict[str, Any]:
    """One Tune trial's result, in the fields of the other sides' trials."""
    history = result.metrics_dataframe
    curve = (
        history[["examples", "step", "eval_loss", "eval_accuracy", "timestamp"]].to_dict("records")
        if history is not None and len(history)
        else []
    )
    metrics = result.metrics or {}
    params = dict(result.config or {})
    examples = int(metrics.get("examples", 0))
    planned = planned_examples(task, params, train_rows)
    return {
        "number": index,
        "trial_id": metrics.get("trial_id"),
        "state": "ERROR" if result.error else "TERMINATED",
        "params": params,
        "value": metrics.get("eval_loss"),
        "examples": examples,
        "planned_examples": planned,
        "evaluations": len(curve),
        "ended_at_seconds": round(float(curve[-1]["timestamp"]) - started, 2) if curve else None,
        "curve": curve,
        "outcome": "stopped by ASHA" if examples < planned else "ran to its end",
    }


def run_ray_tune(task: PeerTask) -> dict[str, Any]:
    ray = import_ray()
    started = time.time()
    ray.init(
        num_cpus=task.threads,
        include_dashboard=False,
        object_store_memory=256 * 2**20,
        log_to_driver=False,
        _temp_dir=str(task.scratch / "ray-tmp"),
    )
    try:
        init_seconds = time.time() - started
        data = tokenized(task)
        grid = ray_tuner(task, data, started).fit()
        wall = time.time() - started
        best = grid.get_best_result(metric="eval_loss", mode="min")
        trials = [
            ray_trial_row(task, index, grid[index], len(data[1]), started)
            for index in range(len(grid))
        ]
        chosen_id = (best.metrics or {}).get("trial_id")
        chosen = next(t for t in trials if t["trial_id"] == chosen_id)
        return {
            "route": RAY_ROUTE,
            "ray": ray.__version__,
            "scheduler": f"ASHAScheduler(max_t={task.max_evaluations}, grace_period=1, "
            "reduction_factor=4) (Ray's defaults but max_t)",
            "init_seconds": round(init_seconds, 2),
            **search_summary(wall, trials, chosen, "outcome"),
        }
    finally:
        ray.shutdown()
