"""Checkpoints in an object store (checkpoint_root: s3://...), against a real S3 server
(SeaweedFS, tests/support/s3_server.py): a retry resumes on any machine, an upload is complete or
invisible, a failing store never stops training, and the store stays bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from optuna.trial import TrialState

from sweeper.attributes import (
    BEST_CHECKPOINT_ATTR,
    CHECKPOINT_STORE_ATTR,
    CHECKPOINT_STORE_ERROR_ATTR,
    RESUMED_FROM_STEP_ATTR,
)
from sweeper.launch.cli import main
from sweeper.study.sweep import load_existing_study
from sweeper.trial import callbacks, checkpoints
from sweeper.trial.checkpoints import (
    MANIFEST_SUFFIX,
    BackgroundUploader,
    TrialStore,
    retry_store_call,
    store_filesystem,
)
from tests.support.workers import LONG as WORKER_LONG
from tests.support.workers import start_sweeper

# The workers tests' long trials (120 steps, a checkpoint every 10), each worker keeping its
# cache in its own directory (output_dir relative).
LONG = {**WORKER_LONG, "output_dir": "runs"}


def bucket_url(s3_server: Any, name: str) -> str:
    from tests.support.s3_server import BUCKET

    return f"s3://{BUCKET}/{name}-{uuid.uuid4().hex[:8]}"


def manifests_under(url: str) -> list[str]:
    fs = store_filesystem(url)
    root = url.split("://", 1)[1]
    try:
        return [str(p) for p in fs.find(root) if str(p).endswith(MANIFEST_SUFFIX)]
    except FileNotFoundError:
        return []


def start_worker(cwd: Path, study: str, storage: str, log: Path) -> subprocess.Popen[bytes]:
    """`sweeper worker` in its own directory (no study file there: by name, from storage)."""
    return start_sweeper(["worker", study], log, cwd=cwd, storage=storage)


def wait_for(condition: Callable[[], bool], what: str, process: Any, log: Path) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        assert process.poll() is None, f"the worker exited before {what}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {what} after 300 s:\n{log.read_text()}"
        time.sleep(0.1)


def test_a_store_that_cannot_be_used_fails_the_preflight_check(
    write_study: Callable[..., Path],
    s3_environment: dict[str, str],
    s3_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_study("preflight", checkpoint_root="s3://no-such-bucket/prefix")
    started = time.monotonic()
    assert main(["sweep", str(path), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert (
        "checkpoint_root='s3://no-such-bucket/prefix': the bucket 'no-such-bucket' does not exist"
        in error
    )
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    assert main(["check", str(path), "--set", f"checkpoint_root={bucket_url(s3_server, 'p')}"]) == 2
    error = capsys.readouterr().err
    assert "cannot be written, read and deleted" in error and "credentials" in error
    assert time.monotonic() - started < 60
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("stop", "method"), [("SIGTERM", "full"), ("SIGKILL", "full"), ("SIGKILL", "lora")]
)
def test_a_retry_resumes_from_the_store_on_another_machine(
    write_study: Callable[..., Path],
    postgres_url: str,
    s3_environment: dict[str, str],
    s3_server: Any,
    tmp_path: Path,
    stop: str,
    method: str,
    monkeypatch: pytest.MonkeyPatch,
    small_csv: Path,
) -> None:
    """Two workers, each in its own directory with its own empty cache, one PostgreSQL
    study, checkpoints in S3. The first is stopped mid-trial (SIGTERM as a preemption, or
    SIGKILL after an upload); the second resumes the retry from the stored step. Then export
    and confirm work from a third, empty directory. A LoRA trial's checkpoints (adapters and
    head only) go the same way, its export merged onto the base model."""
    name = f"store-{stop.lower()}-{method}-{uuid.uuid4().hex[:6]}"
    store = bucket_url(s3_server, "ckpt")
    # The data comes from the store too: no machine has a disk in common with another.
    data_url = f"{bucket_url(s3_server, 'data')}/reviews.csv"
    store_filesystem(data_url).put_file(str(small_csv), data_url.split("://", 1)[1])
    path = write_study(name, **LONG, checkpoint_root=store, model={"method": method})
    document = yaml.safe_load(path.read_text())
    document["dataset"]["path"] = data_url
    path.write_text(yaml.safe_dump(document))
    monkeypatch.chdir(tmp_path)  # where `create` writes its runs/ (output_dir is relative)
    assert main(["create", str(path), "--storage", postgres_url]) == 0
    machines = [tmp_path / f"machine-{index}" for index in range(3)]
    for machine in machines:
        machine.mkdir()
    trial_url = f"{store}/{name}/trial-0"

    first = start_worker(machines[0], name, postgres_url, tmp_path / "first.log")
    wait_for(lambda: len(manifests_under(trial_url)) >= 1, "upload", first, tmp_path / "first.log")
    stored_step = max(int(m["step"]) for m in TrialStore(trial_url).manifests())
    first.send_signal(getattr(signal, stop))
    first.wait(timeout=120)
    if stop == "SIGTERM":  # a clean stop: the newest checkpoint uploaded before it exits
        assert first.returncode == 143, (tmp_path / "first.log").read_text()
        stored_step = max(int(m["step"]) for m in TrialStore(trial_url).manifests())

    second = start_worker(machines[1], name, postgres_url, tmp_path / "second.log")
    assert second.wait(timeout=400) == 0, (tmp_path / "second.log").read_text()

    study = load_existing_study(name, postgres_url)
    trials = study.get_trials()
    states = [trial.state for trial in trials]
    assert states.count(TrialState.COMPLETE) == 1 and TrialState.RUNNING not in states, states
    retry = next(trial for trial in trials if trial.state == TrialState.COMPLETE)
    assert retry.system_attrs["failed_trial"] == 0
    assert retry.user_attrs[RESUMED_FROM_STEP_ATTR] >= stored_step > 0
    assert retry.user_attrs[CHECKPOINT_STORE_ATTR] == trial_url
    assert study.user_attrs["config"]["dataset"]["path"] == data_url
    assert str(retry.user_attrs[BEST_CHECKPOINT_ATTR]).startswith(f"{trial_url}/checkpoint-")
    # Bounded: the finished trial keeps its best checkpoint only.
    assert len(manifests_under(trial_url)) == 1
    kept = checkpoints.fetch_checkpoint(str(retry.user_attrs[BEST_CHECKPOINT_ATTR]), tmp_path)
    files = {path.name for path in kept.iterdir()}
    weights = {"adapter_model.safetensors"} if method == "lora" else {"model.safetensors"}
    assert weights <= files and not (files & {"model.safetensors"} - weights)

    if stop == "SIGTERM":
        return  # export and confirm from a third machine: once is enough (below, SIGKILL)
    third = machines[2]
    env = {**os.environ, "SWEEPER_STORAGE": postgres_url}
    exported = subprocess.run(
        [sys.executable, "-m", "sweeper", "export", name, "--to", "model"],
        cwd=third,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert len(json.loads((third / "model" / "config.json").read_text())["id2label"]) == 2
    confirmed = subprocess.run(
        [
            sys.executable,
            "-m",
            "sweeper",
            "confirm",
            name,
            "--top",
            "1",
            "--seeds",
            "2",
            "--no-progress",
        ],
        cwd=third,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    assert "(winner)" in confirmed.stdout
    # The re-runs' checkpoints went to the store as well, and only the exported one stays.
    assert len(manifests_under(f"{store}/{name}/confirm")) == 1


def fake_checkpoint(directory: Path, step: int) -> Path:
    checkpoint = directory / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (checkpoint / "model.safetensors").write_bytes(os.urandom(4096))
    return checkpoint


def test_a_partial_or_corrupt_upload_is_never_resumed_from(
    s3_environment: dict[str, str], s3_server: Any, tmp_path: Path
) -> None:
    """A kill during an upload leaves files without a manifest (invisible); a file that
    differs from its manifest is caught on download: the resume falls back, and says so."""
    url = bucket_url(s3_server, "partial")
    store = TrialStore(url)
    for step in (10, 20):
        store.upload(fake_checkpoint(tmp_path, step), step)
    # Step 30: cut short by a kill, before its manifest.
    store.fs.pipe_file(f"{store.root}/checkpoint-30/model.safetensors", b"half")
    # Step 20: a file changed after its manifest was written.
    store.fs.pipe_file(f"{store.root}/checkpoint-20/model.safetensors", b"corrupt")
    assert [m["step"] for m in store.manifests()] == [20, 10]
    found = store.newest_resumable(tmp_path / "cache")
    assert found is not None
    local, step, passed_over = found
    assert step == 10 and (local / "trainer_state.json").is_file()
    assert passed_over == ["step 20: model.safetensors differs from its manifest"]
    assert not (tmp_path / "cache" / "checkpoint-20").exists()
    store.keep_only({10})
    assert [m["step"] for m in store.manifests()] == [10]
    # No object left of the cut-short upload (SeaweedFS may keep the empty folder entry).
    store.fs.invalidate_cache()
    assert [p for p in store.fs.find(store.root) if "/checkpoint-30/" in p] == []
    store.remove()
    assert store.manifests() == []


@pytest.mark.parametrize(
    ("failures", "delays", "outcome"),
    [
        (0, (), "done"),  # one try, fine
        (2, (0.0, 0.0), "done"),  # failed twice, the third try succeeds
        (3, (0.0, 0.0), "raised: try 3"),  # three tries, all failed: the last error
        (1, (), "raised: try 1"),  # no retries after a give-up
    ],
)
def test_a_store_call_is_tried_again_after_each_delay(
    failures: int, delays: tuple[float, ...], outcome: str
) -> None:
    tries: list[int] = []

    def call() -> str:
        tries.append(1)
        if len(tries) <= failures:
            raise ConnectionError(f"try {len(tries)}")
        return "done"

    try:
        result = retry_store_call(call, delays)
    except ConnectionError as error:
        result = f"raised: {error}"
    assert result == outcome
    assert len(tries) == min(failures + 1, len(delays) + 1)


def test_an_uploader_that_gave_up_recovers_when_the_store_answers_again(
    s3_environment: dict[str, str],
    s3_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Down past its retries: the trial is marked not resumable and later saves get one
    try each; the first upload after the store is back stores it and clears the mark."""
    monkeypatch.setattr(checkpoints, "STORE_RETRY_DELAYS_SECONDS", (0.1, 0.1))
    logged: list[str] = []
    store = TrialStore(bucket_url(s3_server, "recover"))
    uploader = BackgroundUploader(store, tmp_path / "staging", log=logged.append)
    try:
        s3_server.stop()
        try:
            uploader.submit(fake_checkpoint(tmp_path, 10), 10, 10)
            assert uploader.flush(timeout=120)
            assert uploader.error is not None
            assert "uploading step 10" in uploader.error
            assert "failed 3 times" in uploader.error
            assert "cannot resume from the store" in uploader.error
        finally:
            s3_server.start()
        uploader.submit(fake_checkpoint(tmp_path, 20), 20, 10)
        assert uploader.flush(timeout=120)
        assert uploader.error is None, logged
        assert uploader.uploaded == [20]
        assert "answers again: step 20 is stored" in logged[-1]
        assert [m["step"] for m in store.manifests()] == [20]
    finally:
        uploader.close()
        store.remove()


