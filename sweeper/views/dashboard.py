"""optuna-dashboard on a study's storage, on the host and port it is given (`sweeper dashboard`
(sweeper.launch.cli) binds loopback unless told otherwise).

:class:`Dashboard` binds the port first (so a busy port fails at once with a clear message,
and port 0 picks a free one), then serves optuna-dashboard's WSGI app from a threaded
wsgiref server until :meth:`Dashboard.shutdown` or Ctrl-C. The storage URL it prints has its
password hidden.
"""

from __future__ import annotations

import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from sweeper.errors import DashboardError
from sweeper.runtime.storage import open_storage, redact


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per request: the dashboard polls every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        return


class Dashboard:
    """optuna-dashboard serving one storage; ``url`` deep-links to the study."""

    def __init__(self, storage_url: str, study_name: str, *, host: str, port: int = 0):
        from optuna_dashboard import wsgi

        self.storage_url = storage_url
        storage = open_storage(storage_url, heartbeat=False, create=False)
        try:
            self.study_id = storage.get_study_id_from_name(study_name)
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
            raise DashboardError(
                f"no study named {study_name!r} in {redact(storage_url)}; studies there: "
                f"{names or 'none'}"
            ) from None
        try:
            self.server = make_server(
                host, port, wsgi(storage), server_class=_ThreadedServer, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise DashboardError(
                f"--host={host!r} --port={port}: cannot listen there ({exc.strerror or exc}); "
                f"pass another --port (or --port 0 for any free one)"
            ) from None
        self.host = host
        self.port = int(self.server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/dashboard/studies/{self.study_id}"

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def start(self) -> Dashboard:
        """Serve from a background thread (for tests and notebooks)."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.server.server_close()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
