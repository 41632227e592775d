"""The views of a study that searched the fine-tuning method: the export of its best LoRA
trial (merged into a plain model that loads with no peft installed, or the adapter alone
that peft loads onto the base model), its model card, and the report's parameter and
checkpoint costs beside the full fine-tunes'."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from huggingface_hub import ModelCard, ModelCardData
from optuna.trial import FrozenTrial, TrialState

from sweeper.errors import ExportError
from sweeper.launch.cli import main
from sweeper.study.sweep import load_existing_study
from sweeper.trial.adapters import load_trained
from sweeper.views.card import ExportedAdapters, render_card
from sweeper.views.export import export_best
from sweeper.views.figures import figures
from sweeper.views.report import bytes_text, render_report
from tests.support.studies import FinishedStudy, base_study

LABELS = ["negative", "positive"]
TEXTS = [
    "A wonderful film, moving and beautifully acted.",
    "Dull, predictable and far too long; I want my evening back.",
    "It was fine.",
]


@dataclass(frozen=True)
class Exports:
    """The mixed study's best LoRA trial exported both ways, with what the CLI printed."""

    merged: Path
    adapter: Path
    merged_line: str
    adapter_line: str


@pytest.fixture(scope="module")
def lora_study(
    tmp_path_factory: pytest.TempPathFactory, small_csv: Path, tiny_model_dir: Path
) -> FinishedStudy:
    """A three-trial sweep over model.method (full | lora), every checkpoint kept: a full
    baseline whose learning rate is absurd (it diverges, as every full trial of the space
    does), a LoRA baseline, and one sampled trial. A LoRA trial is the best."""
    directory = tmp_path_factory.mktemp("lora-study")
    study = base_study(
        small_csv,
        tiny_model_dir,
        directory / "runs",
        model={
            "name": str(tiny_model_dir),
            "max_length": 64,
            "method": {"choices": ["full", "lora"]},
        },
        lora={"r": {"choices": [4, 8]}, "alpha": 16},
        search_space={
            "learning_rate": {
                "full": {"low": 0.5, "high": 1.0, "log": True},
                "lora": {"low": 1e-2, "high": 5e-2, "log": True},
            },
            "per_device_train_batch_size": 32,
            "num_train_epochs": 1,
            "seed": 42,
        },
        baselines=[
            {"name": "full absurd", "params": {"method": "full", "learning_rate": 1.0}},
            {"name": "lora", "params": {"method": "lora", "learning_rate": 3e-2, "lora_r": 8}},
        ],
        keep_all_checkpoints=True,
        budget={"n_trials": 3},
    )
    study["name"] = "mixed"
    path = directory / "mixed.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    assert main(["sweep", str(path), "--no-progress"]) == 0
    url = f"sqlite:///{directory / 'runs' / 'mixed' / 'study.db'}"
    return FinishedStudy("mixed", path, url, directory / "runs")


def open_study(finished: FinishedStudy) -> optuna.Study:
    return load_existing_study(finished.name, finished.storage_url)


def method_of(trial: FrozenTrial) -> str:
    return str(trial.params["method"])


def cli_line(argv: list[str]) -> str:
    """What a successful command printed on stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def exports(lora_study: FinishedStudy, tmp_path_factory: pytest.TempPathFactory) -> Exports:
    directory = tmp_path_factory.mktemp("lora-exports")
    merged, adapter = directory / "merged", directory / "adapter"
    study_file = str(lora_study.study_file)
    merged_line = cli_line(["export", study_file, "--to", str(merged)])
    adapter_line = cli_line(["export", study_file, "--to", str(adapter), "--adapter"])
    return Exports(merged, adapter, merged_line, adapter_line)


def reference_logits(study: optuna.Study, base: Path) -> torch.Tensor:
    """The best trial's kept checkpoint on its base model, as the sweep trained it."""
    from transformers import AutoTokenizer

    checkpoint = Path(study.best_trial.user_attrs["best_checkpoint"])
    model = load_trained(checkpoint, str(base), LABELS).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    with torch.no_grad():
        return torch.cat([model(**tokenizer(text, return_tensors="pt")).logits for text in TEXTS])


def logits_of(model: Any, directory: Path) -> torch.Tensor:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    with torch.no_grad():
        return torch.cat(
            [model.eval()(**tokenizer(text, return_tensors="pt")).logits for text in TEXTS]
        )


