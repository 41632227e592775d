"""A trial's checkpoints on disk: where they live, which one a retry resumes from, and their
removal. :func:`remove_checkpoints` is the one place sweeper deletes a checkpoint (the
finished trial's stale ones, the study's unneeded trials, a confirmation's re-runs, a new
trial's leftovers): a checkpoint store other than a local disk changes this module only.

A trial's checkpoints live in ``<checkpoint_dir>/trial-<N>``, N the number of the first
trial of its retry chain, so a retry finds its predecessor's; the Trainer writes
``checkpoint-<step>`` folders there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sweeper.errors import CheckpointStoreError, CheckpointStoreReadError
from sweeper.trial.models import ADAPTER_CONFIG_FILE, MODEL_CONFIG_FILE
from sweeper.trial.stores import (
    STORE_READ_TIMEOUT_SECONDS,
    is_store_url,
    store_filesystem,
    strip_protocol,
)

CHECKPOINT_PREFIX = "checkpoint-"
# Written last by the Trainer: a checkpoint without it was cut short.
TRAINER_STATE_FILE = "trainer_state.json"


def trial_checkpoint_dir(checkpoint_dir: Path, first_trial: int) -> Path:
    """Where the retry chain that began with trial ``first_trial`` keeps its checkpoints."""
    return checkpoint_dir / f"trial-{first_trial}"


def last_checkpoint(output_dir: Path) -> tuple[Path, int] | None:
    """The newest complete checkpoint under ``output_dir`` and its step. The Trainer writes
    ``trainer_state.json`` last, so a checkpoint cut short by a kill has none and is skipped."""
    found: list[tuple[int, Path]] = []
    for path in output_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name.removeprefix(CHECKPOINT_PREFIX)
        if suffix.isdigit() and (path / TRAINER_STATE_FILE).is_file():
            found.append((int(suffix), path))
    if not found:
        return None
    newest_step, newest = max(found)
    return newest, newest_step


def remove_checkpoints(directory: Path | str, keep: Path | str | None = None) -> None:
    """Delete a trial's checkpoint directory whole, or with ``keep`` every checkpoint in it
    but that one; a directory or a store URL alike. A directory that is gone already is not
    an error (another worker, or a previous clean-up, got there first)."""
    if is_store_url(directory):
        try:
            store = TrialStore(str(directory))
            if keep is None:
                store.remove()
            else:
                store.keep_only({int(str(keep).rstrip("/").rsplit(CHECKPOINT_PREFIX, 1)[1])})
        except Exception as error:  # a clean-up never stops a worker; the next one retries
            print(f"[sweeper] could not delete checkpoints under {directory}: {error}", flush=True)
        return
    directory = Path(directory)
    if keep is None:
        shutil.rmtree(directory, ignore_errors=True)
        return
    if not directory.is_dir():
        return
    kept = Path(keep).resolve()
    for checkpoint in directory.glob(f"{CHECKPOINT_PREFIX}*"):
        if checkpoint.resolve() != kept:
            shutil.rmtree(checkpoint, ignore_errors=True)


# --- an object store: s3://bucket/prefix, gs://bucket/prefix (fsspec) ---------------------------
#
# Layout under a trial's prefix (<checkpoint_root>/<study>/trial-<N>):
#   checkpoint-<step>/<files>            the Trainer's checkpoint folder, uploaded file by file
#   checkpoint-<step>.manifest.json      written last: step, files, sizes, sha256
# A checkpoint without its manifest is invisible: a resume reads only manifests, and verifies
# every file it downloads against one. Superseded checkpoints lose their manifest first, then
# their files, so a reader never finds a manifest whose files are going.

MANIFEST_SUFFIX = ".manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_store(url: str) -> None:
    """Write, read back and delete a small object under ``url``: what every trial will do.
    Raises CheckpointStoreError naming the URL and the store's own reason."""
    probe = f"{strip_protocol(url)}/.sweeper-preflight-{uuid.uuid4().hex}"
    bucket = strip_protocol(url).split("/", 1)[0]
    try:
        fs = store_filesystem(url)
        # Before writing: some S3-compatible servers create a missing bucket on a first write.
        try:
            fs.info(bucket)
        except PermissionError:
            pass  # a policy scoped to the prefix may forbid HeadBucket: the probe says more
        except FileNotFoundError:
            raise CheckpointStoreError(
                f"the bucket {bucket!r} does not exist (or these credentials cannot see it); "
                "create it, or point checkpoint_root at one that does"
            ) from None
        fs.pipe_file(probe, b"sweeper")
        if fs.cat_file(probe) != b"sweeper":
            raise CheckpointStoreError("what was read back differs from what was written")
        # A resume lists the manifests, and pruning lists what to delete.
        fs.ls(probe.rsplit("/", 1)[0], detail=False, refresh=True)
        fs.rm_file(probe)
    except CheckpointStoreError as error:
        raise CheckpointStoreError(f"checkpoint_root={url!r}: {error}") from None
    except Exception as error:  # botocore, gcsfs and aiohttp raise their own families
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        raise CheckpointStoreError(
            f"checkpoint_root={url!r} cannot be written, read and deleted ({reason}); check "
            "the bucket, the endpoint (AWS_ENDPOINT_URL for S3, STORAGE_EMULATOR_HOST for a "
            "GCS emulator) and the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a "
            "profile, or GOOGLE_APPLICATION_CREDENTIALS)"
        ) from None


