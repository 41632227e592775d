"""``sweeper confirm``: re-train the sweep's best configurations and its baselines with fresh
seeds, so the winner is a configuration, not a lucky seed.

:func:`run_confirmation` is the entry point. The seed stays a sampled hyperparameter of the
sweep, but a sweep that picks a seed picks luck, so here configurations are distinct in
everything but the seed. The first time it runs it freezes the plan (stored on the
companion study as ``candidates``, so a rerun never picks again):

- the ``top_k`` best configurations among the sweep's COMPLETE trials (each scored by its
  best single-seed value; the baselines' own configurations are not counted among them),
- plus every baseline of the study (``config.baseline_params()``),
- each re-trained with ``seeds`` fresh seeds, derived from the study's name (a hash) and
  never one the sweep could choose itself.

The re-runs are trials of the companion study ``<study>.confirm``
(:func:`sweeper.records.confirmation.companion_name`) in the same storage, enqueued with fixed
params and run by :func:`sweeper.runtime.workers.run_trials` in its queue-only mode: the budget,
heartbeats and retries of a killed trial (which resumes from its checkpoint) work as for
sweep trials, any number of ``sweeper confirm`` (or ``sweeper worker``) processes share the
queue, and a rerun resumes it. The schedule and rules are the sweep's (``train_trial``),
with pruning off (the companion study has Optuna's ``NopPruner``); each trial keeps its
best-validation checkpoint.

When no re-run is left, one process (under a lock shared through the storage) finalizes:
per configuration the validation objective and accuracy as mean ± std over seeds; the
winner is the best mean; every seed of the winner and of each baseline is evaluated once on
the test split from its kept checkpoint (none without a test split, and the notes say so);
the winner is compared to each baseline paired by seed, with a 95% t interval. The result is
stored as :class:`sweeper.records.confirmation.Confirmation` (user attribute ``confirmation`` of the
companion study); then every checkpoint but the exported one (the winner's median seed) is
deleted, unless ``keep_all_checkpoints``.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.distributions import (
    BaseDistribution,
    distribution_to_json,
    json_to_distribution,
)
from optuna.trial import FrozenTrial, TrialState
from pydantic import Field

from sweeper.attributes import (
    BASELINE_ATTR,
    BEST_CHECKPOINT_ATTR,
    CANDIDATES_ATTR,
    CHECKPOINT_DIR_ATTR,
    CHECKPOINT_STORE_ATTR,
    CONFIRM_CONFIG_ATTR,
    CONFIRM_NAME_ATTR,
    CONFIRM_READY_ATTR,
    CONFIRM_SEED_ATTR,
    CONFIRMATION_ATTR,
    TEST_SCORES_ATTR_PREFIX,
)
from sweeper.errors import CheckpointStoreError, ConfigError, ConfirmError
from sweeper.records.confirmation import (
    Comparison,
    Confirmation,
    ConfirmedConfig,
    Run,
    SplitScores,
    Spread,
    companion_name,
    load_confirmation,
    validation_quantity,
)
from sweeper.records.results import kept_evaluation
from sweeper.runtime.storage import open_lock, redact
from sweeper.runtime.workers import StopReason, StopRequest, WorkerResult, run_trials
from sweeper.settings.config import StudyConfig
from sweeper.settings.hyperparameters import (
    Choices,
    IntRange,
    ParamSpace,
    config_key,
    distribution,
    fixed_params,
    trial_params,
)
from sweeper.settings.hyperparameters import suggest as suggest_param
from sweeper.settings.strict import StrictModel
from sweeper.study.sweep import Objective, SweepContext, prepare_study_data
from sweeper.trial.checkpoints import (
    fetch_checkpoint,
    holds_model,
    is_store_url,
    remove_checkpoints,
)
from sweeper.trial.data import PreparedData

DEFAULT_TOP_K = 3
DEFAULT_SEEDS = 3
# Fresh seeds lie in [0, SEED_HIGH]: the companion study's seed distribution.
SEED_HIGH = 2**31 - 1
# On each companion trial: which planned configuration and seed it runs.
# On the companion study, per re-run evaluated on the test split: its scores there, as
# "test:<trial number>" (a finished trial's own attributes can no longer be written).
# Set on the companion study last, once its plan is stored and every re-run enqueued.
# A 95% confidence interval of a paired difference.
CONFIDENCE = 0.95


class PlannedConfig(StrictModel):
    """A configuration to re-train, as frozen when confirmation first started."""

    id: str  # "c1", "c2", ... or "baseline:<name>"
    role: Literal["candidate", "baseline"]
    name: str  # "trial #7" or the baseline's name
    params: dict[str, Any]  # the searched hyperparameters without the seed
    distributions: dict[str, str]  # each param's Optuna distribution (JSON), as in the sweep
    source_trials: list[int]  # sweep trials with these params (any seed)
    selected_value: float | None  # the best single-seed value of those trials


class Plan(StrictModel):
    """The companion study's ``candidates``: what is re-trained, with which seeds."""

    top_k: int
    seeds: list[int]
    configs: list[PlannedConfig]
    notes: list[str] = Field(default_factory=list)

    def config(self, config_id: str) -> PlannedConfig:
        return next(config for config in self.configs if config.id == config_id)


