"""What a study file says: the typed schema (:class:`StudyConfig` and its sections), its
defaults and the rules between its keys, and which keys may change on an existing study
(:data:`RUN_KEYS`). Reading a file is sweeper.settings.study_file; validation errors are told
by sweeper.settings.validation; the stored configuration is sweeper.settings.stored.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from sweeper.errors import ConfigError
from sweeper.settings.hyperparameters import (
    BY_NAME,
    HYPERPARAMETERS,
    SEARCHABLE_PARAMS,
    Choices,
    FloatRange,
    IntRange,
    ParamSpace,
    ParamSpec,
    PerMethod,
    SearchSpace,
    check_spec,
    is_searched,
    module_set,
    spec_field_type,
    yaml_number,
)
from sweeper.settings.metrics import OBJECTIVE_NAMES, metric
from sweeper.settings.pruners import DEFAULT_PRUNER, MedianPrunerConfig, PrunerConfig
from sweeper.settings.samplers import (
    DEFAULT_SAMPLER,
    SamplerConfig,
    TPESamplerConfig,
)
from sweeper.settings.strict import StrictModel
from sweeper.settings.warm_start import WarmStartConfig

# What TrainingArguments.report_to accepts in transformers 5: the keys of
# transformers.integrations.INTEGRATION_TO_CALLBACK (tests/trial/test_tracking.py checks that this
# list matches it), plus "none" and "all" (every installed one). Listed here so that reading
# a study file does not import transformers.
REPORT_TO_INTEGRATIONS = (
    "azure_ml",
    "clearml",
    "codecarbon",
    "comet_ml",
    "dagshub",
    "dvclive",
    "flyte",
    "kubeflow",
    "mlflow",
    "neptune",
    "swanlab",
    "tensorboard",
    "trackio",
    "wandb",
)


class DatasetConfig(StrictModel):
    path: str
    """Where the data is: a hub dataset id; a CSV, TSV, JSON, JSON-lines or Parquet file (text
    formats may be .gz/.bz2/.xz/.zip compressed); a folder of split files (train.csv,
    validation.jsonl.gz, ...); a save_to_disk directory; or any of these in an object store (s3://..., gs://...), downloaded to ~/.cache/sweeper/data (SWEEPER_DATA_CACHE). A relative path is taken from the
    study file's folder when it exists there, else from the current directory."""
    text_column: str
    """The column holding the text (required)."""
    label_column: str
    """The column holding the label (required); a row without one is an error."""
    label_names: list[str] | None = None
    """Label names in id order; the label column then holds these names or their ids. Default: the
    distinct values (numbers in numeric order; strings, integers, whole floats and booleans all
    work)."""
    train_split: str = "train"
    """The named split to train on."""
    validation_split: str | None = None
    """The named split to evaluate on; none: a share of the train split (validation_fraction)."""
    validation_fraction: float = 0.2
    """With no validation_split: the stratified, seeded share of the train split held out for
    validation, in (0, 1)."""
    split_seed: int = 42
    """The seed of every split sweeper carves (validation, test)."""
    max_train_rows: int | None = Field(default=None, ge=1)
    """A cap on the training rows, for quick runs."""
    max_validation_rows: int | None = Field(default=None, ge=1)
    """A cap on the validation rows, for quick runs."""
    test_split: str | None = None
    """The study's test split, which no trial of the sweep sees (its Trainers get train and
    validation only), kept for `sweeper confirm`: a named split (IMDb's test, or test.csv in a
    folder of split files); never the validation or train split."""
    test_fraction: float | None = None
    """Or a stratified, seeded share of the train split carved as the test split before validation
    is (validation_fraction stays a share of the whole train split); one of test_split and
    test_fraction, not both."""
    max_test_rows: int | None = Field(default=None, ge=1)
    """A cap on the test split's rows."""

    @field_validator("validation_fraction")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError(f"must lie strictly between 0 and 1, but got {value}")
        return value

    @field_validator("test_split")
    @classmethod
    def _test_split(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if value == info.data.get("validation_split"):
            raise ValueError(
                "is dataset.validation_split too, so test rows would select trials; name "
                "another split, or set dataset.test_fraction to carve one from train"
            )
        if value == info.data.get("train_split"):
            raise ValueError(
                "is dataset.train_split too, so test rows would be trained on; name another "
                "split, or set dataset.test_fraction to carve one from train"
            )
        return value

    @field_validator("test_fraction")
    @classmethod
    def _test_fraction(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None:
            return value
        if not 0.0 < value < 1.0:
            raise ValueError("must lie strictly between 0 and 1")
        if info.data.get("test_split") is not None:
            raise ValueError(
                f"is set together with dataset.test_split={info.data['test_split']!r}; a "
                "study has one test split: keep one of the two"
            )
        validation = info.data.get("validation_fraction")
        carved = info.data.get("validation_split") is None
        if carved and validation is not None and value + validation >= 1.0:
            raise ValueError(
                f"and dataset.validation_fraction={validation} leave no training rows "
                "(both are shares of dataset.train_split and must sum to less than 1); "
                "lower one of them"
            )
        return value

    @field_validator("label_names")
    @classmethod
    def _label_names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError(f"a classifier needs at least 2 labels, but got {value}")
            if len(set(value)) != len(value):
                raise ValueError(f"label names must be unique, but got {value}")
        return value


class ModelConfig(StrictModel):
    name: str
    """The encoder to fine-tune: a hub model id, a local directory (relative to the study file's
    folder when it exists there) or package:<pkg>/<dir>, a folder inside an installed Python
    package (required)."""
    max_length: int = Field(ge=8, le=8192)
    """Tokens per text, longer ones truncated (required; at most what the model's position table
    and its tokenizer allow)."""
    license: str | None = None
    """The fine-tuned model's license for its model card, a Hub identifier such as apache-2.0; left
    out when unset."""
    method: Choices | str = "full"
    """How every trial fine-tunes: full (every weight, as the model cards) or lora (peft adapters
    on frozen weights, set in the lora section; pip install 'sweeper[lora]'); {choices: [full,
    lora]} searches it, comparing both on one grid (search_space entries may then give one range
    per method: {full: {...}, lora: {...}})."""

    @field_validator("method")
    @classmethod
    def _method(cls, value: Any) -> Any:
        return check_spec("method", value)


def _lora_fields() -> dict[str, Any]:
    """The lora section's hyperparameters, from their table entries (home "lora")."""
    return {
        entry.key: (spec_field_type(entry), entry.default)
        for entry in HYPERPARAMETERS
        if entry.home == "lora"
    }


# The lora section's keys that are hyperparameters (r, alpha, ...), by their Optuna name.
LORA_KEYS = {entry.key: entry.name for entry in HYPERPARAMETERS if entry.home == "lora"}


class LoraSectionBase(StrictModel):
    """What a LoRA trial (model.method lora) wraps around the frozen model: peft's LoraConfig.
    r, alpha, dropout and target_modules are hyperparameters: a fixed value, or {low, high} /
    {choices: [...]} to search them (the study-file reference's table)."""

    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases train as well (LoraConfig.bias): none, all, or those of the adapted modules."""
    modules_to_save: list[str] = Field(default_factory=list)
    """Modules trained in full and saved beside the adapters, besides those always kept: the
    classification head and every module the pretrained checkpoint lacks (newly initialised,
    such as DistilBERT's pre_classifier or a BERT pooler)."""

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> ParamSpec: ...

    @field_validator(*LORA_KEYS, check_fields=False)
    @classmethod
    def _spec(cls, value: Any, info: ValidationInfo) -> Any:
        return check_spec(LORA_KEYS[str(info.field_name)], value)

    @field_validator("modules_to_save", mode="before")
    @classmethod
    def _modules(cls, value: Any) -> Any:
        # A list, or one comma-separated string (--set lora.modules_to_save=pre_classifier).
        if isinstance(value, (str, list)) and value:
            return module_set(value).split(",")
        return value

    def specs(self) -> dict[str, ParamSpec]:
        """``{hyperparameter name: spec}`` of the section's hyperparameters (``lora_r``: r)."""
        return {name: getattr(self, key) for key, name in LORA_KEYS.items()}


if TYPE_CHECKING:
    LoraSection = LoraSectionBase
else:
    LoraSection = create_model("LoraSection", __base__=LoraSectionBase, **_lora_fields())


class EvaluationConfig(StrictModel):
    """When a trial is evaluated (and checkpointed), and so where the pruner may compare it.

    ``examples``: every ``examples`` training examples, the same grid for every batch size
    and gradient accumulation (each trial evaluates every examples / (batch x accumulation)
    steps), reported to Optuna as grid point 1, 2, 3, ...; ``epoch``: every epoch, reported as
    the epoch number; ``steps``: every ``steps`` optimizer steps, reported as the step, so
    trials of different batch sizes never share a step the pruner could compare them at."""

    strategy: Literal["steps", "epoch", "examples"] = "epoch"
    """When a trial is evaluated and checkpointed (and so where the pruner may compare it): every
    `examples` training examples, one grid for every batch size; every epoch; or every `steps`
    optimizer steps."""
    steps: int = Field(default=100, ge=1)
    """With strategy steps: optimizer steps between evaluations."""
    examples: int | None = Field(default=None, ge=1)
    """With strategy examples: training examples between evaluations, a multiple of every batch
    size the search space can draw times training.gradient_accumulation_steps."""

    @model_validator(mode="after")
    def _examples_given(self) -> EvaluationConfig:
        if self.strategy == "examples" and self.examples is None:
            raise ValueError(
                "strategy=examples needs evaluation.examples (evaluate every that many "
                "training examples), but got none; set evaluation.examples, e.g. 160"
            )
        return self


class EarlyStoppingConfig(StrictModel):
    """ "Stopped improving": transformers' EarlyStoppingCallback ends a trial whose objective
    has not improved on its best by more than ``min_delta`` for ``patience`` evaluations in a
    row. The trial is COMPLETE with its best evaluation's value and checkpoint (an
    overfitting trial can still be the study's best); null patience turns it off. Unlike the
    pruner it compares a trial with itself, never with other trials."""

    patience: int | None = Field(default=None, ge=1)
    """Evaluations in a row that do not beat the trial's best by more than min_delta, after which
    it ends COMPLETE with its best evaluation's value and checkpoint (transformers'
    EarlyStoppingCallback); null is off."""
    min_delta: float = Field(default=0.0, ge=0.0)
    """The improvement on its best that counts for early stopping."""


class NearChanceConfig(StrictModel):
    """ "Dead": a trial whose best validation accuracy is still within ``margin`` of the
    majority-class rate of the validation split once it has trained ``at_fraction`` of its
    planned steps is stopped, PRUNED. Its validation loss may still creep down (a model that
    learns the label prior lowers it) while it never leaves the majority class, and among
    trials that are mostly as bad no pruner calls it worse than the others. Off during
    `sweeper confirm`, as the pruner is."""

    at_fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    """The share of its planned steps after which a trial still near chance is stopped (0.5:
    half); null is off."""
    margin: float = Field(default=0.02, ge=0.0, lt=1.0)
    """How close to the majority-class rate a best accuracy counts as near chance (0.02: 2
    points)."""


class TrainingConfig(StrictModel):
    """Fixed training arguments, as in the model cards (Adam, linear schedule, eval batch 32)."""

    eval_batch_size: PositiveInt | Literal["auto"] = "auto"
    """Rows per evaluation batch (it changes no result); auto: 32 on a CPU, 128 on a GPU."""
    adam_beta1: float = Field(default=0.9, ge=0.0, lt=1.0)
    """Adam's beta1, as in the model cards."""
    adam_beta2: float = Field(default=0.999, ge=0.0, lt=1.0)
    """Adam's beta2, as in the model cards."""
    adam_epsilon: float = Field(default=1e-8, gt=0.0)
    """Adam's epsilon, as in the model cards."""
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    """The learning-rate schedule after warmup."""
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    """Batches accumulated into one optimizer step."""
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    """Gradient clipping norm."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """auto: bf16 where the GPU supports it, fp16 on older GPUs, full precision on a CPU."""
    group_by_length: bool = True
    """Training batches of texts of similar length (less padding); evaluation always runs longest
    first."""
    # Speed levers: how batches reach the model and how it runs, never what it computes.
    # sweeper.trial.speed decides every auto, per device (docs/benchmarks/speed.md).
    dataloader_workers: NonNegativeInt | Literal["auto"] = "auto"
    """Processes that load and pad batches; auto: 0 on a CPU (they would share its cores),
    2 on a GPU."""
    persistent_workers: bool = True
    """Keep those processes for the whole trial instead of starting them again for every
    pass over training and every evaluation."""
    pad_to_multiple_of: PositiveInt | Literal["auto"] | None = "auto"
    """Pad each batch to a multiple of this many tokens (fewer distinct shapes); auto: none
    on a CPU, 8 on a GPU."""
    non_blocking: bool | Literal["auto"] = "auto"
    """Copy batches to the GPU without waiting (from pinned memory); auto: on a GPU."""
    torch_compile: bool = False
    """Compile the model with torch.compile (inductor); the recompile limit fits the study's
    padded lengths and compiled kernels are cached under output_dir for later trials."""
    tf32: bool = True
    """TF32 for fp32 matrix products on GPUs that have it (Ampere and later)."""
    report_to: str | list[str] = "none"
    """Experiment tracking through the Trainer's own integrations: none, a name (tensorboard,
    wandb, mlflow, ... any of transformers' INTEGRATION_TO_CALLBACK), a list of them, or all.
    One run per retry chain, named <study>-trial-<N>; TensorBoard runs go to
    <output_dir>/<study>/tensorboard/<run name>."""

    @field_validator("report_to")
    @classmethod
    def _report_to(cls, value: str | list[str]) -> str | list[str]:
        names = [value] if isinstance(value, str) else value
        if not names:
            raise ValueError("is an empty list; use 'none' for no experiment tracking")
        for name in names:
            if name in {"none", "all"} and len(names) > 1:
                raise ValueError(f"{name!r} stands alone, not in a list with other names")
            if name not in {"none", "all", *REPORT_TO_INTEGRATIONS}:
                raise ValueError(
                    f"unknown integration {name!r}; expected 'none', 'all', or one or a list "
                    f"of {', '.join(REPORT_TO_INTEGRATIONS)}"
                )
        return value


class Baseline(StrictModel):
    name: str
    """The baseline's name, as the report, the card and confirm show it."""
    params: dict[str, float | int | str | list[str]]
    """Its hyperparameters; epochs above the search space's maximum are capped to it, fixed
    parameters left to the study's value. With model.method searched, a baseline without a
    method is a full fine-tune (the model cards' runs)."""

    @field_validator("params")
    @classmethod
    def _known(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(SEARCHABLE_PARAMS))
        if unknown:
            raise ValueError(
                f"unknown parameter {unknown[0]!r}; expected one of {list(SEARCHABLE_PARAMS)}"
            )
        # Text values normalised as the spec's are (a list of modules, one Optuna value);
        # numbers are checked against the study's space by StudyConfig._baselines_in_space.
        params = {}
        for name, given in value.items():
            if BY_NAME[name].text:
                params[name] = check_spec(name, given)
                continue
            number = yaml_number(given)  # 2e-5 is a string to YAML 1.1
            if not isinstance(number, (int, float)):
                raise ValueError(f"{name}: expected a number, but got {given!r}")
            params[name] = number
        return params

    def method(self, space: ParamSpace) -> str:
        """The method this baseline fine-tunes with: its own, the study's one, else full."""
        methods = space.methods()
        return str(self.params.get("method", methods[0] if len(methods) == 1 else "full"))


class ObjectiveConfig(StrictModel):
    # A name in sweeper.settings.metrics.METRICS, which also says its direction.
    metric: str = "validation_loss"
    """What the study optimizes: a metric of sweeper.settings.metrics.METRICS (validation_loss
    minimized, accuracy or f1 maximized)."""
    direction: Literal["minimize", "maximize"] | None = None
    """Optional: the metric's own direction, stated (anything else is an error)."""

    @model_validator(mode="after")
    def _direction(self) -> ObjectiveConfig:
        if self.metric not in OBJECTIVE_NAMES:
            raise ValueError(
                f"metric={self.metric!r} is not a metric sweeper records; expected one of "
                f"{list(OBJECTIVE_NAMES)}"
            )
        expected = metric(self.metric).direction
        if self.direction is not None and self.direction != expected:
            raise ValueError(
                f"{self.metric} is to {expected}, but got direction={self.direction!r}; "
                f"remove direction or set it to {expected!r}"
            )
        return self

    @property
    def study_direction(self) -> Literal["minimize", "maximize"]:
        return self.direction or metric(self.metric).direction


class BudgetConfig(StrictModel):
    n_trials: int | None = Field(default=20, ge=1)
    """Finished (complete or pruned) trials the study runs to, counted in storage across every
    worker and run."""
    timeout_seconds: float | None = Field(default=None, gt=0)
    """A run starts no trial after this many seconds."""

    @model_validator(mode="after")
    def _bounded(self) -> BudgetConfig:
        if self.n_trials is None and self.timeout_seconds is None:
            raise ValueError("a sweep needs n_trials or timeout_seconds, but both are null")
        return self


TRIALS_PER_GPU_FIX = "1 for one trial per GPU, or more to share each GPU between trials"


def check_trials_per_gpu_flag(value: int | None) -> None:
    """The rule of ``workers.trials_per_gpu`` (at least 1) for the ``--trials-per-gpu`` flag
    of ``worker``, ``slurm`` and ``k8s``; the study file's key is checked by its validator."""
    if value is not None and value < 1:
        raise ConfigError(
            f"--trials-per-gpu must be at least 1, but got --trials-per-gpu={value}; "
            f"pass {TRIALS_PER_GPU_FIX}"
        )


class WorkersConfig(StrictModel):
    """How workers share a study: Optuna heartbeats decide when a silent worker is dead."""

    heartbeat_interval_seconds: int = Field(default=30, ge=1)
    """How often a running trial beats its heartbeat into the storage."""
    grace_period_seconds: int = Field(default=120, ge=1)
    """A running trial with no heartbeat for this long is failed and retried elsewhere (its worker
    died)."""
    max_retries: int = Field(default=3, ge=0)
    """Retries of a trial whose worker died or stopped."""
    max_consecutive_failures: int = Field(default=3, ge=1)
    """Trials that raised, in a row across all workers, after which every worker stops with exit
    status 3."""
    storage_outage_seconds: float = Field(default=600, gt=0)
    """How long a running worker rides out a study database it cannot reach (a restart, a
    failover): it trains on and retries with backoff; past this it saves a checkpoint and exits
    with status 75, and the trial is retried later. A server with no free connection is up: a
    worker waits for a connection without this limit."""
    poll_seconds: float = Field(default=5.0, gt=0)
    """How often a worker with nothing to start looks again (trials may die and be retried)."""
    trials_per_gpu: int = 1
    """Worker processes `sweeper worker --gpus` starts per GPU, each running its own trial within
    1/N of the GPU's memory (--trials-per-gpu wins)."""

    @field_validator("trials_per_gpu")
    @classmethod
    def _trials_per_gpu(cls, value: int) -> int:
        if value < 1:
            raise ValueError(
                "must be at least 1 (worker processes per GPU); set workers.trials_per_gpu "
                f"(or --trials-per-gpu) to {TRIALS_PER_GPU_FIX}"
            )
        return value

    @model_validator(mode="after")
    def _grace_after_heartbeat(self) -> WorkersConfig:
        if self.grace_period_seconds <= self.heartbeat_interval_seconds:
            raise ValueError(
                "grace_period_seconds must exceed heartbeat_interval_seconds, or live trials "
                f"would be failed, but got grace_period_seconds={self.grace_period_seconds} "
                f"and heartbeat_interval_seconds={self.heartbeat_interval_seconds}"
            )
        return self


# The study-file blocks a user may turn off with null (`near_chance: null`, `--set
# early_stopping=null`), and the form null stands for: what the study stores and shows.
BLOCKS_OFF: dict[str, dict[str, Any]] = {
    "early_stopping": {"patience": None},
    "near_chance": {"at_fraction": None},
    "pruner": {"type": "none"},
    "warm_start": {"sources": []},
}


class StudyConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """The study's name in the storage (default: the study file's name without its suffix)."""
    dataset: DatasetConfig
    """The data: where it is, its columns and its splits."""
    model: ModelConfig
    """The pretrained model to fine-tune, and how (model.method)."""
    lora: LoraSection = LoraSection()
    """The adapters of LoRA trials (model.method lora): rank, alpha, dropout and target modules
    (each fixed or searched), bias, and the modules trained in full beside them."""
    search_space: SearchSpace = SearchSpace()
    """What Optuna samples per hyperparameter: {low, high, log} (float), {low, high, step} (int),
    {choices: [...]}, or a fixed value (the table below)."""
    baselines: list[Baseline] = Field(default_factory=list)
    """Configurations enqueued first (the model cards' runs), as [{name, params}]."""
    warm_start: WarmStartConfig = WarmStartConfig()
    """Earlier studies this one starts from: their best configurations enqueued after the
    baselines, their finished trials informing the sampler (--warm-start STUDY[@STORAGE]);
    read once, when the study is created; null turns it off (BLOCKS_OFF)."""
    training: TrainingConfig = TrainingConfig()
    """Fixed training arguments, as in the model cards."""
    evaluation: EvaluationConfig = EvaluationConfig()
    """When trials are evaluated, and so compared."""
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    """Ending a trial that stopped improving (it compares a trial with itself); null turns it off
    (BLOCKS_OFF)."""
    near_chance: NearChanceConfig = NearChanceConfig()
    """Stopping a trial still near chance part-way through its plan (off by default); null turns
    it off (BLOCKS_OFF)."""
    objective: ObjectiveConfig = ObjectiveConfig()
    """What the study optimizes."""
    pruner: PrunerConfig = MedianPrunerConfig(type="median")
    """Which Optuna pruner stops trials worse than the others; pruner.type picks it and the
    settings it takes; null turns pruning off (BLOCKS_OFF)."""
    sampler: SamplerConfig = TPESamplerConfig(type="tpe")
    """Which Optuna sampler draws trials; sampler.type picks it."""
    budget: BudgetConfig = BudgetConfig()
    """How long the study runs."""
    workers: WorkersConfig = WorkersConfig()
    """How workers share the study."""
    storage: str | None = None
    """The Optuna RDB storage URL (default: SQLite at <output_dir>/<name>/study.db); --storage or
    SWEEPER_STORAGE win, and its password is never stored."""
    output_dir: str = "runs"
    """Where reports, caches, SQLite files and (by default) checkpoints go, relative to the current
    directory."""
    checkpoint_root: str | None = None
    """Where trial checkpoints go (default <output_dir>/<name>/checkpoints): a filesystem
    every machine mounts, or an object store (s3://bucket/prefix, gs://bucket/prefix) any
    machine can reach, configured as boto3 and gcsfs are (AWS_ENDPOINT_URL, credentials,
    profiles); with a store, <output_dir> only caches."""
    keep_all_checkpoints: bool = False
    """Keep the checkpoints of pruned and non-best trials (default: deleted once no retry can need
    them)."""
    resume_checkpoint_minutes: float = Field(default=10.0, ge=0)
    """A trial saves a checkpoint at each evaluation that is its best so far (the one it keeps)
    and, for a retry after a crash to resume from, at any evaluation once this many minutes
    have passed since its last one; 0 = at every evaluation. A stop signal always saves one."""

    @model_validator(mode="before")
    @classmethod
    def _default_types(cls, document: Any) -> Any:
        if isinstance(document, dict):
            # A block set to null is its off form (BLOCKS_OFF), stored as that form.
            for block, off in BLOCKS_OFF.items():
                if block in document and document[block] is None:
                    document = {**document, block: dict(off)}
            # pruner.type and sampler.type pick the config model; a section without one is
            # the default pruner (median) or sampler (TPE), as before they were typed.
            for section, default in (("pruner", DEFAULT_PRUNER), ("sampler", DEFAULT_SAMPLER)):
                settings = document.get(section)
                if isinstance(settings, dict) and "type" not in settings:
                    document = {**document, section: {"type": default, **settings}}
            document = _method_defaults(document)
        return document

    @model_validator(mode="after")
    def _lora_used(self) -> StudyConfig:
        # A searched LoRA setting in a study with no LoRA trial would be sampled by none.
        methods = self.space.methods()
        if len(methods) == 1:
            # One spec per method where only one method runs: half of it would never be used.
            for name, spec in self.search_space.specs().items():
                if isinstance(spec, PerMethod):
                    raise ValueError(
                        f"search_space.{name} gives one spec per method, but every trial is a "
                        f"{methods[0]} fine-tune (model.method={methods[0]!r}); give "
                        f"search_space.{name} one spec, or search model.method"
                    )
        if "lora" in methods:
            return self
        for key in LORA_KEYS:
            spec = getattr(self.lora, key)
            if is_searched(spec):
                raise ValueError(
                    f"lora.{key} is searched ({spec}), but model.method={methods[0]!r} has no "
                    f"LoRA trial to use it; set model.method: lora (or {{choices: [full, "
                    f"lora]}}), or give lora.{key} one value"
                )
        return self

    @model_validator(mode="after")
    def _baselines_in_space(self) -> StudyConfig:
        space = self.space
        for index, baseline in enumerate(self.baselines):
            method = baseline.method(space)
            where = f"baselines[{index}] ({baseline.name})"
            if method not in space.methods():
                raise ValueError(
                    f"{where}: method={method} is not among model.method's values "
                    f"{space.methods()}; drop it or add {method} to model.method's choices"
                )
            for param, value in baseline.params.items():
                optuna_name = space.optuna_name(param, method)
                if param == "method":
                    continue  # checked above: one of the study's methods
                if optuna_name is None:
                    raise ValueError(
                        f"{where}: {param} is a LoRA setting, but the baseline is a {method} "
                        "fine-tune; drop it or give the baseline method: lora"
                    )
                spec = space.spec(optuna_name)
                problem = _out_of_space(spec, value, capped_param=BY_NAME[param].capped)
                if problem:
                    raise ValueError(f"{where}: {param}={value} {problem}")
        return self

    @model_validator(mode="after")
    def _examples_on_every_batch(self) -> StudyConfig:
        # An exact grid: every batch size the space can draw must reach each grid point at a
        # whole step, or trials of different batch sizes would drift apart between points.
        if self.evaluation.strategy != "examples" or self.evaluation.examples is None:
            return self
        examples = self.evaluation.examples
        accumulation = self.training.gradient_accumulation_steps
        sizes = batch_sizes(self)
        per_step = sorted({size * accumulation for size in sizes})
        if all(examples % size == 0 for size in per_step):
            return self
        unit = math.lcm(*per_step)
        suggestion = max(unit, unit * round(examples / unit))
        times = (
            f" x training.gradient_accumulation_steps={accumulation} = {per_step} examples a step"
            if accumulation > 1
            else ""
        )
        raise ValueError(
            f"evaluation.examples={examples} is not a whole number of steps for every batch "
            f"size the search space can draw (per_device_train_batch_size {sizes}{times}), so "
            f"their evaluations would not fall on one grid; use a multiple of {unit}, such as "
            f"{suggestion}"
        )

    @property
    def space(self) -> ParamSpace:
        """The whole search space, as Optuna sees it: search_space, model.method and the lora
        section's hyperparameters (sweeper.settings.hyperparameters.ParamSpace)."""
        return ParamSpace.of(
            {**self.search_space.specs(), "method": self.model.method, **self.lora.specs()}
        )

    def examples_per_step(self, batch_size: int) -> int:
        """Training examples one optimizer step consumes (one device per trial)."""
        return int(batch_size) * self.training.gradient_accumulation_steps

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @property
    def compile_cache_dir(self) -> Path:
        """Where torch.compile's kernels are cached (training.torch_compile): beside the
        tokenized data, shared by every study and worker under this output_dir."""
        return Path(self.output_dir) / "cache" / "inductor"

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        return f"sqlite:///{(self.study_dir / 'study.db').resolve()}"

    @property
    def checkpoint_dir(self) -> Path:
        """Where this machine's trials write their checkpoints: checkpoint_root/<name>, or
        with an object store as checkpoint_root (or none) <output_dir>/<name>/checkpoints,
        the local cache the store is filled from."""
        if self.checkpoint_root and self.checkpoint_store is None:
            return Path(self.checkpoint_root) / self.name
        return self.study_dir / "checkpoints"

    @property
    def checkpoint_store(self) -> str | None:
        """The study's prefix in an object store (checkpoint_root an s3://, gs://, ... URL):
        every trial's checkpoints are uploaded there, for a retry on any machine."""
        root = self.checkpoint_root or ""
        if "://" not in root or root.startswith("file://"):
            return None
        return f"{root.rstrip('/')}/{self.name}"

    def baseline_params(self) -> list[tuple[str, dict[str, Any]]]:
        """Baselines as enqueued, by Optuna parameter name: epochs above the study's maximum
        are capped to it (card B planned 200 epochs), fixed parameters are left to the
        study's fixed value, and with model.method searched each names its method."""
        space = self.space
        specs = space.specs()
        enqueued = []
        for baseline in self.baselines:
            method = baseline.method(space)
            method_searched = "method" in specs and is_searched(specs["method"])
            params: dict[str, Any] = {"method": method} if method_searched else {}
            for name, value in baseline.params.items():
                optuna_name = space.optuna_name(name, method)
                spec = specs.get(optuna_name or "")
                if spec is None or not is_searched(spec):
                    continue
                if BY_NAME[name].capped and isinstance(spec, IntRange):
                    value = min(int(value), spec.high)  # type: ignore[arg-type]
                params[str(optuna_name)] = value
            enqueued.append((baseline.name, params))
        return enqueued


def _method_defaults(document: dict[str, Any]) -> dict[str, Any]:
    """A search_space entry the study file leaves out takes its LoRA default for LoRA trials
    (a learning rate around 1e-4 to 3e-3, not a full fine-tune's): written into the document,
    so the stored configuration holds what ran."""
    model = document.get("model")
    method = model.get("method", "full") if isinstance(model, dict) else "full"
    choices = method.get("choices") if isinstance(method, dict) else [method]
    if not isinstance(choices, list) or "lora" not in choices:
        return document
    space = document.get("search_space")
    space = dict(space) if isinstance(space, dict) else {}
    for entry in HYPERPARAMETERS:
        lora_default = entry.method_defaults.get("lora")
        if lora_default is None or entry.name in space:
            continue
        lora = _dumped(lora_default)
        space[entry.name] = (
            lora if choices == ["lora"] else {"full": _dumped(entry.default), "lora": lora}
        )
    return {**document, "search_space": space}


def _dumped(spec: ParamSpec) -> Any:
    return spec.model_dump() if isinstance(spec, StrictModel) else spec


def batch_sizes(config: StudyConfig) -> list[int]:
    """Every per_device_train_batch_size the search space can draw, ascending."""
    return sorted({int(size) for size in config.space.values_of("per_device_train_batch_size")})


def _out_of_space(spec: ParamSpec, value: Any, capped_param: bool) -> str | None:
    if isinstance(spec, Choices) and value not in spec.choices:
        return f"is not among the choices {spec.choices}"
    if isinstance(spec, str) or isinstance(value, str):
        same = isinstance(spec, Choices) or spec == value
        return None if same else f"differs from the study's value {spec!r}"
    if isinstance(spec, FloatRange) and not spec.low <= value <= spec.high:
        return f"lies outside the search range [{spec.low}, {spec.high}]"
    if isinstance(spec, IntRange) and (
        value < spec.low or (value > spec.high and not capped_param)
    ):
        return f"lies outside the search range [{spec.low}, {spec.high}]"
    if (
        isinstance(spec, (int, float))
        and not isinstance(spec, bool)
        and not math.isclose(spec, float(value))
        and not (capped_param and value > spec)
    ):
        return f"differs from the study's fixed value {spec}"
    return None


# What belongs to a run or a machine, not to the study: on an existing study, the study
# file and --set may change these keys (and what lies under them), and nothing else. The
# stored configuration is the study's truth for every other key. docs and `sweeper --help`
# list them from here (run_keys_markdown).
RUN_KEYS: dict[str, str] = {
    "budget": "the trial budget and timeout: how long the study runs on",
    "workers": (
        "heartbeats, retries, polling, database outages and trials per GPU: how workers "
        "share the study"
    ),
    "training.report_to": "experiment tracking, which changes no trial's result",
    "storage": "the storage URL as this machine reaches it",
    "output_dir": "where this machine writes reports, caches and SQLite files",
    "checkpoint_root": "where this machine keeps trial checkpoints",
    "keep_all_checkpoints": "whether checkpoints of pruned and non-best trials are kept",
    "resume_checkpoint_minutes": "how much training a crash may cost this machine's trials",
    # The speed levers (sweeper.trial.speed): how this machine feeds and runs the model;
    # what a trial computes stays the same, to floating-point order.
    **{
        f"training.{lever}": "a speed lever for this machine's device"
        for lever in (
            "dataloader_workers",
            "persistent_workers",
            "pad_to_multiple_of",
            "non_blocking",
            "eval_batch_size",
            "torch_compile",
            "tf32",
        )
    },
    "dataset.path": (
        "where this machine finds the data; the stored split sizes and fingerprints must match"
    ),
    "model.name": (
        "where this machine finds the model; its stored architecture fingerprint must match"
    ),
}


def is_run_key(dotted_key: str) -> bool:
    return any(dotted_key == key or dotted_key.startswith(f"{key}.") for key in RUN_KEYS)


def run_keys_markdown() -> str:
    """The table of :data:`RUN_KEYS` the docs show (a test keeps the docs in step)."""
    rows = [f"| `{key}` | {why} |" for key, why in RUN_KEYS.items()]
    return "\n".join(["| key | why it may change on an existing study |", "|---|---|", *rows])
