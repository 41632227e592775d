"""The model card (README.md) of a study's best trial.

It follows the card the ``transformers.Trainer`` writes, the form of the two published
model cards the default study's baselines come from (studies/imdb.yaml): the base model and
dataset, the kept evaluation's metrics, the training hyperparameters, the training-results
table (one row per evaluation, from the trial's stored history) and the framework versions.
Then what those cards lack: how many trials the sweep ran, with which sampler and pruner, the
baselines' scores beside the best, and which evaluation was kept and why.
:func:`_model_card` builds it as a ``huggingface_hub.ModelCard``; :func:`render_card` gives
its text and :func:`write_card` saves it.

The YAML metadata is ``huggingface_hub``'s own ``ModelCardData``: ``base_model`` and
``datasets`` (hub ids only), ``pipeline_tag``, ``library_name``, ``license`` (where the study
names one), tags, and a ``model-index`` of ``EvalResult`` entries with every metric of the
kept evaluation (validation loss, accuracy, F1 with its averaging), so the Hub shows the
scores.

A LoRA trial's card adds a "LoRA adapters" section (rank, alpha, dropout, target modules,
bias, the modules trained in full, trainable parameters of all). Its metadata is what the
export holds: an adapter-only export (``sweeper export --adapter``) is a peft model
(``library_name: peft``, tag ``lora``), which the Hub lists as an adapter of ``base_model``;
a merged export is a plain transformers model, as a full fine-tune's.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id
from optuna.trial import FrozenTrial, TrialState

from sweeper.attributes import (
    BEST_STEP_ATTR,
    LABEL_NAMES_ATTR,
    LICENSE_ATTR,
    STOP_REASON_ATTR,
    TOTAL_PARAMETERS_ATTR,
    TRAINABLE_PARAMETERS_ATTR,
)
from sweeper.errors import CardError
from sweeper.records.confirmation import (
    Confirmation,
    describe_test_split,
    load_confirmed_run,
    spread_text,
)
from sweeper.records.results import (
    StudySummary,
    enqueued_as,
    history,
    kept_evaluation,
    objective_metric,
    summarize,
)
from sweeper.settings.config import DatasetConfig, StudyConfig
from sweeper.settings.hyperparameters import (
    HYPERPARAMETERS,
    Choices,
    FloatRange,
    IntRange,
    card_name,
    fixed_params,
    is_searched,
    trial_params,
)
from sweeper.settings.metrics import METRICS, OBJECTIVE_NAMES, metric
from sweeper.settings.metrics import f1_average as metrics_f1_average
from sweeper.trial.speed import DEVICE_DEFAULTS

CARD_FILE = "README.md"
# The Trainer card's results table: its fixed columns, then one per metric in METRICS.
RESULTS_HEADER = ("Training Loss", "Epoch", "Step", *(m.card_column for m in METRICS))
RESULT_KEYS = ("training_loss", "epoch", "step", *(m.name for m in METRICS))
FRAMEWORKS = (
    ("Transformers", "transformers"),
    ("Pytorch", "torch"),
    ("Datasets", "datasets"),
    ("Tokenizers", "tokenizers"),
    ("Optuna", "optuna"),
)
TASK_TYPE = "text-classification"
TASK_NAME = "Text Classification"
TAGS = ("sweeper", "optuna", "generated_from_trainer")
# The tag peft's own cards give a LoRA adapter; an adapter-only export carries it.
LORA_TAG = "lora"
# The model-index's dataset ``type`` is a Hub dataset id (what ``load_dataset`` takes). A local
# file or directory has none, and a builder name such as "csv" would read as a Hub dataset
# and not cover a saved ``datasets`` directory, so every local source gets the one type
# "local", and its file (or directory) name is the dataset's name.
LOCAL_DATASET_TYPE = "local"


@dataclass(frozen=True)
class ExportedAdapters:
    """What an export of a LoRA trial read off its loaded adapters, which the study's records
    do not hold: the modules peft wrapped (``target_modules: auto`` resolved) and the ones it
    trained in full, where the base model was loaded on this machine, and whether the export
    is the adapters alone (a peft model) or merged into the base weights; and the label names
    its head predicts (what loading an adapter-only export onto the base model needs)."""

    adapter_only: bool
    base_model: str
    target_modules: tuple[str, ...]
    kept_modules: tuple[str, ...]
    label_names: tuple[str, ...] = ()


def trainable_text(trainable: Any, total: Any) -> str | None:
    """``37,634 of 22,751,620 (0.17%)``; None when the trial did not record both."""
    if not isinstance(trainable, int) or not isinstance(total, int) or total <= 0:
        return None
    share = trainable / total
    percent = f"{share:.2%}" if share >= 1e-4 else f"{100 * share:.2g}%"
    return f"{trainable:,} of {total:,} ({percent.replace('100.00%', '100%')})"


def _number(value: Any) -> str:
    """Numbers as the Trainer's card writes them: at most 4 decimals, 'No log' for none."""
    if value is None:
        return "No log"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer():
            return str(value)
        return f"{value:.4f}" if len(str(value).split(".")[-1]) > 4 else str(value)
    return str(value)