class TrialStore:
    """One retry chain's checkpoints under ``url`` (``<checkpoint_root>/<study>/trial-<N>``)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.root = strip_protocol(self.url)
        self.fs = store_filesystem(self.url)

    def checkpoint_url(self, step: int) -> str:
        return f"{self.url}/{CHECKPOINT_PREFIX}{step}"

    def manifests(self) -> list[dict[str, Any]]:
        """The complete checkpoints' manifests, newest step first."""
        try:
            names = self.fs.ls(self.root, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if str(name).endswith(MANIFEST_SUFFIX):
                try:
                    found.append(json.loads(self.fs.cat_file(name)))
                except (FileNotFoundError, ValueError):
                    continue  # deleted meanwhile, or not ours
        return sorted(found, key=lambda manifest: -int(manifest.get("step", -1)))

    def upload(self, local: Path, step: int) -> int:
        """Every file of the local checkpoint ``local``, then its manifest; returns the bytes."""
        files: list[dict[str, Any]] = []
        prefix = f"{self.root}/{CHECKPOINT_PREFIX}{step}"
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            relative = path.relative_to(local).as_posix()
            self.fs.put_file(str(path), f"{prefix}/{relative}")
            files.append({"path": relative, "size": path.stat().st_size, "sha256": _sha256(path)})
        manifest = {"step": step, "files": files, "written": time.time()}
        self.fs.pipe_file(f"{prefix}{MANIFEST_SUFFIX}", json.dumps(manifest).encode())
        return sum(int(item["size"]) for item in files)  # what was uploaded, in bytes

    def download(self, manifest: dict[str, Any], target: Path) -> Path:
        """The checkpoint of ``manifest`` into ``target``, every file checked against it;
        CheckpointStoreError (and nothing left in ``target``) when one is missing or differs."""
        step = int(manifest["step"])
        prefix = f"{self.root}/{CHECKPOINT_PREFIX}{step}"
        staging = target.with_name(f".{target.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            for item in manifest["files"]:
                local = staging / item["path"]
                local.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self.fs.get_file(f"{prefix}/{item['path']}", str(local))
                except FileNotFoundError:
                    raise CheckpointStoreError(f"{item['path']} is missing") from None
                except Exception as error:  # the store's client raises its own families
                    raise CheckpointStoreReadError(
                        f"{item['path']} could not be read ({type(error).__name__}: {error})"
                    ) from None
                if local.stat().st_size != item["size"] or _sha256(local) != item["sha256"]:
                    raise CheckpointStoreError(f"{item['path']} differs from its manifest")
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            return target
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def newest_resumable(self, cache: Path) -> tuple[Path, int, list[str]] | None:
        """The newest checkpoint that downloads whole into ``cache`` (its folder, its step),
        and why newer ones were passed over; None when there is none."""
        passed_over = []
        for manifest in self.manifests():
            step = int(manifest["step"])
            try:
                local = self.download(manifest, cache / f"{CHECKPOINT_PREFIX}{step}")
            except CheckpointStoreReadError:
                raise  # the store failed, not the checkpoint: nothing to pass over
            except CheckpointStoreError as error:
                passed_over.append(f"step {step}: {error}")
                continue
            return local, step, passed_over
        return None

    def restore(self, cache: Path) -> tuple[Path, int, list[str]] | None:
        """What a retry on this machine resumes from: :meth:`newest_resumable`, plus the
        trial's best checkpoint when it is another (the Trainer keeps comparing against it),
        with the resumed state's ``best_model_checkpoint`` pointed at this machine's copy."""
        found = self.newest_resumable(cache)
        if found is None:
            return None
        local, step, passed_over = found
        state_file = local / TRAINER_STATE_FILE
        state = json.loads(state_file.read_text())
        best = str(state.get("best_model_checkpoint") or "").rstrip("/")
        best_suffix = best.rsplit(CHECKPOINT_PREFIX, 1)[-1] if best else ""
        if best_suffix.isdigit():
            best_step = int(best_suffix)
            best_local = cache / f"{CHECKPOINT_PREFIX}{best_step}"
            manifest = next((m for m in self.manifests() if int(m["step"]) == best_step), None)
            try:
                if best_step != step and manifest is not None:
                    self.download(manifest, best_local)
                state["best_model_checkpoint"] = (
                    str(best_local) if best_step == step or manifest is not None else None
                )
            except CheckpointStoreError as error:
                passed_over.append(f"best step {best_step}: {error}")
                state["best_model_checkpoint"] = None
            state_file.write_text(json.dumps(state, indent=2))
        return local, step, passed_over

    def keep_only(self, steps: set[int]) -> None:
        """Delete every checkpoint but those of ``steps``: its manifest first, then its files."""
        try:
            names = self.fs.ls(self.root, detail=False, refresh=True)
        except FileNotFoundError:
            return
        for name in names:
            base = str(name).rsplit("/", 1)[-1]
            if not base.startswith(CHECKPOINT_PREFIX):
                continue
            suffix = base.removeprefix(CHECKPOINT_PREFIX).removesuffix(MANIFEST_SUFFIX)
            if suffix.isdigit() and int(suffix) not in steps and base.endswith(MANIFEST_SUFFIX):
                self.fs.rm_file(name)
        for name in self.fs.ls(self.root, detail=False, refresh=True):
            base = str(name).rsplit("/", 1)[-1]
            suffix = base.removeprefix(CHECKPOINT_PREFIX)
            if base.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() and int(suffix) not in steps:
                self.fs.rm(name, recursive=True)

    def remove(self) -> None:
        """The whole retry chain's prefix, manifests first."""
        self.keep_only(set())
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.root, recursive=True)


def holds_model(checkpoint: Path | None) -> bool:
    """A kept checkpoint holds a model: a full one's config.json, or a LoRA one's adapter
    config."""
    files = (MODEL_CONFIG_FILE, ADAPTER_CONFIG_FILE)
    return checkpoint is not None and any((checkpoint / f).is_file() for f in files)


def directory_bytes(directory: Path | None) -> int | None:
    """The bytes of the files under ``directory`` (None when there is no such folder)."""
    if directory is None or not directory.is_dir():
        return None
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def fetch_checkpoint(location: str | Path, cache: Path) -> Path:
    """A local folder holding the checkpoint at ``location``: a local path as it is, a store
    URL (``.../trial-<N>/checkpoint-<step>``) downloaded into ``cache`` and verified."""
    if not is_store_url(location):
        return Path(location)
    url = str(location).rstrip("/")
    trial_url, _, name = url.rpartition("/")
    step = int(name.removeprefix(CHECKPOINT_PREFIX))
    store = TrialStore(trial_url)
    for manifest in store.manifests():
        if int(manifest["step"]) == step:
            target = cache / hashlib.sha256(url.encode()).hexdigest()[:16] / name
            if holds_model(target):
                return target
            return store.download(manifest, target)
    raise CheckpointStoreError(f"{url} has no complete checkpoint (no manifest for step {step})")


# Waits between the tries of one store call (an upload; a trial's end: listing, storing the
# best, clean-up; a retry's read of the store): about half a minute in all, so a store that
# restarts or fails over costs no checkpoint; after the last, the trial goes on without it.
STORE_RETRY_DELAYS_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0)

