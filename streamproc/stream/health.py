"""The metrics port of a service: /metrics, /healthz (liveness) and /readyz (readiness).

Served from a thread, so that a scrape or a probe never waits for the event loop:

- ``/metrics``: the Prometheus exposition of the service's registry.
- ``/healthz``: 200 while the event loop is responsive, i.e. its ``Heartbeat`` beat within
  ``liveness_bound_seconds``; 503 otherwise (a blocked or dead loop: restart the process).
- ``/readyz``: 200 ``ready`` when the readiness check names no reason; else 503 with the
  reasons, one per line. Either way followed by the service's notices, one per line: what
  an operator should know that does not stop it (a policy change it rejected).
- anything else: 404.

Each connection gets a socket timeout and at most ``max_connections`` are served at once
(further ones are closed at once): the port usually listens on every interface for
Prometheus, so idle or slow clients must not hold threads for ever.

A process that serves no port of its own (one of several worker processes behind a
supervisor, see streamproc.stream.supervisor) reports the same two answers through a
``StatusFile`` instead: rewritten on every heartbeat, so its age is the liveness.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Final, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

if TYPE_CHECKING:
    from _typeshed.wsgi import ErrorStream, StartResponse, WSGIEnvironment

__all__ = [
    "DEFAULT_CONNECTION_TIMEOUT_SECONDS",
    "DEFAULT_LIVENESS_BOUND_SECONDS",
    "DEFAULT_MAX_CONNECTIONS",
    "HealthServer",
    "Heartbeat",
    "NoticeCheck",
    "Probes",
    "ReadinessCheck",
    "StatusFile",
    "read_notes",
    "read_status",
]

log = logging.getLogger(__name__)

#: A loop that has not beaten for this long counts as blocked. Generous: a burst of work
#: (a policy reload, a large fetch) may hold the loop for a moment without being a hang.
DEFAULT_LIVENESS_BOUND_SECONDS: Final = 15.0
_BEAT_INTERVAL_SECONDS = 1.0
#: A probe or a scrape sends its request at once and reads the answer as it comes; a client
#: silent this long (before its request, or while the answer waits to be read) is dropped.
DEFAULT_CONNECTION_TIMEOUT_SECONDS: Final = 5.0
#: Kubelet probes and a few Prometheus replicas need a handful; past this many, new
#: connections are closed at once, so a flood holds this many threads at most.
DEFAULT_MAX_CONNECTIONS: Final = 32
#: While connections are refused, the warning saying so is repeated at most this often.
_REFUSAL_WARNING_INTERVAL_SECONDS = 60.0

#: Reasons the service is not ready; empty when it is.
ReadinessCheck = Callable[[], Sequence[str]]
#: What an operator should know that does not stop the service (a policy change it
#: rejected): said on /readyz after its answer, either way.
NoticeCheck = Callable[[], Sequence[str]]


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

    def set_readiness(self, check: ReadinessCheck, notices: NoticeCheck | None = None) -> None: ...
    def close(self) -> None: ...


class StatusFile:
    """Liveness and readiness of a process without a port of its own, for its supervisor.

    Every beat rewrites ``path`` (atomically) with the readiness reasons as JSON, so the
    file's modification time is the last beat; ``read_status`` reads both back.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._readiness: ReadinessCheck = lambda: ["service not started"]
        self._notices: NoticeCheck = tuple
        self.heartbeat = Heartbeat(on_beat=self.write)
        self.write()

    def set_readiness(self, check: ReadinessCheck, notices: NoticeCheck | None = None) -> None:
        self._readiness, self._notices = check, notices or tuple

    def write(self) -> None:
        try:
            reasons = list(self._readiness())
        except Exception as exc:  # noqa: BLE001 - a failing check is an answer, not a crash
            reasons = [f"readiness check failed: {exc!r}"]
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps({"reasons": reasons, "notes": list(self._notices())}))
        os.replace(partial, self.path)

    def close(self) -> None:
        """The file stays: its owner's exit is what tells the supervisor it stopped."""