def _eval_batch_text(value: int | str) -> str:
    """The evaluation batch as the study file set it; auto depends on the worker's device."""
    if value != "auto":
        return _hyper(value)
    cpu, gpu = (DEVICE_DEFAULTS[device]["eval_batch_size"] for device in ("cpu", "gpu"))
    return f"auto ({cpu} on a CPU, {gpu} on a GPU)"


def _hyper(value: Any) -> str:
    """A hyperparameter as the cards show it: 1e-05, 3e-05, 32."""
    if isinstance(value, float):
        return f"{value:.6g}" if not value.is_integer() else str(int(value))
    return str(value)


def _is_local(name: str) -> bool:
    """Whether a model or dataset name is a local path rather than a Hub id. As in
    :func:`sweeper.trial.models.resolve_local_path`, a path that exists is local; so is one that
    looks like a path (``/``, ``.``, ``~``, ``package:``), a data file's name (``reviews.csv``:
    written on another machine, it need not exist here) and anything that is not a valid
    Hub repo id (``runs/x/model``)."""
    from sweeper.trial.data import READABLE_SUFFIXES, data_suffix

    if name.startswith(("package:", "/", ".", "~")) or Path(name).exists():
        return True
    if data_suffix(Path(name)) in READABLE_SUFFIXES:
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def _model_reference(name: str) -> str:
    if _is_local(name):
        return f"`{name}`"
    return f"[{name}](https://huggingface.co/{name})"


def _dataset_reference(dataset: DatasetConfig) -> str:
    path = dataset.path
    if _is_local(path):
        return f"the {Path(path).name} dataset (`{path}`)"
    return f"the [{path}](https://huggingface.co/datasets/{path}) dataset"


def f1_average(num_labels: int | None) -> str | None:
    """The F1 averaging the sweep computed (:func:`sweeper.settings.metrics.f1_average`); None when
    the study stored no label names."""
    if num_labels is None or num_labels < 2:
        return None
    return metrics_f1_average(num_labels)


def _label_names(study: optuna.Study, config: StudyConfig) -> list[str]:
    names = study.user_attrs.get(LABEL_NAMES_ATTR) or config.dataset.label_names
    return [str(name) for name in names or []]


def _split_name(dataset: DatasetConfig) -> str:
    """The evaluation split: its name, or the share of the training split held out."""
    if dataset.validation_split:
        return dataset.validation_split
    return f"{dataset.train_split} ({dataset.validation_fraction:.0%} held out)"


def _split_args(dataset: DatasetConfig) -> dict[str, Any] | None:
    """How a held-out or capped evaluation split was drawn (the model-index dataset args)."""
    args: dict[str, Any] = {}
    if not dataset.validation_split:
        args["validation_fraction"] = dataset.validation_fraction
        args["split_seed"] = dataset.split_seed
    if dataset.max_validation_rows:
        args["max_validation_rows"] = dataset.max_validation_rows
    return args or None


def eval_results(
    kept: dict[str, Any] | None,
    dataset: DatasetConfig,
    average: str | None,
    split: str | None = None,
) -> list[EvalResult]:
    """The model-index entries: each finite metric of the kept evaluation, unrounded, on the
    validation split (or on ``split``, named as given: the test split's scores)."""
    path = dataset.path
    local = not path or _is_local(path)
    results = []
    for entry in METRICS:
        key, metric_type, metric_name = entry.name, entry.hub_type, entry.card_column
        value = _float_or_none((kept or {}).get(key))
        if value is None or not math.isfinite(value):
            continue
        metric_args = None
        if key == "f1" and average is not None:
            metric_name = f"F1 ({average})"
            metric_args = {"average": average}
        results.append(
            EvalResult(
                task_type=TASK_TYPE,
                task_name=TASK_NAME,
                dataset_type=LOCAL_DATASET_TYPE if local else path,
                dataset_name=(Path(path).name or path or "unknown") if local else path,
                dataset_split=split or _split_name(dataset),
                dataset_args=None if split else _split_args(dataset),
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=value,
                metric_args=metric_args,
            )
        )
    return results


