"""Headless Debian chromium, driven over the Chrome DevTools protocol, for the report tests.

:func:`render` opens a page, waits for it to load and for a JavaScript condition to hold,
and returns what a person would care about: the JavaScript errors raised, the console
errors, every request that left the machine, the value of a probe expression, and a
full-page PNG. Only ``websocket-client`` (a dev extra) is needed besides chromium itself.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
START_TIMEOUT_S = 30.0


def find_chromium() -> str | None:
    override = os.environ.get("SWEEPER_CHROMIUM")
    if override:
        return override
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Rendered:
    exceptions: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    probe: Any = None
    png: bytes = b""


class DevTools:
    """One websocket to one page target; answers are matched to requests by id, and every
    event that arrives in between is kept."""

    def __init__(self, url: str):
        import websocket

        self.socket = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        request_id = next(self.ids)
        self.socket.send(json.dumps({"id": request_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == request_id:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self.events.append(message)

    def wait_for_event(self, method: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if any(event["method"] == method for event in self.events):
            return
        self.socket.settimeout(1.0)
        try:
            while time.monotonic() < deadline:
                try:
                    message = json.loads(self.socket.recv())
                except Exception as exc:  # websocket timeout: keep waiting
                    if type(exc).__name__ == "WebSocketTimeoutException":
                        continue
                    raise
                if "method" in message:
                    self.events.append(message)
                    if message["method"] == method:
                        return
        finally:
            self.socket.settimeout(60)
        raise TimeoutError(f"no {method} within {timeout:.0f} s")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"probe raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.socket.close()


def _start(executable: str, profile: Path) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            # Software WebGL, which plotly's parallel coordinates need.
            "--enable-unsafe-swiftshader",
            "--use-angle=swiftshader",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{executable} exited with status {process.returncode}")
        if port_file.is_file():
            lines = port_file.read_text().split()
            if lines:
                return process, lines[0]
        time.sleep(0.1)
    process.kill()
    raise TimeoutError(f"{executable} did not open its DevTools port in {START_TIMEOUT_S} s")


def _page_websocket(port: str) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
            targets = json.load(response)
        pages = [target for target in targets if target.get("type") == "page"]
        if pages:
            return str(pages[0]["webSocketDebuggerUrl"])
        if time.monotonic() > deadline:
            raise TimeoutError("chromium opened no page target")
        time.sleep(0.1)


def render(
    executable: str,
    url: str,
    ready: str,
    probe: str,
    width: int = 1400,
    timeout: float = 60.0,
) -> Rendered:
    """Load ``url``; once the JavaScript expression ``ready`` is true, evaluate ``probe`` and
    take a full-page screenshot."""
    rendered = Rendered()
    # Chromium's helper processes may still write to the profile for a moment after the
    # browser exits ("Directory not empty" on clean-up, seen once in CI): not the test's
    # failure.
    with tempfile.TemporaryDirectory(
        prefix="sweeper-chromium-", ignore_cleanup_errors=True
    ) as profile:
        process, port = _start(executable, Path(profile))
        devtools: DevTools | None = None
        try:
            devtools = DevTools(_page_websocket(port))
            for domain in ("Page", "Runtime", "Log", "Network"):
                devtools.call(f"{domain}.enable")
            devtools.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=1000,
                deviceScaleFactor=1,
                mobile=False,
            )
            devtools.call("Page.navigate", url=url)
            devtools.wait_for_event("Page.loadEventFired", timeout)
            deadline = time.monotonic() + timeout
            while not devtools.evaluate(f"Boolean({ready})"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the page never became ready ({ready})")
                time.sleep(0.2)
            time.sleep(0.5)  # let plotly's transitions and deferred draws settle
            rendered.probe = devtools.evaluate(probe)
            height = int(devtools.evaluate("document.documentElement.scrollHeight"))
            devtools.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            time.sleep(0.3)
            shot = devtools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            rendered.png = base64.b64decode(shot["data"])
            devtools.call("Runtime.evaluate", expression="0")  # flush late events
            for event in devtools.events:
                method, params = event["method"], event.get("params", {})
                if method == "Runtime.exceptionThrown":
                    details = params.get("exceptionDetails", {})
                    description = details.get("exception", {}).get("description")
                    rendered.exceptions.append(str(description or details.get("text")))
                elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                    rendered.console_errors.append(
                        " ".join(
                            str(arg.get("value", arg.get("description"))) for arg in params["args"]
                        )
                    )
                elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                    rendered.console_errors.append(str(params["entry"].get("text")))
                elif method == "Network.requestWillBeSent":
                    request_url = str(params["request"]["url"])
                    if not request_url.startswith(("file:", "data:", "blob:", "about:")):
                        rendered.external_requests.append(request_url)
        finally:
            if devtools is not None:
                devtools.close()
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return rendered