@pytest.mark.parametrize(
    ("uploaded_before", "store_up_at_end", "expected_error"),
    [
        # Collapsed away while it was the best: sent at the end, named by its URL.
        (False, True, None),
        (
            True,
            False,
            r"failed at the trial's end \(.+\); its best checkpoint \(step 10\) was "
            r"stored before, but best_checkpoint names this machine's copy",
        ),
        (
            False,
            False,
            r"failed at the trial's end \(.+\); its best checkpoint \(step 10\) was "
            r"not stored, and best_checkpoint names this machine's copy",
        ),
    ],
)
def test_a_completed_trial_stores_its_best_checkpoint_or_says_why_not(
    s3_environment: dict[str, str],
    s3_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    uploaded_before: bool,
    store_up_at_end: bool,
    expected_error: str | None,
) -> None:
    monkeypatch.setattr(checkpoints, "STORE_RETRY_DELAYS_SECONDS", (0.1,))
    store = TrialStore(bucket_url(s3_server, "end"))
    uploader = BackgroundUploader(store, tmp_path / "staging", log=lambda line: None)
    best = fake_checkpoint(tmp_path / "output", 10)
    if uploaded_before:
        uploader.submit(best, 10, 10)
        assert uploader.flush(timeout=60) and uploader.uploaded == [10]
    outcome = callbacks.TrialOutcome(best_checkpoint=str(best))
    if not store_up_at_end:
        s3_server.stop()
    try:
        callbacks.finish_uploads(uploader, outcome, best.parent, completed=True)
    finally:
        if not store_up_at_end:
            s3_server.start()
    if expected_error is None:
        assert outcome.store_error is None
        assert outcome.best_checkpoint == store.checkpoint_url(10)
        assert [m["step"] for m in store.manifests()] == [10]
    else:
        assert outcome.store_error is not None
        assert re.search(expected_error, outcome.store_error), outcome.store_error
        assert outcome.best_checkpoint == str(best)
    store.remove()