def _license(study: optuna.Study, config: StudyConfig) -> str | None:
    """The license the study names, if any: a ``license`` study user attribute, or the
    study file's ``model.license``."""
    sources = (
        ("study user attribute 'license'", study.user_attrs.get(LICENSE_ATTR)),
        ("study file key 'model.license'", config.model.license),
    )
    for where, value in sources:
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
            raise CardError(
                f"license={value!r} (the {where} of study {study.study_name!r}) is not a Hub "
                "license identifier; set it to one such as 'apache-2.0', 'mit' or 'other' "
                "(https://huggingface.co/docs/hub/repositories-licenses), e.g. "
                "study.set_user_attr('license', 'apache-2.0'), or remove it to omit the license"
            )
        return value
    return None


def _card_data(
    study: optuna.Study,
    trial: FrozenTrial,
    config: StudyConfig,
    confirmation: Confirmation | None = None,
    adapters: ExportedAdapters | None = None,
) -> ModelCardData:
    """The card's YAML metadata for ``trial`` of ``study`` (with ``confirmation``: the
    exported run of the confirmed winner, with its test scores where there are any). An
    adapter-only export is a peft model: ``library_name: peft`` and the ``lora`` tag, as
    peft's own cards, so the Hub lists it as an adapter of ``base_model``."""
    model = config.model.name
    dataset = config.dataset
    path = dataset.path
    average = f1_average(len(_label_names(study, config)) or None)
    results = eval_results(kept_evaluation(trial), dataset, average)
    test = confirmation.export_run.test if confirmation is not None else None
    if test is not None:
        scores = {"validation_loss": test.loss, "accuracy": test.accuracy, "f1": test.f1}
        results += eval_results(scores, dataset, average, split=describe_test_split(dataset))
    name = (
        f"{study.study_name}-{confirmation.winner}-seed-{confirmation.export_seed}"
        if confirmation is not None
        else f"{study.study_name}-trial-{trial.number}"
    )
    adapter_only = adapters is not None and adapters.adapter_only
    return ModelCardData(
        base_model=model if model and not _is_local(model) else None,
        datasets=[path] if path and not _is_local(path) else None,
        library_name="peft" if adapter_only else "transformers",
        license=_license(study, config),
        metrics=[m.hub_type for m in METRICS if m.computation is not None],
        pipeline_tag=TASK_TYPE,
        tags=[*TAGS, LORA_TAG] if adapter_only else list(TAGS),
        # Without results there is no model-index: an empty one shows nothing on the Hub.
        model_name=name if results else None,
        eval_results=results or None,
    )


def _hyperparameters(trial: FrozenTrial, config: StudyConfig) -> list[str]:
    """The Trainer card's hyperparameter list, each searchable one named as its entry in
    :data:`sweeper.settings.hyperparameters.HYPERPARAMETERS` says."""
    training = config.training
    # By name (a per-method lora_learning_rate is the learning_rate), with the fixed values.
    params = trial_params(config.space, trial.params)
    searched = [
        f"- {entry.card_name}: {_hyper(params[entry.name])}"
        for entry in HYPERPARAMETERS
        if entry.name in params and params[entry.name] != entry.card_omits
    ]
    lines = [
        "The following hyperparameters were used during training:",
        *searched,
        f"- eval_batch_size: {_eval_batch_text(training.eval_batch_size)}",
    ]
    accumulation = training.gradient_accumulation_steps
    if accumulation > 1:
        batch = int(params.get("per_device_train_batch_size") or 0)
        lines += [
            f"- gradient_accumulation_steps: {accumulation}",
            f"- total_train_batch_size: {batch * accumulation}",
        ]
    lines += [
        f"- optimizer: Adam with betas=({_hyper(training.adam_beta1)},"
        f"{_hyper(training.adam_beta2)}) and epsilon={_hyper(training.adam_epsilon)}",
        f"- lr_scheduler_type: {training.lr_scheduler_type}",
    ]
    return lines