# --- the plan ----------------------------------------------------------------------------------


# ``--seeds``: how many fresh seeds to derive (an int), or the seeds themselves (a list),
# e.g. to confirm several studies on the same seeds.
SeedsArgument = int | Sequence[int]


def _seed_count(seeds: SeedsArgument | None) -> int | None:
    return seeds if seeds is None or isinstance(seeds, int) else len(seeds)


def check_arguments(top_k: int | None, seeds: SeedsArgument | None) -> None:
    """``--top`` and ``--seeds`` before anything is read or written."""
    if top_k is not None and top_k < 1:
        raise ConfigError(
            f"--top must be at least 1, but got --top={top_k}; pass the number of the sweep's "
            f"best configurations to re-train (default {DEFAULT_TOP_K})"
        )
    if seeds is None:
        return
    shown = _seeds_text(seeds)
    count = _seed_count(seeds) or 0
    if count < 2:
        raise ConfigError(
            f"--seeds must be at least 2, but got --seeds={shown}: one seed has no spread and "
            f"no confidence interval; pass 2 or more (default {DEFAULT_SEEDS})"
        )
    if isinstance(seeds, int):
        return
    if len(set(seeds)) != len(seeds) or any(not 0 <= seed <= SEED_HIGH for seed in seeds):
        raise ConfigError(
            f"--seeds={shown}: a list of seeds must be distinct whole numbers in 0..{SEED_HIGH}; "
            "pass e.g. --seeds 11,22,33, or a count (--seeds 3) to derive fresh ones"
        )


def space_distributions(space: ParamSpace) -> dict[str, BaseDistribution]:
    """The Optuna distribution of each searched hyperparameter, as ``suggest_params`` asks."""
    return {
        name: searched
        for name, spec in space.specs().items()
        if (searched := distribution(spec)) is not None
    }


def _is_sweep_seed(space: ParamSpace, seen: set[int], seed: int) -> bool:
    spec = space.spec("seed")
    if seed in seen:
        return True
    if isinstance(spec, Choices):
        return seed in spec.choices
    if isinstance(spec, IntRange):
        return spec.low <= seed <= spec.high and (seed - spec.low) % spec.step == 0
    return seed == spec


def derive_seeds(study_name: str, count: int, taken: Callable[[int], bool]) -> list[int]:
    """``count`` seeds from a hash of the study's name: the same for every worker and rerun,
    none that ``taken`` (the sweep's own seed choices) admits."""
    seeds: list[int] = []
    for index in range(100_000):
        digest = hashlib.sha256(f"{study_name}/confirm/{index}".encode()).digest()
        seed = int.from_bytes(digest[:8], "big") % (SEED_HIGH + 1)
        if not taken(seed) and seed not in seeds:
            seeds.append(seed)
            if len(seeds) == count:
                return seeds
    raise ConfirmError(
        f"search_space.seed of study {study_name!r} admits nearly every seed, so no fresh seed "
        "is left for confirmation; narrow search_space.seed (e.g. choices: [42, 7, 1234])"
    )


def _require_a_complete_trial(study: optuna.Study, trials: Sequence[FrozenTrial]) -> None:
    if any(trial.state == TrialState.COMPLETE for trial in trials):
        return
    states = ", ".join(
        f"{sum(1 for t in trials if t.state == state)} {state.name.lower()}"
        for state in TrialState
        if any(t.state == state for t in trials)
    )
    raise ConfirmError(
        f"study {study.study_name!r} has no finished (COMPLETE) trial ({states or 'no trials'}), "
        f"so there is no configuration to confirm; run `sweeper sweep {study.study_name}` "
        "until a trial completes, then `sweeper confirm` again"
    )


