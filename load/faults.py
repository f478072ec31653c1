"""A fault-injecting HTTP proxy in front of the model server, switchable while it runs.

The worker is pointed at the proxy instead of the vLLM server; a test or the reliability
report switches the fault with ``proxy.set(...)``:

- ``pass``: forward every request to the real server and its answer back;
- ``slow``: forward, after ``latency`` seconds;
- ``error``: answer HTTP ``status`` (5xx) without asking the server;
- ``garbage``: answer HTTP 200 with a body that is not a completion;
- ``drop``: read the request, then close the connection without answering.

HTTP/1.1 with Content-Length bodies and keep-alive, which is what the worker's httpx
client sends; nothing else is needed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import httpx

__all__ = ["Fault", "FaultProxy", "FaultState", "fault_proxy"]

Fault = Literal["pass", "slow", "error", "garbage", "drop"]

_GARBAGE = b'{"id": "cmpl-0", "choices": "\x00\xff not a list", <html>502 Bad Gateway</html>'
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Timeout"}


@dataclass(frozen=True)
class FaultState:
    fault: Fault = "pass"
    latency: float = 0.0
    status: int = 503


class FaultProxy:
    """Runs on its own thread and event loop, so the caller may block (e.g. in a test)."""

    def __init__(self, upstream: str, port: int = 0) -> None:
        parts = urlsplit(upstream)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._path_prefix = parts.path.rstrip("/")  # /v1
        self.state = FaultState()
        self.requests = 0  # requests seen, under any fault
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._stop: asyncio.Event | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = port  # 0: any free port; a stopped proxy's port: the same address again

    @property
    def base_url(self) -> str:
        """The API root to give the worker, e.g. http://127.0.0.1:PORT/v1."""
        return f"http://127.0.0.1:{self.port}{self._path_prefix}"

    def set(self, fault: Fault, *, latency: float = 0.0, status: int = 503) -> None:
        """Switch the fault; requests already waiting keep the one they started under."""
        self.state = FaultState(fault, latency, status)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=self._origin, timeout=300) as upstream:
            server = await asyncio.start_server(
                lambda r, w: self._connection(r, w, upstream), "127.0.0.1", self.port
            )
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            async with server:
                await self._stop.wait()
                server.close()
                for task in self._connections:  # a worker's idle keep-alive connections
                    task.cancel()
                await asyncio.gather(*self._connections, return_exceptions=True)

    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: httpx.AsyncClient
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)
        try:
            while (request := await _read_request(reader)) is not None:
                self.requests += 1
                state = self.state
                if state.fault == "drop":
                    break
                if state.fault == "slow":
                    await asyncio.sleep(state.latency)
                if state.fault == "error":
                    writer.write(_response(state.status, b'{"error": "injected fault"}'))
                elif state.fault == "garbage":
                    writer.write(_response(200, _GARBAGE))
                else:
                    method, path, headers, body = request
                    answer = await upstream.request(method, path, content=body, headers=headers)
                    writer.write(_response(answer.status_code, answer.content))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, httpx.HTTPError):
            pass  # the worker gave up on this connection (its timeout), or the server went away
        except asyncio.CancelledError:
            pass  # the proxy is stopping; ending normally keeps asyncio's stream callback quiet
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()


_Request = tuple[str, str, dict[str, str], bytes]


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """One HTTP/1.1 request, or None at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    # hop-by-hop and length headers are the proxy's own business
    forwarded = {k: v for k, v in headers.items() if k not in {"host", "connection", "content-length"}}
    return method, path, forwarded, body


def _response(status: int, body: bytes) -> bytes:
    reason = _REASONS.get(status, "OK" if status == 200 else "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


@contextlib.contextmanager
def fault_proxy(upstream: str, port: int = 0) -> Iterator[FaultProxy]:
    """A started proxy in front of ``upstream`` (an API root such as http://host:port/v1), on
    ``port`` (0: any free one)."""
    proxy = FaultProxy(upstream, port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