def test_the_study_has_both_methods_and_a_lora_best(lora_study: FinishedStudy) -> None:
    study = open_study(lora_study)
    methods = {method_of(t) for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert methods == {"full", "lora"}
    assert method_of(study.best_trial) == "lora"
    checkpoint = Path(study.best_trial.user_attrs["best_checkpoint"])
    assert (checkpoint / "adapter_config.json").is_file()
    assert not (checkpoint / "config.json").exists()


# Run in a fresh interpreter where `import peft` fails: the merged export must need none.
NO_PEFT = """
import json, sys
sys.modules["peft"] = None  # every `import peft` raises ImportError from here on
try:
    import peft
    peft_imported = True
except ImportError:
    peft_imported = False
import transformers
from transformers import pipeline
classify = pipeline("text-classification", model=sys.argv[1], top_k=None)
results = classify(json.loads(sys.argv[2]))
scores = [{entry["label"]: entry["score"] for entry in result} for result in results]
print(json.dumps({
    "peft_imported": peft_imported,
    "peft_available": transformers.utils.is_peft_available(),
    "scores": scores,
}))
"""


def test_merged_export_loads_in_a_pipeline_without_peft(
    lora_study: FinishedStudy, exports: Exports, tiny_model_dir: Path
) -> None:
    study = open_study(lora_study)
    names = {path.name for path in exports.merged.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= names
    assert "adapter_config.json" not in names and "adapter_model.safetensors" not in names
    config = json.loads((exports.merged / "config.json").read_text(encoding="utf-8"))
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert f"merged LoRA adapters onto {tiny_model_dir} (a plain transformers model)" in (
        exports.merged_line
    )
    assert f'transformers.pipeline("text-classification", model="{exports.merged}")' in (
        exports.merged_line
    )

    ran = subprocess.run(
        [sys.executable, "-c", NO_PEFT, str(exports.merged), json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result["peft_imported"] is False and result["peft_available"] is False
    expected = torch.softmax(reference_logits(study, tiny_model_dir), dim=-1)
    for scores, probabilities in zip(result["scores"], expected, strict=True):
        assert set(scores) == set(LABELS)
        assert max(scores, key=scores.get) == LABELS[int(probabilities.argmax())]
        for index, label in enumerate(LABELS):
            assert scores[label] == pytest.approx(float(probabilities[index]), abs=1e-5)


def test_adapter_export_holds_the_adapter_alone_and_peft_loads_it(
    lora_study: FinishedStudy, exports: Exports, tiny_model_dir: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    study = open_study(lora_study)
    names = {path.name for path in exports.adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= names
    assert "tokenizer.json" in names
    # No base weights (and no config.json, which would make transformers load it as a model).
    assert not names & {"config.json", "model.safetensors", "pytorch_model.bin"}
    adapter_bytes = (exports.adapter / "adapter_model.safetensors").stat().st_size
    merged_bytes = (exports.merged / "model.safetensors").stat().st_size
    assert adapter_bytes * 50 < merged_bytes
    config = json.loads((exports.adapter / "adapter_config.json").read_text(encoding="utf-8"))
    # Where this machine loaded the base; peft's per-load head names once each.
    assert config["base_model_name_or_path"] == str(tiny_model_dir)
    assert config["modules_to_save"].count("classifier") == 1
    assert f"the LoRA adapter only (base model {tiny_model_dir})" in exports.adapter_line
    assert "peft.PeftModel.from_pretrained(" in exports.adapter_line

    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=2)
    model = PeftModel.from_pretrained(base, str(exports.adapter))
    expected = reference_logits(study, tiny_model_dir)
    assert torch.allclose(logits_of(model, exports.adapter), expected, atol=1e-5)


def only_full_trial(lora_study: FinishedStudy, directory: Path) -> tuple[str, str]:
    """A copy of the study holding its full baseline alone (its checkpoint kept): a study
    whose best trial is a full fine-tune."""
    source = open_study(lora_study)
    url = f"sqlite:///{directory / 'full-best.db'}"
    study = optuna.create_study(study_name="full-best", storage=url, direction=source.direction)
    study.add_trials([t for t in source.get_trials() if method_of(t) == "full"])
    for key, value in source.user_attrs.items():
        study.set_user_attr(key, value)
    return "full-best", url


def test_adapter_flag_on_a_full_fine_tune_is_an_error_and_writes_nothing(
    lora_study: FinishedStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, url = only_full_trial(lora_study, tmp_path)
    target = tmp_path / "out"
    assert main(["export", name, "--storage", url, "--to", str(target), "--adapter"]) == 2
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert re.fullmatch(
        r"sweeper: error: --adapter: trial #0 of study 'full-best' is a full fine-tune \(its "
        r"checkpoint '.*checkpoint-\d+' holds every weight and no LoRA adapters\), so there is "
        r"no adapter to export; export it without --adapter",
        line,
    ), line
    assert not target.exists()
    study = load_existing_study(name, url)
    with pytest.raises(ExportError, match=r"^--adapter: trial #0 .* is a full fine-tune "):
        export_best(study, target, adapter=True)
    assert not target.exists()
    # Without --adapter, the full fine-tune exports as before.
    exported = export_best(study, target)
    assert exported.form == "full" and exported.what() == "the fine-tuned model"
    assert (target / "config.json").is_file() and not (target / "adapter_config.json").exists()


def test_force_between_the_two_forms_leaves_no_file_of_the_other(
    lora_study: FinishedStudy, tmp_path: Path
) -> None:
    """A stale config.json beside adapters (or adapter_config.json beside a model) would
    make transformers load both: --force removes the other form's model files."""
    study = open_study(lora_study)
    target = tmp_path / "both"
    assert export_best(study, target).form == "merged"
    assert (target / "config.json").is_file()
    assert export_best(study, target, force=True, adapter=True).form == "adapter"
    names = {path.name for path in target.iterdir()}
    assert "adapter_config.json" in names
    assert not names & {"config.json", "model.safetensors"}
    assert export_best(study, target, force=True).form == "merged"
    names = {path.name for path in target.iterdir()}
    assert "config.json" in names and "adapter_config.json" not in names
    assert "adapter_model.safetensors" not in names


def section(card: str, heading: str) -> str:
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", card, re.M | re.S)
    assert match, f"no '{heading}' section in the card"
    return match.group(1)


def metadata(card: ModelCard) -> ModelCardData:
    assert isinstance(card.data, ModelCardData)
    return card.data


def test_the_card_of_a_lora_export_names_its_adapters(
    lora_study: FinishedStudy, exports: Exports, tiny_model_dir: Path
) -> None:
    study = open_study(lora_study)
    best = study.best_trial
    attrs = best.user_attrs
    adapter_card = ModelCard.load(exports.adapter / "README.md")
    data = metadata(adapter_card)
    assert data.library_name == "peft"
    assert "lora" in (data.tags or []) and "sweeper" in (data.tags or [])
    assert data.base_model is None  # a local directory has no Hub id
    lora = section(adapter_card.text, "LoRA adapters")
    for line in (
        f"- Base model: `{tiny_model_dir}`",
        "- Method: lora",
        f"- r: {best.params['lora_r']}",
        f"- alpha: 16 (the update is scaled by alpha / r = {16 / best.params['lora_r']:g})",
        "- dropout: 0.1",
        "- Target modules: query, value",  # auto, resolved for BERT
        "- Bias: none",
        "- Modules trained in full: classifier",
        f"- Trainable parameters: {attrs['trainable_parameters']:,} of "
        f"{attrs['total_parameters']:,} (",
    ):
        assert line in lora, line
    assert 0 < attrs["trainable_parameters"] < attrs["total_parameters"] / 50
    hyper = section(adapter_card.text, "Training hyperparameters")
    assert (
        "- finetuning_method: lora\n" in hyper and f"- lora_r: {best.params['lora_r']}\n" in hyper
    )

    # The card's own loading recipe, run as written, gives the trial's logits.
    (snippet,) = re.findall(r"```python\n(.*?)```", lora, re.S)
    scope: dict[str, Any] = {}
    exec(snippet.replace("path/to/this/directory", str(exports.adapter)), scope)
    assert scope["model"].config.id2label == {0: "negative", 1: "positive"}
    expected = reference_logits(study, tiny_model_dir)
    assert torch.allclose(logits_of(scope["model"], exports.adapter), expected, atol=1e-5)

    merged_card = ModelCard.load(exports.merged / "README.md")
    assert metadata(merged_card).library_name == "transformers"
    assert "lora" not in (metadata(merged_card).tags or [])
    merged_lora = section(merged_card.text, "LoRA adapters")
    assert "merged into the base weights" in merged_lora and "```" not in merged_lora


def test_card_metadata_of_a_lora_trial_of_a_hub_model(lora_study: FinishedStudy) -> None:
    """With a Hub id as model.name, an adapter-only card is a peft model of that base."""
    source = open_study(lora_study)
    study = optuna.create_study(study_name="hub", direction=source.direction)
    study.add_trials(source.get_trials())
    for key, value in source.user_attrs.items():
        study.set_user_attr(key, value)
    config = copy.deepcopy(source.user_attrs["config"])
    config["model"] = {**config["model"], "name": "google-bert/bert-base-uncased"}
    study.set_user_attr("config", config)
    best = study.best_trial
    adapters = ExportedAdapters(
        adapter_only=True,
        base_model="google-bert/bert-base-uncased",
        target_modules=("query", "value"),
        kept_modules=("classifier",),
        label_names=tuple(LABELS),
    )
    data = metadata(ModelCard(render_card(study, best, adapters)))
    assert data.base_model == "google-bert/bert-base-uncased"
    assert data.library_name == "peft" and "lora" in (data.tags or [])
    # `sweeper card` (no export): what `sweeper export` writes by default, a plain model.
    plain = ModelCard(render_card(study))
    assert metadata(plain).library_name == "transformers"
    assert "`sweeper export` writes the adapters merged" in section(plain.text, "LoRA adapters")
    # A full fine-tune's card has no LoRA section and no method line.
    full = next(t for t in study.get_trials() if method_of(t) == "full")
    text = render_card(study, full)
    assert "LoRA adapters" not in text
    assert "finetuning_method" not in section(text, "Training hyperparameters")
    assert "- learning_rate: 1\n" in section(text, "Training hyperparameters")
    assert metadata(ModelCard(text)).library_name == "transformers"


class Tables(HTMLParser):
    """Every table of a page: rows of cell texts (a cell's title attribute kept too)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.titles: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
            self.titles += [value or "" for name, value in attrs if name == "title"]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables_of(page: str) -> Tables:
    parser = Tables()
    parser.feed(page)
    return parser


def table_with(tables: Tables, first_header: str, second_header: str) -> list[dict[str, str]]:
    (rows,) = [t for t in tables.tables if t and t[0][:2] == [first_header, second_header]]
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def parameters_text(trial: FrozenTrial) -> str:
    trainable, total = (
        trial.user_attrs["trainable_parameters"],
        trial.user_attrs["total_parameters"],
    )
    return f"{trainable:,} of {total:,} ({trainable / total:.2%})".replace("100.00%", "100%")


def test_report_shows_each_trials_parameters_and_checkpoint_and_the_methods(
    lora_study: FinishedStudy,
) -> None:
    study = open_study(lora_study)
    page = render_report(study)
    tables = tables_of(page)
    rows = {row["trial"]: row for row in table_with(tables, "", "trial")}
    trials = {f"#{t.number}": t for t in study.get_trials()}
    shown = [trials[number] for number in rows]
    assert {method_of(t) for t in shown} == {"full", "lora"}
    for number, row in rows.items():
        trial = trials[number]
        assert row["method"] == method_of(trial)
        assert row["trainable parameters"] == parameters_text(trial)
        size = trial.user_attrs["checkpoint_bytes"]
        assert row["kept checkpoint"] == bytes_text(size) and f"{size:,} bytes" in tables.titles
    full = next(t for t in shown if method_of(t) == "full")
    lora = next(t for t in shown if method_of(t) == "lora")
    assert lora.user_attrs["checkpoint_bytes"] * 5 < full.user_attrs["checkpoint_bytes"]
    assert rows[f"#{full.number}"]["trainable parameters"].endswith("(100%)")

    methods = {row["method"]: row for row in table_with(tables, "method", "trials")}
    assert list(methods) == ["full", "lora"]
    for method, row in methods.items():
        group = [t for t in study.get_trials() if method_of(t) == method]
        complete = [t for t in group if t.state == TrialState.COMPLETE]
        assert row["trials"].startswith(f"{len(complete)} complete, ")
        best = min(complete, key=lambda t: float(t.value or 0.0))
        assert row["best trial"] == f"#{best.number}"
        assert row["trainable parameters (best trial)"] == parameters_text(best)
    assert "evaluated on one grid (an evaluation every 3 steps)" in page

    figure = figures(study)["methods"]
    by_method = {trace.name: sorted(trace.y) for trace in figure.data}
    for method in ("full", "lora"):
        values = [
            float(t.value or 0.0)
            for t in study.get_trials(states=(TrialState.COMPLETE,))
            if method_of(t) == method
        ]
        assert by_method[method] == pytest.approx(sorted(values))
    assert 'id="figure-methods"' in page


def test_a_full_only_report_gains_the_cost_columns_only(finished_study: FinishedStudy) -> None:
    study = load_existing_study(finished_study.name, finished_study.storage_url)
    page = render_report(study)
    tables = tables_of(page)
    header = next(t[0] for t in tables.tables if t and t[0][:2] == ["", "trial"])
    assert "method" not in header
    assert header[header.index("trainable parameters") + 1] == "kept checkpoint"
    rows = table_with(tables, "", "trial")
    for row in rows:
        assert row["trainable parameters"].endswith("(100%)")
        assert (
            re.fullmatch(r"[\d.]+ (kB|MB)", row["kept checkpoint"]) or row["kept checkpoint"] == "-"
        )
    best = next(row for row in rows if row[""].startswith("best"))
    size = study.best_trial.user_attrs["checkpoint_bytes"]
    assert best["kept checkpoint"] == bytes_text(size) and size > 1_000_000
    assert "Fine-tuning methods" not in page and "methods" not in figures(study)