T = TypeVar("T")


def retry_store_call(
    call: Callable[[], T],
    delays: tuple[float, ...] = STORE_RETRY_DELAYS_SECONDS,
    give_up: Callable[[], bool] = lambda: False,
) -> T:
    """``call()``, tried again after each of ``delays`` while the store's client raises (its
    own families: botocore, gcsfs and aiohttp errors); the last error is raised, and so is
    the current one as soon as ``give_up()`` is true."""
    for delay in (*delays, None):
        try:
            return call()
        except Exception:
            if delay is None or give_up():
                raise
            time.sleep(delay)
    raise AssertionError("unreachable: the last try raises or returns")


@dataclass(frozen=True)
class ResumePoint:
    """Where a retry resumes: a checkpoint and its step (None: it starts over), and what was
    passed over on the way, or why this machine's copy was used (None: nothing)."""

    checkpoint: tuple[Path, int] | None
    passed_over: str | None = None


def resume_point(
    store_url: str, output_dir: Path, local: tuple[Path, int] | None, trial_name: str
) -> ResumePoint:
    """A retry on any machine: the store's newest complete checkpoint (downloaded and
    verified into ``output_dir``) unless this machine holds one as new (``local``).
    Raises CheckpointStoreError when the store cannot be read and this machine has no copy:
    not a fresh start, as its first upload would prune the stored progress."""

    def read_store() -> tuple[list[dict[str, Any]], tuple[Path, int, list[str]] | None]:
        store = TrialStore(store_url)
        manifests = store.manifests()
        if local is not None and all(int(m["step"]) <= local[1] for m in manifests):
            return manifests, (local[0], local[1], [])
        return manifests, store.restore(output_dir)

    try:
        # With a copy on this machine, one try: a failing store is passed over for it.
        delays = () if local is not None else STORE_RETRY_DELAYS_SECONDS
        manifests, found = retry_store_call(read_store, delays)
    except Exception as error:  # the store's client raises its own families
        if local is not None:
            return ResumePoint(local, f"the store failed ({error}); this machine's copy used")
        raise CheckpointStoreError(
            f"{store_url} could not be read to resume {trial_name} ({error}); nothing was trained"
        ) from None
    passed_over = found[2] if found else [f"step {m['step']}" for m in manifests]
    if found is None:
        passed_over.append("no complete checkpoint left: started over")
    return ResumePoint((found[0], found[1]) if found else local, "; ".join(passed_over) or None)