def _lora_section(
    trial: FrozenTrial, config: StudyConfig, adapters: ExportedAdapters | None
) -> list[str]:
    """A LoRA trial's adapters: what peft wrapped and trained, how many parameters of the
    model that is, and the form the export holds; nothing for a full fine-tune (whose card
    stays the Trainer's)."""
    if config.space.method_of(trial.params) != "lora":
        return []
    params = trial_params(config.space, trial.params)
    r, alpha = int(params["lora_r"]), int(params["lora_alpha"])
    targets = str(params["lora_target_modules"])
    if adapters is not None:
        targets = ", ".join(adapters.target_modules)
    elif targets == "auto":
        targets = "auto (the architecture's default; the export's adapter_config.json names them)"
    extra = list(config.lora.modules_to_save)
    kept = (
        ", ".join(adapters.kept_modules)
        if adapters is not None
        else "the classification head, any module the pretrained model lacked (newly "
        "initialised)" + (f", and {', '.join(extra)} (lora.modules_to_save)" if extra else "")
    )
    counted = trainable_text(
        trial.user_attrs.get(TRAINABLE_PARAMETERS_ATTR), trial.user_attrs.get(TOTAL_PARAMETERS_ATTR)
    )
    return [
        "### LoRA adapters",
        "",
        "Fine-tuned with LoRA (peft): the base model's weights stayed frozen; only low-rank "
        "adapters on the target modules and the modules trained in full were trained.",
        "",
        "- Method: lora",
        f"- Base model: {_model_reference(config.model.name)}",
        f"- r: {r}",
        f"- alpha: {alpha} (the update is scaled by alpha / r = {_hyper(alpha / r)})",
        f"- dropout: {_hyper(float(params['lora_dropout']))}",
        f"- Target modules: {targets}",
        f"- Bias: {config.lora.bias}",
        f"- Modules trained in full: {kept}",
        f"- Trainable parameters: {counted or 'not recorded'}",
        "",
        *_export_form_lines(adapters),
    ]


def _export_form_lines(adapters: ExportedAdapters | None) -> list[str]:
    """What the export of a LoRA trial holds, and how to load an adapter-only one."""
    if adapters is None:
        return [
            "`sweeper export` writes the adapters merged into the base weights (a plain "
            "transformers model), or with `--adapter` the adapters alone (a peft model).",
            "",
        ]
    if not adapters.adapter_only:
        return [
            "This model holds the adapters merged into the base weights (peft's "
            "`merge_and_unload`): a plain transformers model, which loads without peft.",
            "",
        ]
    names = list(adapters.label_names)
    # Double-quoted Python literals (json.dumps of a str is one), whatever the names hold.
    labels = (
        [
            "    id2label={"
            + ", ".join(f"{i}: {json.dumps(n)}" for i, n in enumerate(names))
            + "},",
            "    label2id={"
            + ", ".join(f"{json.dumps(n)}: {i}" for i, n in enumerate(names))
            + "},",
        ]
        if names
        else []
    )
    return [
        "This directory holds the adapters alone (adapter_config.json and "
        "adapter_model.safetensors, with the modules trained in full), not the base weights; "
        "load them onto the base model with peft:",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForSequenceClassification",
        "",
        "base = AutoModelForSequenceClassification.from_pretrained(",
        f"    {json.dumps(adapters.base_model)},",
        f"    num_labels={len(names) or 'NUM_LABELS'},",
        *labels,
        ")",
        'model = PeftModel.from_pretrained(base, "path/to/this/directory")',
        "```",
        "",
    ]


def _results_table(trial: FrozenTrial) -> list[str]:
    """The cards' training-results table, one row per evaluation of the trial."""
    widths = [len(title) for title in RESULTS_HEADER]
    lines = [
        "| " + " | ".join(RESULTS_HEADER) + " |",
        "|" + "|".join(f":{'-' * (width)}:" for width in widths) + "|",
    ]
    for row in history(trial):
        lines.append("| " + " | ".join(_number(row.get(key)) for key in RESULT_KEYS) + " |")
    return lines