def read_notes(path: Path) -> list[str]:
    """The notices in a ``StatusFile`` (none when it cannot be read: its status says why)."""
    try:
        return [str(n) for n in json.loads(path.read_text()).get("notes", [])]
    except (OSError, ValueError, AttributeError, TypeError):
        return []


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


_Request = socket.socket | tuple[bytes, socket.socket]  # what socketserver passes around


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most ``max_connections`` of them, each with a timeout."""

    daemon_threads = True

    def bound(self, *, timeout: float, max_connections: int) -> None:
        """Set before serving: ``make_server`` constructs the server without arguments."""
        self.connection_timeout = timeout
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0  # connections closed at once for want of a slot
        self._warned_at: float | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        connection.settimeout(self.connection_timeout)
        return connection, address

    def process_request(self, request: _Request, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start: its slot is free again
            self._slots.release()
            raise

    def process_request_thread(self, request: _Request, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: _Request) -> None:
        """Close at once, without reading: a thread per waiting connection is what runs out."""
        self.refused += 1
        self.shutdown_request(request)
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= _REFUSAL_WARNING_INTERVAL_SECONDS:
            self._warned_at = now
            log.warning(
                "metrics port: %d connections open, the most served at once; closing new ones "
                "unanswered (%d so far)",
                self.max_connections,
                self.refused,
            )


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _DebugLog(io.TextIOBase):
    """Where wsgiref writes the traceback of a request that failed (e.g. a client too slow
    to read its answer): a debug line, not stderr."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug("metrics port: %s", text.rstrip())
        return len(text)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Probes and scrapes every few seconds: not worth a log line each."""

    def get_stderr(self) -> ErrorStream:
        return _DebugLog()

    def handle(self) -> None:
        try:
            super().handle()
        except (TimeoutError, ConnectionError):
            return  # silent past the timeout, or gone: the server closes the connection


class HealthServer:
    """Serve the three endpoints on ``host:port`` in a daemon thread from construction on.

    A connection silent for ``connection_timeout_seconds`` is closed; while ``max_connections``
    are open, new ones are closed unanswered (counted in ``refused_connections``, warned of).
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
        notices: NoticeCheck | None = None,
        connection_timeout_seconds: float = DEFAULT_CONNECTION_TIMEOUT_SECONDS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.heartbeat = heartbeat or Heartbeat()
        self._liveness = liveness  # instead of the heartbeat (a supervisor: its children's)
        self._notices: NoticeCheck = notices or tuple
        self._readiness: ReadinessCheck = readiness or (lambda: ["service not started"])
        self._bound = liveness_bound_seconds
        self._metrics = make_wsgi_app(registry)
        server_class = _IPv6Server if _is_ipv6(host, port) else _Server
        self._server = make_server(host, port, self._app, server_class, _QuietHandler)
        self._server.bound(timeout=connection_timeout_seconds, max_connections=max_connections)
        self.host = host
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)
        self._thread.start()

    def set_readiness(self, check: ReadinessCheck, notices: NoticeCheck | None = None) -> None:
        """Answer /readyz from ``check`` (and say ``notices``) from now on."""
        self._readiness = check
        self._notices = notices or tuple

    @property
    def refused_connections(self) -> int:
        """Connections closed unanswered because ``max_connections`` were open."""
        return self._server.refused

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
            try:
                notes = list(self._notices())
            except Exception as exc:  # noqa: BLE001 - a failing check is an answer, not a crash
                notes = [f"notices failed: {exc!r}"]
            return _answer(start_response, self.readiness(), ok="ready", notes=notes)
        known = "/metrics, /healthz or /readyz"
        return _text(start_response, "404 Not Found", f"no such path {path}; try {known}")


def _answer(
    start_response: StartResponse, reasons: Sequence[str], *, ok: str, notes: Sequence[str] = ()
) -> list[bytes]:
    if reasons:
        return _text(start_response, "503 Service Unavailable", "\n".join([*reasons, *notes]))
    return _text(start_response, "200 OK", "\n".join([ok, *notes]))


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
