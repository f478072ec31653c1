"""One process host for both services: logging, /metrics, signals and an orderly stop.

A service is anything with ``run()`` (until stopped; raises on failure) and ``stop()``
(begin an orderly stop: drain, commit, return). SIGTERM and Ctrl-C call ``stop()``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable
from typing import Protocol

from prometheus_client import CollectorRegistry, start_http_server

from streamproc.errors import ConfigError

__all__ = ["Service", "configure_logging", "run", "serve_metrics"]

log = logging.getLogger(__name__)

_FORMAT = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"


class Service(Protocol):
    def run(self) -> Awaitable[None]: ...
    def stop(self) -> None: ...


def configure_logging(level: str) -> None:
    """One line per record, the same format for every service."""
    logging.basicConfig(level=level.upper(), format=_FORMAT, force=True)
    # aiokafka logs every coordinator change and httpx every request at INFO; their
    # warnings and errors still show.
    for noisy in ("aiokafka", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def serve_metrics(registry: CollectorRegistry, host: str, port: int, *, port_setting: str) -> int:
    """Serve ``registry`` at http://host:port/metrics in a thread; returns the bound port.

    ``port_setting`` names the setting of the port, for the error when it is taken.
    """
    try:
        server, _thread = start_http_server(port, host, registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror}); set {port_setting} to a free "
            "port (0 picks one)"
        ) from exc
    bound = int(server.server_port)
    log.info("metrics at http://%s:%d/metrics", host, bound)
    return bound


def run(service: Service) -> None:
    """Run ``service`` until it returns; SIGTERM and SIGINT ask it to stop.

    Raises whatever ``service.run()`` raises (the caller turns it into an exit status).
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.stop)
        try:
            await service.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    asyncio.run(main())