def _search_space(config: StudyConfig) -> str:
    parts = []
    for name, spec in config.space.specs().items():
        if isinstance(spec, Choices):
            parts.append(f"{name} in {spec.choices}")
        elif isinstance(spec, (FloatRange, IntRange)):
            scale = ", log scale" if isinstance(spec, FloatRange) and spec.log else ""
            parts.append(f"{name} from {_hyper(spec.low)} to {_hyper(spec.high)}{scale}")
        else:
            parts.append(f"{name} fixed at {_hyper(spec)}")
    return "; ".join(parts)


def _score(trial: FrozenTrial) -> dict[str, str]:
    kept = kept_evaluation(trial) or {}
    return {key: _number(kept.get(key)) if kept else "-" for key in RESULT_KEYS}


def _baselines_table(summary: StudySummary, best: FrozenTrial) -> list[str]:
    rows = [("best (this model)", best)] + [
        (str(enqueued_as(trial)), trial)
        for trial in summary.enqueued()
        if trial.number != best.number
    ]
    # One column per hyperparameter the study searched, named as the Trainer's card does.
    searched = [name for name, spec in summary.config.space.specs().items() if is_searched(spec)]
    header = ["Run", "Trial", "State", "Step kept", *(m.card_column for m in METRICS)]
    header += [card_name(name) for name in searched]
    lines = [
        "| " + " | ".join(header) + " |",
        "|:----|:-----:|:------|:---------:|"
        + "".join(f":{'-' * len(column)}:|" for column in header[4:]),
    ]
    fixed = fixed_params(summary.config.space)
    for role, trial in rows:
        if trial.number == best.number and (enqueued := enqueued_as(trial)) is not None:
            role = f"best (this model; {enqueued})"
        score = _score(trial)
        params = {**fixed, **trial.params}
        state = trial.state.name.lower()
        if trial.state == TrialState.PRUNED:
            state = str(trial.user_attrs.get(STOP_REASON_ATTR) or "pruned")
        lines.append(
            "| "
            + " | ".join(
                [
                    role,
                    f"#{trial.number}",
                    state.replace("|", "/"),
                    str(trial.user_attrs.get(BEST_STEP_ATTR) or "-"),
                    *(score[m.name] for m in METRICS),
                    *[_hyper(params.get(name, "-")) for name in searched],
                ]
            )
            + " |"
        )
    return lines


def _kept_evaluation_text(trial: FrozenTrial, metric: str, direction: str) -> str:
    """Which evaluation's checkpoint is this model, and why that one and not the last."""
    rows = history(trial)
    kept = kept_evaluation(trial)
    name = _prose(metric)
    extreme = "lowest" if direction == "minimize" else "highest"
    if kept is None or not rows:
        return "The trial stored no evaluation history, so the kept evaluation is unknown."
    text = (
        f"The weights are the checkpoint of the evaluation at step {kept['step']} "
        f"(epoch {_number(kept.get('epoch'))}): the {extreme} {name} "
        f"({_number(kept.get(metric))}) of the trial's {len(rows)} evaluations. "
        "The sweep scores every trial by its best evaluation, not its last, and keeps that "
        "checkpoint, since a fine-tuning often peaks before its last epoch."
    )
    last = rows[-1]
    if last["step"] == kept["step"]:
        return text + " Here the best evaluation was also the last one."
    text += f" The last evaluation, at step {last['step']}, had {name} {_number(last.get(metric))}"
    kept_val, last_val = (
        _float_or_none(kept.get("validation_loss")),
        _float_or_none(last.get("validation_loss")),
    )
    kept_train, last_train = (
        _float_or_none(kept.get("training_loss")),
        _float_or_none(last.get("training_loss")),
    )
    if (
        kept_val is not None
        and last_val is not None
        and kept_train is not None
        and last_train is not None
        and last_val > kept_val
        and last_train < kept_train
    ):
        text += (
            f", while its validation loss rose from {_number(kept_val)} to "
            f"{_number(last_val)} and training loss fell from {_number(kept_train)} to "
            f"{_number(last_train)}: the model was overfitting after step {kept['step']}."
        )
    else:
        text += "."
    return text


