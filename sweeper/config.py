"""Study files: typed, validated configuration at the edge.

A study file (YAML or TOML) is read once, command-line overrides are applied on top of it
(CLI, then study file, then the defaults below), and the result is validated into a
:class:`StudyConfig`. Anything wrong fails here, before a single file is written, with the
key, the value given and what was expected. :func:`load_study_config` is the entry point.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sweeper.errors import ConfigError

STUDY_SUFFIXES = (".yaml", ".yml", ".toml")
DEFAULT_STUDIES_DIR = Path("studies")

# The hyperparameters a study may search. Each maps to the TrainingArguments field of the
# same name, so a newcomer can follow a value from the study file into the Trainer.
SEARCHABLE_PARAMS = (
    "learning_rate",
    "per_device_train_batch_size",
    "num_train_epochs",
    "seed",
    "warmup_ratio",
    "weight_decay",
)

OBJECTIVE_DIRECTIONS = {"validation_loss": "minimize", "accuracy": "maximize", "f1": "maximize"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatRange(_Strict):
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> FloatRange:
        if not self.low < self.high:
            raise ValueError(f"low must be below high, but got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, but got low={self.low}")
        return self


class IntRange(_Strict):
    low: int
    high: int
    step: int = 1

    @model_validator(mode="after")
    def _check(self) -> IntRange:
        if not self.low < self.high:
            raise ValueError(f"low must be below high, but got low={self.low}, high={self.high}")
        if self.step < 1:
            raise ValueError(f"step must be at least 1, but got step={self.step}")
        return self


class Choices(_Strict):
    choices: list[float | int] = Field(min_length=1)


# A parameter is either fixed (a plain value) or searched (a range or a list of choices).
ParamSpec = FloatRange | IntRange | Choices | float | int


class SearchSpace(_Strict):
    """Defaults sit around the two model cards' baselines (lr 1e-5 and 3e-5, batch 32, seed 42),
    wide enough that encoders smaller than distilbert find their optimum."""

    learning_rate: FloatRange | float = FloatRange(low=1e-6, high=1e-3, log=True)
    per_device_train_batch_size: Choices | int = Choices(choices=[8, 16, 32, 64])
    num_train_epochs: IntRange | int = IntRange(low=1, high=5)
    seed: Choices | int = Choices(choices=[42, 7, 1234])
    warmup_ratio: FloatRange | float = FloatRange(low=0.0, high=0.2)
    weight_decay: FloatRange | float = FloatRange(low=0.0, high=0.1)

    @field_validator("per_device_train_batch_size", "seed", "num_train_epochs")
    @classmethod
    def _integers(cls, value: Any) -> Any:
        values = value.choices if isinstance(value, Choices) else [value]
        for item in values:
            if isinstance(item, float) and not item.is_integer():
                raise ValueError(f"expected whole numbers, but got {item}")
        if isinstance(value, Choices):
            return Choices(choices=[int(item) for item in value.choices])
        return value

    @field_validator("warmup_ratio")
    @classmethod
    def _warmup_fraction(cls, value: Any) -> Any:
        # A share of the training steps (see training.build_training_arguments): [0, 1).
        low, high = (value.low, value.high) if isinstance(value, FloatRange) else (value, value)
        if low < 0.0 or high >= 1.0:
            given = f", but got low={low}, high={high}" if isinstance(value, FloatRange) else ""
            raise ValueError(f"is a share of the training steps and must lie in [0, 1){given}")
        return value

    def specs(self) -> dict[str, ParamSpec]:
        return {name: getattr(self, name) for name in SEARCHABLE_PARAMS}

    def max_epochs(self) -> int:
        epochs = self.num_train_epochs
        return epochs.high if isinstance(epochs, IntRange) else int(epochs)


class DatasetConfig(_Strict):
    path: str = Field(
        description="hub dataset id, a CSV/TSV/JSON lines/Parquet file, or a saved datasets dir"
    )
    text_column: str
    label_column: str
    label_names: list[str] | None = None
    train_split: str = "train"
    validation_split: str | None = None
    validation_fraction: float = 0.2
    split_seed: int = 42
    max_train_rows: int | None = Field(default=None, ge=1)
    max_validation_rows: int | None = Field(default=None, ge=1)

    @field_validator("validation_fraction")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError(f"must lie strictly between 0 and 1, but got {value}")
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


class ModelConfig(_Strict):
    name: str = Field(description="hub model id or a local directory")
    max_length: int = Field(ge=8, le=8192)


class EvaluationConfig(_Strict):
    strategy: Literal["steps", "epoch"] = "epoch"
    steps: int = Field(default=100, ge=1)


class TrainingConfig(_Strict):
    """Fixed training arguments, as in the model cards (Adam, linear schedule, eval batch 32)."""

    eval_batch_size: int = Field(default=32, ge=1)
    adam_beta1: float = Field(default=0.9, ge=0.0, lt=1.0)
    adam_beta2: float = Field(default=0.999, ge=0.0, lt=1.0)
    adam_epsilon: float = Field(default=1e-8, gt=0.0)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    # auto: bf16 where the GPU supports it, fp16 on older GPUs, full precision on a CPU.
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    group_by_length: bool = True


class Baseline(_Strict):
    name: str
    params: dict[str, float | int]

    @field_validator("params")
    @classmethod
    def _known(cls, value: dict[str, float | int]) -> dict[str, float | int]:
        unknown = sorted(set(value) - set(SEARCHABLE_PARAMS))
        if unknown:
            raise ValueError(
                f"unknown parameter {unknown[0]!r}; expected one of {list(SEARCHABLE_PARAMS)}"
            )
        return value


class ObjectiveConfig(_Strict):
    metric: Literal["validation_loss", "accuracy", "f1"] = "validation_loss"
    direction: Literal["minimize", "maximize"] | None = None

    @model_validator(mode="after")
    def _direction(self) -> ObjectiveConfig:
        expected = OBJECTIVE_DIRECTIONS[self.metric]
        if self.direction is not None and self.direction != expected:
            raise ValueError(
                f"{self.metric} is to {expected}, but got direction={self.direction!r}; "
                f"remove direction or set it to {expected!r}"
            )
        return self

    @property
    def study_direction(self) -> Literal["minimize", "maximize"]:
        return self.direction or OBJECTIVE_DIRECTIONS[self.metric]  # type: ignore[return-value]


class PrunerConfig(_Strict):
    type: Literal[
        "none", "median", "percentile", "successive_halving", "hyperband", "threshold"
    ] = "median"
    n_startup_trials: int = Field(default=2, ge=0)
    n_warmup_steps: int = Field(default=0, ge=0)
    interval_steps: int = Field(default=1, ge=1)
    percentile: float = Field(default=25.0, ge=0.0, le=100.0)
    min_resource: int | Literal["auto"] = "auto"
    max_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(default=3, ge=2)
    # threshold pruner: a trial whose reported value leaves [lower, upper] is stopped.
    lower: float | None = None
    upper: float | None = None
    # Wraps the pruner in optuna's PatientPruner: tolerate this many evaluations without
    # improvement before the wrapped pruner may stop a trial.
    patience: int | None = Field(default=None, ge=0)
    min_delta: float = Field(default=0.0, ge=0.0)

    @model_validator(mode="after")
    def _threshold(self) -> PrunerConfig:
        if self.type == "threshold" and self.lower is None and self.upper is None:
            raise ValueError("the threshold pruner needs lower or upper, but got neither")
        return self


class SamplerConfig(_Strict):
    type: Literal["tpe", "random"] = "tpe"
    seed: int | None = 42
    n_startup_trials: int = Field(default=10, ge=0)
    multivariate: bool = True


class BudgetConfig(_Strict):
    n_trials: int | None = Field(default=20, ge=1)
    timeout_seconds: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _bounded(self) -> BudgetConfig:
        if self.n_trials is None and self.timeout_seconds is None:
            raise ValueError("a sweep needs n_trials or timeout_seconds, but both are null")
        return self


class WorkersConfig(_Strict):
    """How workers share a study: Optuna heartbeats decide when a silent worker is dead."""

    heartbeat_interval_seconds: int = Field(default=30, ge=1)
    # A running trial with no heartbeat for this long is failed and retried elsewhere.
    grace_period_seconds: int = Field(default=120, ge=1)
    max_retries: int = Field(default=3, ge=0)
    # Trials that raised, in a row across all workers, after which every worker stops.
    max_consecutive_failures: int = Field(default=3, ge=1)
    # How often a worker with nothing to start looks again (trials may die and be retried).
    poll_seconds: float = Field(default=5.0, gt=0)
    # `sweeper worker --gpus`: worker processes per GPU, each running its own trial within
    # 1/trials_per_gpu of the GPU's memory (small models leave a whole GPU mostly idle).
    trials_per_gpu: int = 1

    @field_validator("trials_per_gpu")
    @classmethod
    def _trials_per_gpu(cls, value: int) -> int:
        if value < 1:
            raise ValueError(
                "must be at least 1 (worker processes per GPU); set workers.trials_per_gpu "
                "(or --trials-per-gpu) to 1 for one trial per GPU, or more to share each GPU"
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


class StudyConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dataset: DatasetConfig
    model: ModelConfig
    search_space: SearchSpace = SearchSpace()
    baselines: list[Baseline] = []
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    pruner: PrunerConfig = PrunerConfig()
    sampler: SamplerConfig = SamplerConfig()
    budget: BudgetConfig = BudgetConfig()
    workers: WorkersConfig = WorkersConfig()
    # An Optuna RDB URL; null means SQLite at <output_dir>/<name>/study.db.
    storage: str | None = None
    output_dir: str = "runs"
    # Where trial checkpoints go; a shared filesystem when several machines work on one study.
    checkpoint_root: str | None = None
    keep_all_checkpoints: bool = False

    @model_validator(mode="after")
    def _baselines_in_space(self) -> StudyConfig:
        specs = self.search_space.specs()
        for index, baseline in enumerate(self.baselines):
            for param, value in baseline.params.items():
                problem = _out_of_space(
                    specs[param], value, capped_param=param == "num_train_epochs"
                )
                if problem:
                    raise ValueError(
                        f"baselines[{index}] ({baseline.name}): {param}={value} {problem}"
                    )
        return self

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        return f"sqlite:///{(self.study_dir / 'study.db').resolve()}"

    @property
    def checkpoint_dir(self) -> Path:
        root = (
            Path(self.checkpoint_root) if self.checkpoint_root else self.study_dir / "checkpoints"
        )
        return root / self.name if self.checkpoint_root else root

    def baseline_params(self) -> list[tuple[str, dict[str, float | int]]]:
        """Baselines as enqueued: epochs above the study's maximum are capped to it (card B
        planned 200 epochs), fixed parameters are left to the study's fixed value."""
        specs = self.search_space.specs()
        enqueued = []
        for baseline in self.baselines:
            params: dict[str, float | int] = {}
            for name, value in baseline.params.items():
                if not isinstance(specs[name], (FloatRange, IntRange, Choices)):
                    continue
                if name == "num_train_epochs":
                    value = min(int(value), self.search_space.max_epochs())
                params[name] = value
            enqueued.append((baseline.name, params))
        return enqueued


