"""An OpenAI-compatible model server stand-in that records the size of every request body.

For measuring what the worker sends, not what a model answers: every request gets
``load.instant.InstantServer``'s answer in vLLM's wire format (embeddings, label chat
completions, echoed completions: the item is clean), so the worker's own client decodes
real-looking responses. HTTP/1.1 with keep-alive, one thread per connection, in the test
process: the worker is measured alone.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

import httpx

from load.instant import InstantServer

__all__ = ["RecordingModelServer", "recording_model_server"]


class RecordingModelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = InstantServer()
        #: (path, body bytes) of every request, in arrival order.
        self.requests: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """The API root to give the worker."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @property
    def largest_body(self) -> int:
        with self._lock:
            return max((size for _, size in self.requests), default=0)

    def record(self, path: str, size: int) -> None:
        with self._lock:
            self.requests.append((path, size))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the worker's httpx client expects

    def do_POST(self) -> None:
        server = cast(RecordingModelServer, self.server)
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        server.record(self.path, len(body))
        answer = server.answer(httpx.Request("POST", f"http://stub{self.path}", content=body))
        self.send_response(answer.status_code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a line per request would drown the test's output."""


@contextlib.contextmanager
def recording_model_server() -> Iterator[RecordingModelServer]:
    server = RecordingModelServer()
    thread = threading.Thread(target=server.serve_forever, name="model-stub", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