def _prose(name: str) -> str:
    return metric(name).prose if name in OBJECTIVE_NAMES else name


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _versions() -> list[str]:
    lines = []
    for shown, package in FRAMEWORKS:
        try:
            lines.append(f"- {shown} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return lines


def best_or_error(study: optuna.Study) -> FrozenTrial:
    from sweeper.records.results import best_trial

    best = best_trial(study)
    if best is None:
        total = len(study.get_trials(deepcopy=False))
        raise CardError(
            f"study {study.study_name!r} has no complete trial yet ({total} trial(s) in storage, "
            f"none complete), so there is no best model; run `sweeper sweep "
            f"{study.study_name}` until a trial completes"
        )
    return best


def _model_card(
    study: optuna.Study,
    trial: FrozenTrial | None = None,
    adapters: ExportedAdapters | None = None,
) -> ModelCard:
    """The model card of ``trial`` (default: the confirmed winner's exported run when
    ``sweeper confirm`` has run, else the study's best trial): ``huggingface_hub``'s
    metadata (:func:`_card_data`) over the Trainer-style body. ``adapters``: what an export
    of a LoRA trial loaded and wrote (None: the card says what ``sweeper export`` writes)."""
    confirmed = load_confirmed_run(study) if trial is None else None
    confirmation = confirmed[0] if confirmed is not None else None
    best = trial or (confirmed[1] if confirmed is not None else best_or_error(study))
    summary = summarize(study)
    data = _card_data(study, best, summary.config, confirmation, adapters)
    body = _body(study, summary, best, confirmation, adapters)
    # The content is put together here rather than by ModelCard.from_template: that renders
    # the body as a Jinja2 template (jinja2 is not a dependency of huggingface_hub), and a
    # label name or path holding "{{" would be taken for template syntax.
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def render_card(
    study: optuna.Study,
    trial: FrozenTrial | None = None,
    adapters: ExportedAdapters | None = None,
) -> str:
    """The README.md text of ``trial`` (default: as :func:`_model_card` picks it)."""
    return str(_model_card(study, trial, adapters))


def _scores_lines(loss: Any, accuracy: Any, f1: Any) -> list[str]:
    return [f"- Loss: {_number(loss)}", f"- Accuracy: {_number(accuracy)}", f"- F1: {_number(f1)}"]


def _results_intro(
    kept: dict[str, Any], dataset: DatasetConfig, confirmation: Confirmation | None
) -> list[str]:
    """The card's first numbers, each named with its split."""
    lines = [
        f"It achieves the following results on the validation split "
        f"(`{_split_name(dataset)}`, the evaluation kept, at step {kept.get('step', '-')}):",
        *_scores_lines(kept.get("validation_loss"), kept.get("accuracy"), kept.get("f1")),
    ]
    if confirmation is None:
        return [
            *lines,
            "",
            "These are single-seed validation numbers: the sweep selected this trial on them, "
            "so they flatter it (`sweeper confirm` re-trains the best configurations with fresh "
            "seeds and scores the winner on a test split).",
        ]
    test = confirmation.export_run.test
    if test is not None:
        lines += [
            "",
            f"On the test split (`{describe_test_split(dataset)}`), never used to select it, from "
            "the same checkpoint:",
            *_scores_lines(test.loss, test.accuracy, test.f1),
        ]
    else:
        lines += ["", "The study has no test split, so there is no test score."]
    return lines


def _confirmation_section(confirmation: Confirmation, dataset: DatasetConfig) -> list[str]:
    """Every confirmed configuration over seeds, and the verdicts against the baselines."""
    metric = confirmation.metric
    seeds = len(confirmation.seeds)
    header = [
        "Configuration",
        "Role",
        f"Selected {metric} (validation, 1 seed)",
        f"{metric} (validation, mean ± std)",
        "Accuracy (validation)",
        "Accuracy (test)",
        "F1 (test)",
        "Loss (test)",
    ]
    lines = [
        f"The sweep picked its best trial by one seed's validation score. `sweeper confirm` "
        f"re-trained its {confirmation.top_k} best configurations (distinct in everything but "
        f"the seed) and the baselines with the same {seeds} fresh seeds "
        f"({', '.join(str(s) for s in confirmation.seeds)}), pruning off. Mean ± standard "
        f"deviation over seeds; validation is `{_split_name(dataset)}`"
        + (
            f", test is `{describe_test_split(dataset)}` (the winner and the baselines only)."
            if dataset.test_split or dataset.test_fraction
            else "; the study has no test split."
        ),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":----"] * 2 + [":---:"] * (len(header) - 2)) + "|",
    ]
    for config in confirmation.configs:
        name = f"{config.id}: {config.name}" + (
            " (winner, this model)" if config.id == confirmation.winner else ""
        )
        cells = [
            name,
            config.role,
            _number(config.selected_value),
            spread_text(config.objective),
            spread_text(config.accuracy),
            spread_text(config.test_accuracy),
            spread_text(config.test_f1),
            spread_text(config.test_loss),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    lines.append("")
    for comparison in confirmation.comparisons:
        lines.append(f"- {comparison.text(confirmation.winner)}: **{comparison.verdict}**.")
    lines += [f"- Note: {note}" for note in confirmation.notes]
    return lines


def _description(
    summary: StudySummary,
    best: FrozenTrial,
    metric: str,
    label_names: list[str],
    confirmation: Confirmation | None,
) -> str:
    """The model description: the classifier, its labels, and which run of the study it is."""
    counts = summary.counts
    direction = summary.direction
    return (
        f"A {len(label_names)}-class text classifier"
        + (f" (labels: {', '.join(f'`{name}`' for name in label_names)})" if label_names else "")
        + (
            f", the confirmed winner of the Optuna study `{summary.name}`: configuration "
            f"{confirmation.winner} ({confirmation.winning.name}'s), the best mean "
            f"{_prose(metric)} over {len(confirmation.seeds)} fresh seeds "
            f"({'lower' if direction == 'minimize' else 'higher'} is better); these weights are "
            f"its seed {confirmation.export_seed} (trial #{best.number} of "
            f"`{summary.name}.confirm`), the median of its seeds."
            if confirmation is not None
            else f", trial #{best.number} of the Optuna study `{summary.name}`: the best of "
            f"{counts['complete']} complete trials by {_prose(metric)} "
            f"({'lower' if direction == 'minimize' else 'higher'} is better)."
        )
    )


def _search_lines(summary: StudySummary, metric: str) -> list[str]:
    """The hyperparameter search: its trials, objective, sampler, pruner and search space."""
    config = summary.config
    counts = summary.counts
    total = sum(counts.values())
    direction = summary.direction
    return [
        f"- Trials: {total} in the study: {counts['complete']} complete, {counts['pruned']} "
        f"pruned, {counts['failed']} failed, {counts['running']} running.",
        f"- Objective: {direction} {_prose(metric)}, each trial scored by its best evaluation.",
        f"- Sampler: {config.sampler.describe()}.",
        f"- Pruner: {config.pruner.describe()}; it stopped trials that fell behind at the same "
        f"{_grid_unit(config)}, saving {summary.saved_steps} of the "
        f"{summary.planned_steps_stopped} steps the stopped trials had planned.",
        f"- Early stopping: {_early_stopping_text(config, summary)}",
        *_near_chance_lines(config),
        f"- Search space: {_search_space(config)}.",
        *_warm_start_lines(summary),
    ]


def _warm_start_lines(summary: StudySummary) -> list[str]:
    """Which earlier studies the search started from, what differed, what they gave it."""
    record = summary.warm_start
    if not record:
        return []
    sources = []
    for source in record.get("sources", []):
        differs = "; ".join(source.get("differs") or []) or "the same task"
        sources.append(f"`{source['study']}` ({differs})")
    enqueued = [f"#{trial.number}" for trial in summary.warm_started]
    config = summary.config.warm_start
    modelled = (
        f"; the sampler also modelled the sources' finished trials, each weighing "
        f"{config.source_weight:g} of one of this study's"
        if config.sampler and summary.config.sampler.type == "tpe"
        else ""
    )
    return [
        f"- Warm start: from {', '.join(sources)}; "
        f"{len(enqueued)} of their best configurations enqueued after the baselines "
        f"({', '.join(enqueued) or 'none'}){modelled}."
    ]


def _procedure_lines(
    summary: StudySummary,
    best: FrozenTrial,
    metric: str,
    adapters: ExportedAdapters | None = None,
) -> list[str]:
    """The training procedure: hyperparameters (and a LoRA trial's adapters), results, the
    search, and the kept evaluation."""
    config = summary.config
    return [
        "## Training procedure",
        "",
        "### Training hyperparameters",
        "",
        *_hyperparameters(best, config),
        "",
        *_lora_section(best, config, adapters),
        "### Training results",
        "",
        *_results_table(best),
        "",
        "### Hyperparameter search",
        "",
        *_search_lines(summary, metric),
        "",
        "Scores of this model and of the baselines (each at the evaluation it kept):",
        "",
        *_baselines_table(summary, best),
        "",
        "#### Which evaluation was kept, and why",
        "",
        _kept_evaluation_text(best, metric, summary.direction),
        "",
    ]


def _body(
    study: optuna.Study,
    summary: StudySummary,
    best: FrozenTrial,
    confirmation: Confirmation | None = None,
    adapters: ExportedAdapters | None = None,
) -> str:
    config = summary.config
    metric = objective_metric(study)
    model = config.model.name
    dataset = config.dataset
    label_names = _label_names(study, config)
    average = f1_average(len(label_names) or None)
    kept = kept_evaluation(best) or {}
    lines = [
        "<!-- This model card was written by `sweeper card` from the Optuna study's stored "
        "trials. Proofread and complete it before publishing. -->",
        "",
        f"# {summary.name}-{confirmation.winner}-seed-{confirmation.export_seed}"
        if confirmation is not None
        else f"# {summary.name}-trial-{best.number}",
        "",
        f"This model is a fine-tuned version of {_model_reference(model)} on "
        f"{_dataset_reference(dataset)}.",
        *_results_intro(kept, dataset, confirmation),
        "",
        "## Model description",
        "",
        _description(summary, best, metric, label_names, confirmation),
        "",
        "## Intended uses & limitations",
        "",
        "More information needed",
        "",
        "## Training and evaluation data",
        "",
        _data_text(dataset),
        "",
        _f1_text(average, label_names),
        "",
        *_procedure_lines(summary, best, metric, adapters),
        *(
            ["### Confirmation over seeds", "", *_confirmation_section(confirmation, dataset), ""]
            if confirmation is not None
            else []
        ),
        "### Framework versions",
        "",
        *_versions(),
        "",
    ]
    return "\n".join(lines)


def _grid_unit(config: StudyConfig) -> str:
    evaluation = config.evaluation
    if evaluation.strategy == "examples":
        return f"number of training examples (an evaluation every {evaluation.examples})"
    return "epoch" if evaluation.strategy == "epoch" else "step"


def _near_chance_lines(config: StudyConfig) -> list[str]:
    rule = config.near_chance
    if rule.at_fraction is None:
        return []
    return [
        f"- Near chance: a trial whose best validation accuracy was still within "
        f"{rule.margin:g} of the majority-class rate after {rule.at_fraction:g} of its planned "
        "steps was stopped (pruned)."
    ]


def _early_stopping_text(config: StudyConfig, summary: StudySummary) -> str:
    rule = config.early_stopping
    if rule.patience is None:
        return "none (no trial was ended for not improving)."
    delta = f" by more than {rule.min_delta:g}" if rule.min_delta else ""
    return (
        f"a trial ended, complete and scored by its best evaluation, once {rule.patience} "
        f"evaluations in a row did not beat its best{delta}; {summary.early_stopped} trial(s) "
        "ended so."
    )


def _data_text(dataset: DatasetConfig) -> str:
    validation = (
        f"its `{dataset.validation_split}` split"
        if dataset.validation_split
        else f"a stratified {dataset.validation_fraction:.0%} of `{dataset.train_split}` "
        f"(split seed {dataset.split_seed})"
    )
    limits = [
        f"at most {rows} {what} rows"
        for rows, what in (
            (dataset.max_train_rows, "training"),
            (dataset.max_validation_rows, "validation"),
        )
        if rows
    ]
    return (
        f"Trained on the `{dataset.train_split}` split of `{dataset.path}` "
        f"(text column `{dataset.text_column}`, label column `{dataset.label_column}`), "
        f"evaluated on {validation}" + (f", {' and '.join(limits)}" if limits else "") + "."
    )


def _f1_text(average: str | None, label_names: list[str]) -> str:
    if average == "binary":
        return (
            f"F1 is binary: the F1 of label 1 (`{label_names[1]}`), as `evaluate`'s f1 with "
            'average="binary".'
        )
    if average == "macro":
        return (
            f"F1 is macro-averaged: the mean of the {len(label_names)} labels' F1, as "
            '`evaluate`\'s f1 with average="macro".'
        )
    return "The study stored no label names, so F1's averaging (binary or macro) is not known."


def write_card(study: optuna.Study, path: Path, trial: FrozenTrial | None = None) -> Path:
    """Write the card to ``path`` (a file, or a directory that gets README.md)."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / CARD_FILE
    _model_card(study, trial).save(path)
    return path