def _best_of(group: Sequence[FrozenTrial], maximize: bool) -> FrozenTrial:
    key = (lambda t: -float(t.value or 0.0)) if maximize else (lambda t: float(t.value or 0.0))
    return min(group, key=key)


def _planned_baselines(
    config: StudyConfig, trials: Sequence[FrozenTrial], maximize: bool
) -> list[PlannedConfig]:
    """Every baseline of the study, as the sweep ran it (its seed left to the plan): the
    parameters its sweep trial ran with, those the baseline left out (sampled) included, so
    a re-run trains what the sweep trained (a LoRA baseline that names no rank included)."""
    space_dists = space_distributions(config.space)
    baselines = []
    for name, named in config.baseline_params():
        sources = [t for t in trials if t.user_attrs.get(BASELINE_ATTR) == name]
        ran = next((t.params for t in sources if t.params), named)
        params = {k: v for k, v in ran.items() if k != "seed"}
        finished = [t for t in sources if t.state == TrialState.COMPLETE]
        baselines.append(
            PlannedConfig(
                id=f"baseline:{name}",
                role="baseline",
                name=name,
                params=params,
                distributions={k: distribution_to_json(space_dists[k]) for k in params},
                source_trials=[t.number for t in sources],
                selected_value=(
                    float(_best_of(finished, maximize).value or 0.0) if finished else None
                ),
            )
        )
    return baselines


def _planned_candidates(
    trials: Sequence[FrozenTrial],
    baselines: Sequence[PlannedConfig],
    top_k: int,
    maximize: bool,
    notes: list[str],
) -> list[PlannedConfig]:
    """The ``top_k`` best finished configurations, distinct but for the seed, that are no
    baseline's (a baseline that ranks among them is noted, and confirmed as the baseline)."""
    baseline_keys = {config_key(planned.params): planned.name for planned in baselines}
    groups: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            groups.setdefault(config_key(trial.params), []).append(trial)
    ranked = sorted(
        groups.values(),
        key=lambda g: float(_best_of(g, maximize).value or 0.0) * (-1 if maximize else 1),
    )
    candidates: list[PlannedConfig] = []
    for group in ranked:
        best = _best_of(group, maximize)
        key = config_key(best.params)
        if key in baseline_keys:
            if len(candidates) < top_k:
                notes.append(
                    f"trial #{best.number}'s configuration is baseline {baseline_keys[key]}'s; it "
                    "is confirmed as that baseline"
                )
            continue
        if len(candidates) == top_k:
            break
        params = {k: v for k, v in best.params.items() if k != "seed"}
        candidates.append(
            PlannedConfig(
                id=f"c{len(candidates) + 1}",
                role="candidate",
                name=f"trial #{best.number}",
                params=params,
                distributions={k: distribution_to_json(best.distributions[k]) for k in params},
                source_trials=sorted(t.number for t in group),
                selected_value=float(best.value or 0.0),
            )
        )
    return candidates


def _plan_confirmation(
    study: optuna.Study, config: StudyConfig, top_k: int, seeds: SeedsArgument
) -> Plan:
    """The configurations to re-train and the fresh seeds (``seeds`` of them derived from
    the study's name, or the seeds given); an error when the sweep has no finished trial.
    Reads only."""
    trials = study.get_trials(deepcopy=False)
    _require_a_complete_trial(study, trials)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    notes: list[str] = []
    baselines = _planned_baselines(config, trials, maximize)
    candidates = _planned_candidates(trials, baselines, top_k, maximize, notes)
    if len(candidates) < top_k:
        notes.append(
            f"only {len(candidates)} finished configuration(s) besides the baselines, not the "
            f"{top_k} asked for (--top {top_k}): confirming {len(candidates)}"
        )
    seen = {int(t.params["seed"]) for t in trials if "seed" in t.params}
    if isinstance(seeds, int):
        fresh = derive_seeds(
            study.study_name, seeds, lambda s: _is_sweep_seed(config.space, seen, s)
        )
    else:
        fresh = list(seeds)
        reused = [seed for seed in fresh if _is_sweep_seed(config.space, seen, seed)]
        if reused:
            notes.append(
                f"seed(s) {', '.join(map(str, reused))} given to --seeds are seeds the sweep "
                "could draw: not fresh, so a configuration may be re-run as it was selected"
            )
    return Plan(top_k=top_k, seeds=fresh, configs=[*candidates, *baselines], notes=notes)