def _out_of_space(spec: ParamSpec, value: float | int, capped_param: bool) -> str | None:
    if isinstance(spec, FloatRange) and not spec.low <= value <= spec.high:
        return f"lies outside the search range [{spec.low}, {spec.high}]"
    if isinstance(spec, IntRange) and (
        value < spec.low or (value > spec.high and not capped_param)
    ):
        return f"lies outside the search range [{spec.low}, {spec.high}]"
    if isinstance(spec, Choices) and value not in spec.choices:
        return f"is not among the choices {spec.choices}"
    if (
        isinstance(spec, (int, float))
        and not isinstance(spec, bool)
        and not math.isclose(spec, value)
        and not (capped_param and value > spec)
    ):
        return f"differs from the study's fixed value {spec}"
    return None


def find_study_file(study: str | Path, studies_dir: Path = DEFAULT_STUDIES_DIR) -> Path:
    """A study is a path to a study file, or a name under ``studies/``."""
    candidate = Path(study)
    if candidate.suffix in STUDY_SUFFIXES or candidate.parent != Path("."):
        if not candidate.is_file():
            raise ConfigError(f"study file {str(candidate)!r} does not exist")
        return candidate
    for suffix in STUDY_SUFFIXES:
        path = studies_dir / f"{study}{suffix}"
        if path.is_file():
            return path
    available = sorted(p.stem for p in studies_dir.glob("*") if p.suffix in STUDY_SUFFIXES)
    raise ConfigError(
        f"no study named {str(study)!r}: expected {studies_dir}/{study}.yaml (or .yml, .toml); "
        f"studies found: {available or 'none'}"
    )


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}``; values are parsed as YAML scalars."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--set expects KEY=VALUE (e.g. model.max_length=128), but got {pair!r}"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {pair!r}: the value is not valid YAML ({exc})") from exc
        overrides[key.strip()] = _number_or_string(value)
    return overrides