@pytest.mark.timeout(600)
def test_a_store_that_goes_away_loses_nothing_in_the_study(
    write_study: Callable[..., Path],
    s3_environment: dict[str, str],
    s3_server: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The S3 server stopped mid-trial and started again: uploads are retried with backoff
    and the trial ends with its best checkpoint stored. Stopped for good: the trial still
    completes, recorded as no longer resumable, and `show` says so."""
    store = bucket_url(s3_server, "flaky")
    name = f"flaky-{uuid.uuid4().hex[:6]}"
    url = f"sqlite:///{tmp_path / 'study.db'}"
    # A checkpoint at every evaluation (not only at a new best), so uploads are in flight
    # while the server is down, whichever evaluations improve.
    path = write_study(
        name,
        **{**LONG, "output_dir": str(tmp_path / "runs")},
        checkpoint_root=store,
        resume_checkpoint_minutes=0,
    )
    log = tmp_path / "worker.log"
    worker = start_sweeper(["sweep", str(path), "--storage", url], log)
    trial_url = f"{store}/{name}/trial-0"
    wait_for(lambda: len(manifests_under(trial_url)) >= 1, "upload", worker, log)
    s3_server.stop()
    time.sleep(2)
    s3_server.start()
    assert worker.wait(timeout=400) == 0, log.read_text()
    trial = load_existing_study(name, url).get_trials()[0]
    assert trial.state == TrialState.COMPLETE
    assert CHECKPOINT_STORE_ERROR_ATTR not in trial.user_attrs, (
        f"{trial.user_attrs[CHECKPOINT_STORE_ERROR_ATTR]}\n{log.read_text()}"
    )
    assert len(manifests_under(trial_url)) == 1

    # Gone for good, mid-trial: training goes on without resumability.
    again = f"{name}-2"
    worker = start_sweeper(["sweep", str(path), "--storage", url, "--set", f"name={again}"], log)
    wait_for(lambda: len(manifests_under(f"{store}/{again}/trial-0")) >= 1, "upload", worker, log)
    s3_server.stop()
    try:
        assert worker.wait(timeout=400) == 0, log.read_text()
    finally:
        s3_server.start()
    trial = load_existing_study(again, url).get_trials()[0]
    assert trial.state == TrialState.COMPLETE
    assert "cannot resume from the store" in trial.user_attrs[CHECKPOINT_STORE_ERROR_ATTR]
    capsys.readouterr()
    assert main(["show", again, "--storage", url]) == 0
    assert "not resumable:" in capsys.readouterr().out


def test_a_second_s3_server_runs_beside_this_sessions_on_its_own_ports(
    s3_server: Any, tmp_path: Path
) -> None:
    """As a second test session on the machine would: another server starts beside this
    session's, with SeaweedFS's default S3 port (8333) held by a listener as a user's own
    endpoint would; each serves its own bucket on its own ports."""
    import socket

    import s3fs

    from tests.support.s3_server import ACCESS_KEY, BUCKET, SECRET_KEY, S3Server

    def client(server: S3Server) -> s3fs.S3FileSystem:
        return s3fs.S3FileSystem(
            key=ACCESS_KEY,
            secret=SECRET_KEY,
            endpoint_url=server.endpoint,
            skip_instance_cache=True,
        )

    with socket.socket() as held:
        try:
            held.bind(("127.0.0.1", 8333))
            held.listen()
        except OSError:
            pass  # something already listens there: the same situation
        second = S3Server(tmp_path / "second", s3_server.binary)
        second.directory.mkdir()
        second.start()
        try:
            assert set(second.ports.values()).isdisjoint(s3_server.ports.values())
            assert 8333 not in second.ports.values()
            key = f"{BUCKET}/only-on-the-second-{uuid.uuid4().hex[:8]}"
            client(second).pipe(key, b"second")
            assert client(second).cat(key) == b"second"
            assert not client(s3_server).exists(key)
        finally:
            second.stop()
