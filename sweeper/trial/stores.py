"""Object stores (s3://, gs://, ... through fsspec): what checkpoints and data read and
write, configured as boto3 and gcsfs users configure theirs (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, profiles, ``GOOGLE_APPLICATION_CREDENTIALS``).
Credentials come from the environment or the provider's files, never from a URL sweeper
stores (sweeper.credentials drops them).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from sweeper.errors import DataError

# What an unreachable store may cost a command before it says so (s3fs, botocore).
STORE_CONNECT_TIMEOUT_SECONDS = 5
STORE_READ_TIMEOUT_SECONDS = 60


def is_store_url(location: str | Path | None) -> bool:
    """An fsspec URL of an object store (``s3://``, ``gs://``, ...), not a local path."""
    text = str(location or "")
    return "://" in text and not text.startswith("file://")


def store_filesystem(url: str) -> Any:
    """The fsspec filesystem of ``url``, configured as boto3 and gcsfs users configure theirs
    (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, profiles, ``STORAGE_EMULATOR_HOST``, ...),
    with short timeouts so an unreachable store is an error in seconds, not minutes."""
    import fsspec

    protocol = url.split("://", 1)[0]
    options: dict[str, Any] = {}
    if protocol in ("s3", "s3a"):
        options["config_kwargs"] = {
            "connect_timeout": STORE_CONNECT_TIMEOUT_SECONDS,
            "read_timeout": STORE_READ_TIMEOUT_SECONDS,
            "retries": {"max_attempts": 2, "mode": "standard"},
        }
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint_url"] = endpoint
    elif protocol in ("gs", "gcs") and os.environ.get("STORAGE_EMULATOR_HOST") not in (
        None,
        "",
        "default",  # gcsfs's word for Google's own endpoint
    ):
        # A GCS emulator (gcsfs's own STORAGE_EMULATOR_HOST): anonymous, and gcsfs's plain
        # HTTP filesystem, not its default one, which also asks every bucket's layout over
        # gRPC, a call no emulator answers (a minute of retries per operation once any
        # Google credentials are found on the machine; those are never the emulator's).
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(token="anon", skip_instance_cache=True)
    # skip_instance_cache: a fresh client per call site, never one a forked process inherited.
    return fsspec.filesystem(protocol, skip_instance_cache=True, **options)


def strip_protocol(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


def _data_cache_dir() -> Path:
    """Where data read from a store is kept on this machine (SWEEPER_DATA_CACHE, else
    ~/.cache/sweeper/data)."""
    configured = os.environ.get("SWEEPER_DATA_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "sweeper" / "data"


def fetch_data(url: str) -> Path:
    """``dataset.path`` as a store URL (a file, or a folder of split files): downloaded, each
    time, into this machine's cache; the study's split fingerprints then say whether it is
    the data the study was created on."""
    target = _data_cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:16]
    local = target / strip_protocol(url).rsplit("/", 1)[-1]
    try:
        fs = store_filesystem(url)
        if fs.isdir(strip_protocol(url)):
            fs.get(strip_protocol(url) + "/", str(local) + "/", recursive=True)
        else:
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(strip_protocol(url), str(local))
    except FileNotFoundError:
        raise DataError(f"dataset.path={url!r} does not exist in its store") from None
    except Exception as error:  # the store's client raises its own families
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        raise DataError(
            f"dataset.path={url!r} cannot be read ({reason}); check the endpoint "
            "(AWS_ENDPOINT_URL) and the credentials"
        ) from None
    return local