# --- the companion study -------------------------------------------------------------------


def _open_companion(
    storage: optuna.storages.BaseStorage, study: optuna.Study, create: bool
) -> optuna.Study | None:
    """The companion study (created when ``create``), pruning off: None when absent."""
    name = companion_name(study.study_name)
    sampler, pruner = optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner()
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        if not create:
            return None
    try:
        companion = optuna.create_study(
            storage=storage,
            study_name=name,
            direction=study.direction,
            sampler=sampler,
            pruner=pruner,
        )
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    if study.metric_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            companion.set_metric_names(list(study.metric_names))
    return companion


def _stored_plan(companion: optuna.Study | None) -> Plan | None:
    stored = companion.user_attrs.get(CANDIDATES_ATTR) if companion is not None else None
    return Plan.model_validate(stored) if stored is not None else None


def _seeds_text(seeds: SeedsArgument) -> str:
    return str(seeds) if isinstance(seeds, int) else ",".join(str(seed) for seed in seeds)


def _check_same_plan(plan: Plan, top_k: int | None, seeds: SeedsArgument | None, name: str) -> None:
    checks: list[tuple[str, str, str]] = []
    if top_k is not None:
        checks.append(("--top", str(top_k), str(plan.top_k)))
    if seeds is not None:
        stored = len(plan.seeds) if isinstance(seeds, int) else plan.seeds
        checks.append(("--seeds", _seeds_text(seeds), _seeds_text(stored)))
    for flag, asked, stored_text in checks:
        if asked != stored_text:
            raise ConfirmError(
                f"{flag}={asked}, but the confirmation of study {name!r} was started with "
                f"{flag} {stored_text} and its plan is frozen; run `sweeper confirm` with "
                f"{flag} {stored_text} (or without it), or delete study {companion_name(name)!r} "
                "to start over"
            )


def _ensure_companion(
    config: StudyConfig,
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    plan: Plan,
    companion: optuna.Study | None = None,
) -> tuple[optuna.Study, Plan]:
    """The companion study with ``plan`` stored and every re-run enqueued, once: idempotent
    and safe from any number of processes (a lock shared through the storage; a marker set
    last, so a creator stopped half-way leaves a study the next call completes). Returns it
    with the frozen plan: ``plan``, or the one another process stored first. ``companion``:
    the companion study when the caller has it open already."""
    lock = open_lock(config.storage_url, f"confirm/{config.name}")
    try:
        lock.acquire()
        companion = companion or _open_companion(storage, study, create=True)
        if companion is None:
            raise ConfirmError(f"study {companion_name(config.name)!r} could not be created")
        # Under the lock: another process may have stored its plan since the caller looked.
        plan = _stored_plan(companion) or plan
        if companion.user_attrs.get(CONFIRM_READY_ATTR):
            return companion, plan
        if CANDIDATES_ATTR not in companion.user_attrs:
            companion.set_user_attr(CANDIDATES_ATTR, plan.model_dump(mode="json"))
        for planned in plan.configs:
            for seed in plan.seeds:
                companion.enqueue_trial(
                    {**planned.params, "seed": seed},
                    user_attrs={
                        CONFIRM_CONFIG_ATTR: planned.id,
                        CONFIRM_SEED_ATTR: seed,
                        CONFIRM_NAME_ATTR: planned.name,
                        **({BASELINE_ATTR: planned.name} if planned.role == "baseline" else {}),
                    },
                    skip_if_exists=True,
                )
        companion.set_user_attr(CONFIRM_READY_ATTR, True)
        return companion, plan
    finally:
        lock.close()


