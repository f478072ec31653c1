"""One process host for both services: logging, the metrics port, signals and an orderly stop.

A service is anything with ``run()`` (until stopped; raises on failure) and ``stop()``
(begin an orderly stop: drain, commit, return). SIGTERM and Ctrl-C call ``stop()``.
A service that also has ``ready()`` (the reasons it is not ready; empty when it is)
answers /readyz with it; see streamproc.stream.health for the endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Literal, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry
from pythonjsonlogger.json import JsonFormatter

from streamproc.errors import ConfigError, safe_text
from streamproc.stream.health import HealthServer, Probes

__all__ = [
    "LogFormat",
    "NoticingService",
    "ReadyService",
    "Service",
    "configure_logging",
    "json_formatter",
    "log_startup",
    "run",
    "serve_metrics",
]

log = logging.getLogger(__name__)

LogFormat = Literal["text", "json"]
_FORMAT = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"
#: A backstop for text a call site did not bound (a rule engine's message quoting an item).
_MESSAGE_CHARS = 16_384


class Service(Protocol):
    def run(self) -> Awaitable[None]: ...
    def stop(self) -> None: ...


@runtime_checkable
class ReadyService(Service, Protocol):
    def ready(self) -> list[str]:
        """Reasons the service is not ready to do its work; empty when it is.

        Called from the health server's thread: read plain state only.
        """


@runtime_checkable
class NoticingService(Service, Protocol):
    def notices(self) -> list[str]:
        """What an operator should know that does not stop the service, said on /readyz.

        Called from the health server's thread: read plain state only.
        """


class _OneLineFormatter(logging.Formatter):
    """Text logs: each record's message on its one line whatever it quotes (an event's field
    name holding a newline would otherwise forge a record), control characters escaped and
    its length bounded. A traceback still follows on lines of its own; JSON escapes anyway."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = safe_text(record.message, _MESSAGE_CHARS)
        return super().formatMessage(record)


class _JsonFormatter(JsonFormatter):
    """ISO 8601 UTC times with milliseconds, which log stores parse without configuration."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def json_formatter() -> logging.Formatter:
    """One JSON object per record: time, level, logger, message, then any extra fields."""
    return _JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """The same format for every service: one line per record, text or JSON."""
    logging.basicConfig(level=level.upper(), force=True)
    formatter = json_formatter() if log_format == "json" else _OneLineFormatter(_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
    # aiokafka logs every coordinator change and httpx every request at INFO; their
    # warnings and errors still show.
    for noisy in ("aiokafka", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def serve_metrics(registry: CollectorRegistry, host: str, port: int, *, port_setting: str) -> HealthServer:
    """Serve /metrics, /healthz and /readyz on host:port in a thread (see HealthServer).

    ``port_setting`` names the setting of the port, for the error when it is taken.
    /readyz answers 503 until ``run`` starts the service.
    """
    try:
        server = HealthServer(registry, host, port)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); set {port_setting} to a "
            "free port (0 picks one)"
        ) from exc
    log.info("metrics at http://%s:%d/metrics, probes at /healthz and /readyz", host, server.port)
    return server


def log_startup(service: str, fields: Mapping[str, object]) -> None:
    """One INFO line saying what starts with which settings; in JSON logs ``fields`` are
    also keys of the object (with ``service`` and ``version``)."""
    described = {"service": service, "version": version("streamproc"), **fields}
    text = ", ".join(f"{key}={_shown(value)}" for key, value in described.items())
    log.info("starting %s", text, extra=described)


def _shown(value: object) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def run(service: Service, server: Probes | None = None) -> None:
    """Run ``service`` until it returns; SIGTERM and SIGINT ask it to stop.

    With ``server`` (a HealthServer, or the StatusFile of a supervised process), the event
    loop's heartbeat feeds /healthz and the service's ``ready()`` /readyz (a service without
    it is ready while it runs); the server is closed at the end.
    Raises whatever ``service.run()`` raises (the caller turns it into an exit status).
    """
    state = {"phase": "starting"}

    def readiness() -> list[str]:
        if state["phase"] != "running":
            return [f"service {state['phase']}"]
        return service.ready() if isinstance(service, ReadyService) else []

    def stop() -> None:
        state["phase"] = "stopping"
        service.stop()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        beating = asyncio.create_task(server.heartbeat.run()) if server is not None else None
        try:
            state["phase"] = "running"
            await service.run()
        finally:
            state["phase"] = "stopped"
            if beating is not None:
                beating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beating
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    if server is not None:
        server.set_readiness(readiness, service.notices if isinstance(service, NoticingService) else None)
    try:
        asyncio.run(main())
    finally:
        if server is not None:
            server.close()