def _snapshot(checkpoint: Path, target: Path) -> None:
    """Hard links to ``checkpoint``'s files: instant, and unaffected when the Trainer's
    rotation deletes the folder while the upload still reads them (a copy where the
    filesystem has no hard links)."""
    shutil.rmtree(target, ignore_errors=True)
    for path in checkpoint.rglob("*"):
        if path.is_file():
            linked = target / path.relative_to(checkpoint)
            linked.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, linked)
            except OSError:
                shutil.copy2(path, linked)


class BackgroundUploader:
    """Uploads a trial's newest complete checkpoint to its store while training goes on.

    :meth:`submit` (at every save, on the training thread) only snapshots the checkpoint;
    one thread uploads. Pending uploads collapse to the newest, so a slow link never queues
    stale ones. After each upload the store keeps that checkpoint and the best one, nothing
    else. An upload that keeps failing is given up after its retries: training goes on,
    and :attr:`error` says the trial is no longer resumable from the store. Later uploads
    get one try each (a store that is down would cost every save its retries); the first
    that succeeds clears :attr:`error`, since the trial can resume from the store again."""

    def __init__(
        self,
        store: TrialStore,
        staging: Path,
        log: Callable[[str], None] = print,
        prune: bool = True,
    ):
        self.store, self.staging, self.log = store, staging, log
        # Snapshots a killed worker left behind hold the bytes of deleted checkpoints.
        shutil.rmtree(staging, ignore_errors=True)
        # False under keep_all_checkpoints: every uploaded checkpoint stays in the store.
        self.prune = prune
        self.error: str | None = None
        self.uploaded: list[int] = []  # steps, in the order their manifests were written
        self.upload_seconds: list[float] = []
        self.submit_seconds: list[float] = []  # what each save's hand-over blocked training
        self.bytes_uploaded = 0
        self._pending: tuple[Path, int, int | None] | None = None
        self._busy = False
        self._closed = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="checkpoint-upload", daemon=True)
        self._thread.start()

    def submit(self, checkpoint: Path, step: int, best_step: int | None) -> None:
        started = time.perf_counter()
        snapshot = self.staging / f"{CHECKPOINT_PREFIX}{step}"
        _snapshot(checkpoint, snapshot)
        with self._condition:
            if self._pending is not None and self._pending[0] != snapshot:
                shutil.rmtree(self._pending[0], ignore_errors=True)  # superseded, never sent
            self._pending = (snapshot, step, best_step)
            self._condition.notify_all()
        self.submit_seconds.append(time.perf_counter() - started)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending or uploading; False when ``timeout`` ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while self._pending is not None or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._condition.wait(left)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush (within ``timeout``), then stop the thread; what was not sent is dropped.
        An upload in flight is let finish (no retry after it), so no manifest lands after
        the trial's clean-up."""
        flushed = self.flush(timeout)
        with self._condition:
            self._closed = True
            if self._pending is not None:
                shutil.rmtree(self._pending[0], ignore_errors=True)
                self._pending = None
            self._condition.notify_all()
        self._thread.join(timeout=STORE_READ_TIMEOUT_SECONDS * 2)
        shutil.rmtree(self.staging, ignore_errors=True)
        return flushed

    def _run(self) -> None:
        while True:
            with self._condition:
                while self._pending is None and not self._closed:
                    self._condition.wait()
                if self._pending is None:
                    return
                snapshot, step, best_step = self._pending
                self._pending, self._busy = None, True
            try:
                self._upload(snapshot, step, best_step)
            finally:
                shutil.rmtree(snapshot, ignore_errors=True)
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def _upload(self, snapshot: Path, step: int, best_step: int | None) -> None:
        delays = self.retry_delays()
        started = time.perf_counter()
        try:
            uploaded = retry_store_call(
                lambda: self.store.upload(snapshot, step), delays, give_up=self._is_closed
            )
        except Exception as error:  # the store's client raises its own families
            # Cut short by close() (a pruned trial's end): not a store that failed.
            if self.error is None and not self._is_closed():
                reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
                self.error = (
                    f"uploading step {step} to {self.store.url} failed {len(delays) + 1} "
                    f"times over {time.perf_counter() - started:.0f} s ({reason}); training "
                    "went on, but this trial cannot resume from the store"
                )
                self.log(f"[sweeper] {self.error}")
            return
        self.bytes_uploaded += uploaded
        self.upload_seconds.append(time.perf_counter() - started)
        self.uploaded.append(step)
        if self.error is not None:
            self.error = None
            self.log(
                f"[sweeper] {self.store.url} answers again: step {step} is stored, and this "
                "trial can resume from the store again"
            )
        if self.prune:
            keep = {step} | ({best_step} if best_step is not None else set())
            # A failed clean-up is not a failed upload: the checkpoint is stored, and the
            # next upload's clean-up deletes what this one left.
            with contextlib.suppress(Exception):
                self.store.keep_only(keep)

    def retry_delays(self) -> tuple[float, ...]:
        """The waits for this trial's next store call: after a given-up upload, none (one
        try), since the store has failed for half a minute already."""
        return STORE_RETRY_DELAYS_SECONDS if self.error is None else ()

    def _is_closed(self) -> bool:
        with self._condition:
            return self._closed