class ConfirmObjective(Objective):
    """A re-run: the sweep's objective (same training, checkpoints and retries) on the params
    enqueued for it. Each is suggested with the sweep's own distribution (the seed with one
    that admits every fresh seed), so the enqueued value comes back and Optuna and
    optuna-dashboard show it as the trial's param."""

    def __init__(self, context: SweepContext, plan: Plan, show_progress: bool = True):
        super().__init__(context, show_progress)
        self.plan = plan
        self.near_chance = None  # a re-run is never stopped for being near chance

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        config_id = trial.user_attrs.get(CONFIRM_CONFIG_ATTR)
        if config_id is None:
            raise ConfirmError(
                f"trial #{trial.number} of study {trial.study.study_name!r} was not enqueued by "
                "`sweeper confirm` (it has no confirm_config user attribute); only enqueued "
                "re-runs belong in a companion study"
            )
        planned = self.plan.config(str(config_id))
        params = {
            name: suggest_param(trial, name, json_to_distribution(planned.distributions[name]))
            for name in planned.params
        }
        params["seed"] = trial.suggest_int("seed", 0, SEED_HIGH)
        return trial_params(self.context.config.space, params)


def _run_pending(
    config: StudyConfig,
    data: PreparedData,
    companion: optuna.Study,
    plan: Plan,
    *,
    stop: StopRequest,
    show_progress: bool = True,
) -> WorkerResult:
    """Run the companion study's waiting re-runs until none is waiting or running."""
    from sweeper.runtime.progress import StudyProgress

    store = config.checkpoint_store
    context = SweepContext(
        config=config,
        data=data,
        checkpoint_dir=config.checkpoint_dir / "confirm",
        stop=stop,
        checkpoint_store=f"{store}/confirm" if store else None,
    )
    objective = ConfirmObjective(context, plan, show_progress)
    objective.run_prefix = companion.study_name
    callbacks = [StudyProgress(config.objective.metric)] if show_progress else []
    return run_trials(
        companion,
        objective,
        storage_url=config.storage_url,
        workers=config.workers,
        n_trials=None,
        callbacks=callbacks,
        stop=stop,
        queue_only=True,
    )


# --- the result ----------------------------------------------------------------------------


def spread(values: Sequence[float]) -> Spread:
    return Spread(
        mean=statistics.fmean(values),
        std=statistics.stdev(values) if len(values) > 1 else None,
        n=len(values),
    )


def _spread_or_none(values: Sequence[float | None]) -> Spread | None:
    present = [float(v) for v in values if v is not None]
    return spread(present) if present and len(present) == len(values) else None


def paired_interval(differences: Sequence[float]) -> tuple[float, float]:
    """The 95% t interval of the mean of paired differences (n - 1 degrees of freedom)."""
    from scipy import stats

    n = len(differences)
    mean = statistics.fmean(differences)
    half = (
        float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1))
        * statistics.stdev(differences)
        / math.sqrt(n)
    )
    return mean - half, mean + half


def verdict(baseline: str, ci95: tuple[float, float], higher_is_better: bool) -> str:
    low, high = ci95
    if low > 0 or high < 0:
        better = (low > 0) == higher_is_better
        return f"{'better' if better else 'worse'} than {baseline} (CI excludes 0)"
    return f"not distinguishable from {baseline} (CI includes 0)"


def compare(
    winner: ConfirmedConfig,
    baseline: ConfirmedConfig,
    quantity: str,
    value: Callable[[Run], float | None],
    higher_is_better: bool,
) -> Comparison | None:
    """The winner minus the baseline on ``quantity``, paired by seed; None with fewer than
    2 seeds both finished."""
    theirs = {run.seed: value(run) for run in baseline.runs}
    differences = [
        float(mine) - float(theirs[run.seed])  # type: ignore[arg-type]
        for run in winner.runs
        if (mine := value(run)) is not None and theirs.get(run.seed) is not None
    ]
    if len(differences) < 2:
        return None
    ci95 = paired_interval(differences)
    return Comparison(
        baseline=baseline.name,
        quantity=quantity,
        mean_difference=statistics.fmean(differences),
        ci95=ci95,
        n=len(differences),
        verdict=verdict(baseline.name, ci95, higher_is_better),
    )


def _evaluate_test(
    config: StudyConfig,
    data: PreparedData,
    test: Any,
    checkpoint: Path,
    params: dict[str, Any],
) -> SplitScores:
    """One kept checkpoint on the test split, with the study's metrics."""
    from sweeper.trial.evaluation import evaluate_checkpoint
    from sweeper.trial.speed import resolve_speed

    scores = evaluate_checkpoint(
        checkpoint,
        test,
        tokenizer=data.tokenizer,
        label_names=data.label_names,
        base_model=config.model.name,
        batch_size=resolve_speed(config.training).eval_batch_size,
        label_smoothing=float(params.get("label_smoothing_factor", 0.0)),
    )
    return SplitScores(
        loss=scores.get("validation_loss"), accuracy=scores.get("accuracy"), f1=scores.get("f1")
    )


