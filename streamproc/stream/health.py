"""The metrics port of a service: /metrics, /healthz (liveness) and /readyz (readiness).

Served from a thread, so that a scrape or a probe never waits for the event loop:

- ``/metrics``: the Prometheus exposition of the service's registry.
- ``/healthz``: 200 while the event loop is responsive, i.e. its ``Heartbeat`` beat within
  ``liveness_bound_seconds``; 503 otherwise (a blocked or dead loop: restart the process).
- ``/readyz``: 200 ``ready`` when the readiness check names no reason; else 503 with the
  reasons, one per line.
- anything else: 404.

A process that serves no port of its own (one of several worker processes behind a
supervisor, see streamproc.stream.supervisor) reports the same two answers through a
``StatusFile`` instead: rewritten on every heartbeat, so its age is the liveness.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Final, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "DEFAULT_LIVENESS_BOUND_SECONDS",
    "HealthServer",
    "Heartbeat",
    "Probes",
    "ReadinessCheck",
    "StatusFile",
    "read_status",
]

log = logging.getLogger(__name__)

#: A loop that has not beaten for this long counts as blocked. Generous: a burst of work
#: (a policy reload, a large fetch) may hold the loop for a moment without being a hang.
DEFAULT_LIVENESS_BOUND_SECONDS: Final = 15.0
_BEAT_INTERVAL_SECONDS = 1.0

#: Reasons the service is not ready; empty when it is.
ReadinessCheck = Callable[[], Sequence[str]]


class Heartbeat:
    """When the event loop last ran a beat; read from any thread. ``on_beat`` runs on each."""

    def __init__(self, on_beat: Callable[[], None] | None = None) -> None:
        self._last = time.monotonic()
        self._on_beat = on_beat

    def beat(self) -> None:
        self._last = time.monotonic()
        if self._on_beat is not None:
            self._on_beat()

    def age(self) -> float:
        """Seconds since the last beat."""
        return time.monotonic() - self._last

    async def run(self, interval: float = _BEAT_INTERVAL_SECONDS) -> None:
        """Beat every ``interval`` seconds until cancelled."""
        while True:
            self.beat()
            await asyncio.sleep(interval)


class Probes(Protocol):
    """What a process host feeds: a heartbeat from its event loop and a readiness check."""

    heartbeat: Heartbeat

    def set_readiness(self, check: ReadinessCheck) -> None: ...
    def close(self) -> None: ...


class StatusFile:
    """Liveness and readiness of a process without a port of its own, for its supervisor.

    Every beat rewrites ``path`` (atomically) with the readiness reasons as JSON, so the
    file's modification time is the last beat; ``read_status`` reads both back.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._readiness: ReadinessCheck = lambda: ["service not started"]
        self.heartbeat = Heartbeat(on_beat=self.write)
        self.write()

    def set_readiness(self, check: ReadinessCheck) -> None:
        self._readiness = check

    def write(self) -> None:
        try:
            reasons = list(self._readiness())
        except Exception as exc:  # noqa: BLE001 - a failing check is an answer, not a crash
            reasons = [f"readiness check failed: {exc!r}"]
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps({"reasons": reasons}))
        os.replace(partial, self.path)

    def close(self) -> None:
        """The file stays: its owner's exit is what tells the supervisor it stopped."""


def read_status(path: Path, *, bound_seconds: float) -> tuple[list[str], list[str]]:
    """(liveness reasons, readiness reasons) from a ``StatusFile``; empty lists when live and
    ready. A missing file means the process has not started its host yet."""
    try:
        age = time.time() - path.stat().st_mtime
        reasons = [str(r) for r in json.loads(path.read_text())["reasons"]]
    except FileNotFoundError:
        return [], ["starting"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [], [f"status unreadable: {exc!r}"]
    if age > bound_seconds:
        return [f"event loop unresponsive for {age:.1f} s (bound {bound_seconds:g} s)"], reasons
    return [], reasons


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Probes and scrapes every few seconds: not worth a log line each."""


class HealthServer:
    """Serve the three endpoints on ``host:port`` in a daemon thread from construction on.

    Raises OSError when the address cannot be bound.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        heartbeat: Heartbeat | None = None,
        readiness: ReadinessCheck | None = None,
        liveness: ReadinessCheck | None = None,
        liveness_bound_seconds: float = DEFAULT_LIVENESS_BOUND_SECONDS,
    ) -> None:
        self.heartbeat = heartbeat or Heartbeat()
        self._liveness = liveness  # instead of the heartbeat (a supervisor: its children's)
        self._readiness: ReadinessCheck = readiness or (lambda: ["service not started"])
        self._bound = liveness_bound_seconds
        self._metrics = make_wsgi_app(registry)
        server_class = _IPv6Server if _is_ipv6(host, port) else _Server
        self._server = make_server(host, port, self._app, server_class, _QuietHandler)
        self.host = host
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)
        self._thread.start()

    def set_readiness(self, check: ReadinessCheck) -> None:
        """Answer /readyz from ``check`` from now on."""
        self._readiness = check

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def liveness(self) -> list[str]:
        """Why the process is not live (empty when it is)."""
        if self._liveness is not None:
            return list(self._liveness())
        age = self.heartbeat.age()
        if age > self._bound:
            return [f"event loop unresponsive for {age:.1f} s (bound {self._bound:g} s)"]
        return []

    def readiness(self) -> list[str]:
        """Why the service is not ready (empty when it is); a dead loop is a reason too."""
        try:
            reasons = list(self._readiness())
        except Exception as exc:  # noqa: BLE001 - a failing check is an answer, not a crash
            reasons = [f"readiness check failed: {exc!r}"]
        return self.liveness() + reasons

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            exposition: Iterable[bytes] = self._metrics(environ, start_response)
            return exposition
        if path == "/healthz":
            return _answer(start_response, self.liveness(), ok="ok")
        if path == "/readyz":
            return _answer(start_response, self.readiness(), ok="ready")
        known = "/metrics, /healthz or /readyz"
        return _text(start_response, "404 Not Found", f"no such path {path}; try {known}")


def _answer(start_response: StartResponse, reasons: Sequence[str], *, ok: str) -> list[bytes]:
    if reasons:
        return _text(start_response, "503 Service Unavailable", "\n".join(reasons))
    return _text(start_response, "200 OK", ok)


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = (body + "\n").encode()
    start_response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))],
    )
    return [data]


def _is_ipv6(host: str, port: int) -> bool:
    """Whether ``host`` resolves to IPv6 only (e.g. ``::``), as prometheus_client decides it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # binding then fails with the resolver's error
    return bool(infos) and infos[0][0] == socket.AF_INET6