def _number_or_string(value: Any) -> Any:
    """YAML 1.1 reads 1e-6 (no dot) as a string; people mean the number."""
    if isinstance(value, str):
        try:
            return (
                float(value)
                if value.strip().lower() not in {"nan", "inf", "-inf", "infinity"}
                else value
            )
        except ValueError:
            return value
    return value


def _apply_override(document: dict[str, Any], dotted_key: str, value: Any) -> None:
    node = document
    parts = dotted_key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"cannot set {dotted_key!r}: {prefix!r} is {child!r}, not a mapping")
        node = child
    node[parts[-1]] = value


def _read_document(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    try:
        document = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"study file {path} is not valid {path.suffix[1:].upper()}: {exc}"
        ) from exc
    if document is None:
        raise ConfigError(
            f"study file {path} is empty; expected at least dataset and model sections"
        )
    if not isinstance(document, dict):
        raise ConfigError(
            f"study file {path} must hold a mapping, but holds {type(document).__name__}"
        )
    return document


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"] if not str(part).startswith("function-"))
        # Pydantic adds the union member to the location (e.g. "FloatRange"); keep the user's key.
        key = ".".join(
            p
            for p in key.split(".")
            if p not in {"FloatRange", "IntRange", "Choices", "float", "int"}
        )
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; see studies/imdb.yaml for every key)"
        elif item["type"] == "missing":
            message = "is required but missing"
        given = item.get("input")
        shown = (
            ""
            if item["type"] in {"missing", "extra_forbidden"} or isinstance(given, dict)
            else f", but got {given!r}"
        )
        lines.append(f"  {key or '<top level>'}: {message}{shown}")
    unique = list(dict.fromkeys(lines))
    return f"invalid study file {path}:\n" + "\n".join(unique)


def _resolve_path(value: str, base: Path) -> str:
    """dataset.path and model.name: a path that exists relative to the study file's folder
    is made absolute; anything else is left as given (a hub id, an absolute path, or a path
    relative to the current directory). output_dir, checkpoint_root and storage are never
    resolved here: they are relative to the current directory."""
    candidate = (base / value).expanduser()
    if candidate.exists():
        return str(candidate.resolve())
    return value


def load_study_config(
    study: str | Path,
    overrides: dict[str, Any] | None = None,
    studies_dir: Path = DEFAULT_STUDIES_DIR,
) -> StudyConfig:
    """Read a study file, apply dotted-key overrides and validate the result."""
    path = find_study_file(study, studies_dir)
    document = _read_document(path)
    document.setdefault("name", path.stem)
    for key, value in (overrides or {}).items():
        _apply_override(document, key, value)
    try:
        config = StudyConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from None
    base = path.parent
    dataset = config.dataset.model_copy(update={"path": _resolve_path(config.dataset.path, base)})
    model = config.model.model_copy(update={"name": _resolve_path(config.model.name, base)})
    return config.model_copy(update={"dataset": dataset, "model": model})


def dump_config(config: StudyConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