def _run(trial: FrozenTrial, tests: dict[str, Any]) -> Run:
    kept = kept_evaluation(trial) or {}
    test = tests.get(f"{TEST_SCORES_ATTR_PREFIX}{trial.number}")
    return Run(
        seed=int(trial.user_attrs[CONFIRM_SEED_ATTR]),
        trial=trial.number,
        objective=float(trial.value or 0.0),
        validation=SplitScores(
            loss=kept.get("validation_loss"), accuracy=kept.get("accuracy"), f1=kept.get("f1")
        ),
        test=SplitScores.model_validate(test) if test else None,
        best_checkpoint=trial.user_attrs.get(BEST_CHECKPOINT_ATTR),
    )


def _confirmed(planned: PlannedConfig, runs: list[Run]) -> ConfirmedConfig:
    tested = [run.test for run in runs]
    with_test = all(test is not None for test in tested)
    return ConfirmedConfig(
        id=planned.id,
        role=planned.role,
        name=planned.name,
        params=planned.params,
        source_trials=planned.source_trials,
        selected_value=planned.selected_value,
        runs=runs,
        objective=spread([run.objective for run in runs]),
        accuracy=_spread_or_none([run.validation.accuracy for run in runs]),
        test_loss=_spread_or_none([t.loss if t else None for t in tested]) if with_test else None,
        test_accuracy=_spread_or_none([t.accuracy if t else None for t in tested])
        if with_test
        else None,
        test_f1=_spread_or_none([t.f1 if t else None for t in tested]) if with_test else None,
    )


def export_seed(runs: Sequence[Run], maximize: bool) -> int:
    """The seed whose validation objective is the median of the runs' (for an even number,
    the better of the two middle ones)."""
    ordered = sorted(runs, key=lambda run: -run.objective if maximize else run.objective)
    return ordered[(len(ordered) - 1) // 2].seed


def _finalize(
    config: StudyConfig,
    data: PreparedData,
    study: optuna.Study,
    companion: optuna.Study,
    plan: Plan,
    log: Callable[[str], None] = print,
) -> Confirmation:
    """Spreads, winner, test evaluation, paired comparisons; stored once on the companion
    study, then the checkpoints no one needs are deleted."""
    lock = open_lock(config.storage_url, f"confirm/{config.name}")
    try:
        lock.acquire()
        stored = companion.user_attrs.get(CONFIRMATION_ATTR)
        if stored is not None:
            return Confirmation.model_validate(stored)
        confirmation = _finalize_locked(config, data, study, companion, plan, log)
        companion.set_user_attr(CONFIRMATION_ATTR, confirmation.model_dump(mode="json"))
    finally:
        lock.close()
    if not config.keep_all_checkpoints:
        _remove_checkpoints(companion, keep=confirmation.export_run.trial)
    return confirmation


ReRuns = dict[str, dict[int, FrozenTrial]]  # planned configuration id -> seed -> trial


def _finished_reruns(companion: optuna.Study) -> ReRuns:
    by_config: ReRuns = {}
    for trial in companion.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        seeds = by_config.setdefault(str(trial.user_attrs.get(CONFIRM_CONFIG_ATTR)), {})
        seeds.setdefault(int(trial.user_attrs[CONFIRM_SEED_ATTR]), trial)
    return by_config


def _present(
    plan: Plan, by_config: ReRuns, companion: optuna.Study, notes: list[str]
) -> list[PlannedConfig]:
    """The planned configurations with at least one finished seed; the others noted."""
    present = [planned for planned in plan.configs if by_config.get(planned.id)]
    for planned in plan.configs:
        missing = len(plan.seeds) - len(by_config.get(planned.id, {}))
        if missing:
            notes.append(
                f"{planned.id} ({planned.name}): {missing} of {len(plan.seeds)} seed(s) did not "
                "finish (pruned as diverged, or failed); its spread is over the others"
                if planned in present
                else f"{planned.id} ({planned.name}): no seed finished; left out"
            )
    if not present:
        raise ConfirmError(
            f"no re-run of study {companion.study_name!r} finished, so nothing is confirmed; "
            f"`sweeper show {companion.study_name} --storage URL` lists why each one stopped"
        )
    return present


def _score_on_test(
    config: StudyConfig,
    data: PreparedData,
    companion: optuna.Study,
    scored: Sequence[PlannedConfig],
    by_config: ReRuns,
    log: Callable[[str], None],
    notes: list[str],
) -> None:
    """Each seed of the ``scored`` configurations evaluated once on the test split, its
    scores stored on the companion study (a finished trial's attributes are read-only). A
    checkpoint in the object store is downloaded (and verified) into a local cache first."""
    fixed = fixed_params(config.space)
    cache = config.checkpoint_dir / "confirm" / ".fetched"
    for planned in scored:
        for seed, trial in sorted(by_config[planned.id].items()):
            if f"{TEST_SCORES_ATTR_PREFIX}{trial.number}" in companion.user_attrs:
                continue
            stored = trial.user_attrs.get(BEST_CHECKPOINT_ATTR)
            try:
                checkpoint = fetch_checkpoint(stored, cache) if stored else None
            except CheckpointStoreError as error:
                notes.append(f"{planned.id} seed {seed} (trial #{trial.number}): {error}")
                continue
            if checkpoint is None or not holds_model(checkpoint):
                notes.append(
                    f"{planned.id} seed {seed} (trial #{trial.number}): best_checkpoint="
                    f"{stored!r} holds no model, so it has no test score"
                )
                continue
            log(
                f"[sweeper] {planned.id} ({planned.name}) seed {seed}: evaluating on the test split"
            )
            params = trial_params(config.space, {**fixed, **planned.params, "seed": seed})
            scores = _evaluate_test(config, data, data.test, checkpoint, params)
            if is_store_url(stored):
                remove_checkpoints(checkpoint)  # the fetched copy; the store keeps its own
            companion.set_user_attr(
                f"{TEST_SCORES_ATTR_PREFIX}{trial.number}", scores.model_dump(mode="json")
            )


def _comparisons(
    winner: ConfirmedConfig,
    configs: Sequence[ConfirmedConfig],
    quantity: str,
    maximize: bool,
    notes: list[str],
) -> list[Comparison]:
    """The winner against each baseline, paired by seed, on validation and on test."""
    comparisons: list[Comparison] = []
    for baseline in (c for c in configs if c.role == "baseline" and c.id != winner.id):
        for name, value, higher in (
            (quantity, lambda run: run.objective, maximize),
            ("test_accuracy", lambda run: run.test.accuracy if run.test else None, True),
        ):
            compared = compare(winner, baseline, name, value, higher)
            if compared is not None:
                comparisons.append(compared)
            elif name == quantity:
                notes.append(
                    f"{winner.id} and baseline {baseline.name} share fewer than 2 finished "
                    "seeds: no paired comparison"
                )
    if not any(c.role == "baseline" for c in configs):
        notes.append("the study has no baselines, so there is no paired comparison")
    return comparisons


def _finalize_locked(
    config: StudyConfig,
    data: PreparedData,
    study: optuna.Study,
    companion: optuna.Study,
    plan: Plan,
    log: Callable[[str], None],
) -> Confirmation:
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    metric = config.objective.metric
    notes = list(plan.notes)
    by_config = _finished_reruns(companion)
    present = _present(plan, by_config, companion, notes)

    def mean_objective(planned: PlannedConfig) -> float:
        values = [float(t.value or 0.0) for t in by_config[planned.id].values()]
        return statistics.fmean(values) * (-1 if maximize else 1)

    winner_plan = min(present, key=mean_objective)
    if data.test is None:
        notes.append(
            "the study has no test split (dataset.test_split / dataset.test_fraction), so no "
            "test score: every number here is validation"
        )
    else:
        scored = [p for p in present if p is winner_plan or p.role == "baseline"]
        _score_on_test(config, data, companion, scored, by_config, log, notes)
    tests = companion.user_attrs
    configs = [
        _confirmed(planned, [_run(t, tests) for _, t in sorted(by_config[planned.id].items())])
        for planned in present
    ]
    winner = next(c for c in configs if c.id == winner_plan.id)
    comparisons = _comparisons(winner, configs, validation_quantity(metric), maximize, notes)
    return Confirmation(
        study=study.study_name,
        metric=metric,
        direction="maximize" if maximize else "minimize",
        seeds=plan.seeds,
        top_k=plan.top_k,
        configs=configs,
        winner=winner.id,
        export_seed=export_seed(winner.runs, maximize),
        comparisons=comparisons,
        notes=notes,
    )


def _remove_checkpoints(companion: optuna.Study, keep: int) -> None:
    """Every re-run's checkpoints but those of trial ``keep`` (the exported one): its local
    directory and its prefix in the store, which its retry chain's earlier trials share."""
    trials = companion.get_trials(deepcopy=False)
    kept = next((t.user_attrs for t in trials if t.number == keep), {})
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            continue
        directory = trial.user_attrs.get(CHECKPOINT_DIR_ATTR)
        if directory and directory != kept.get(CHECKPOINT_DIR_ATTR):
            remove_checkpoints(directory)
        stored = trial.user_attrs.get(CHECKPOINT_STORE_ATTR)
        if stored and stored != kept.get(CHECKPOINT_STORE_ATTR):
            remove_checkpoints(stored)


# --- the entry points --------------------------------------------------------------------------


def run_confirmation(
    config: StudyConfig,
    *,
    top_k: int | None = None,
    seeds: SeedsArgument | None = None,
    show_progress: bool = True,
    stop: StopRequest | None = None,
    log: Callable[[str], None] = print,
) -> Confirmation | None:
    """Confirm study ``config.name`` (see the module's docstring): plan (frozen on first
    run), re-run, finalize. Returns the confirmation, or None when stopped before the last
    re-run finished (run it again to carry on). Bad input fails before anything is written."""
    from sweeper.study.sweep import load_existing_study, preflight_with_notices
    from sweeper.trial.data import check_unchanged
    from sweeper.trial.models import check_same_model

    check_arguments(top_k, seeds)
    # Loaded once; an unknown study (or a SQLite file that does not exist) writes nothing.
    study = load_existing_study(config.name, config.storage_url, workers=config.workers)
    storage = study._storage
    existing = load_confirmation(study)
    companion = _open_companion(storage, study, create=False)
    plan = _stored_plan(companion)
    if plan is not None:
        _check_same_plan(plan, top_k, seeds, config.name)
    if existing is not None:
        log(
            f"[sweeper] study {config.name!r} is already confirmed (study {companion_name(config.name)!r})"
        )
        return existing
    if plan is None:
        plan = _plan_confirmation(
            study, config, top_k or DEFAULT_TOP_K, seeds or DEFAULT_SEEDS
        )  # no finished trial: an error, nothing written
    checked = preflight_with_notices(config)
    # The data the sweep ran on, or an error before anything is written.
    check_unchanged(study.user_attrs, checked.splits, config.name)
    check_same_model(study.user_attrs, checked.model_fingerprint, config.model.name, config.name)
    data = prepare_study_data(config, checked)
    stop = stop or StopRequest()
    with stop.installed():
        companion, plan = _ensure_companion(config, study, storage, plan, companion)
        for note in plan.notes:
            log(f"[sweeper] note: {note}")
        total = len(plan.configs) * len(plan.seeds)
        log(
            f"[sweeper] confirming study {config.name!r} in {redact(config.storage_url)}: "
            f"{len(plan.configs)} configuration(s) x {len(plan.seeds)} seeds = {total} re-runs "
            f"in study {companion.study_name!r}, pruning off"
        )
        result = _run_pending(config, data, companion, plan, stop=stop, show_progress=show_progress)
        if result.reason is not StopReason.BUDGET_MET:
            return None
        return _finalize(config, data, study, companion, plan, log)


def run_pending_confirmation(
    config: StudyConfig,
    data: PreparedData,
    study: optuna.Study,
    *,
    stop: StopRequest,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> Confirmation | None:
    """What ``sweeper worker`` does once the sweep's budget is met: the waiting re-runs of a
    confirmation some ``sweeper confirm`` started (none: nothing), then its result."""
    companion = _open_companion(study._storage, study, create=False)
    plan = _stored_plan(companion)
    if companion is None or plan is None or not companion.user_attrs.get(CONFIRM_READY_ATTR):
        return None
    if companion.user_attrs.get(CONFIRMATION_ATTR) is not None:
        return None
    log(
        f"[sweeper] the sweep's budget is met; running the waiting re-runs of {companion.study_name!r}"
    )
    result = _run_pending(config, data, companion, plan, stop=stop, show_progress=show_progress)
    if result.reason is not StopReason.BUDGET_MET:
        return None
    return _finalize(config, data, study, companion, plan, log)
