"""The metrics port over real sockets: idle connections are closed after the connection
timeout, and connections past the limit are closed unanswered without starving the probes
for longer than the idle ones live."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from streamproc.stream.health import HealthServer

#: How long a test waits for the server to close a connection: far above any timeout used here.
GENEROUS_WAIT_SECONDS = 30.0
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"


def _open(server: HealthServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=GENEROUS_WAIT_SECONDS)


def _read_until_closed(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed);
    raises TimeoutError if it is still open after GENEROUS_WAIT_SECONDS."""
    received = b""
    try:
        while chunk := conn.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def _serve(timeout: float, max_connections: int = 32) -> Iterator[HealthServer]:
    server = HealthServer(
        CollectorRegistry(),
        "127.0.0.1",
        0,
        connection_timeout_seconds=timeout,
        max_connections=max_connections,
    )
    server.set_readiness(list)
    yield server
    server.close()


@pytest.fixture
def quick_timeout() -> Iterator[HealthServer]:
    yield from _serve(timeout=0.2)


@pytest.fixture
def two_slots() -> Iterator[HealthServer]:
    """Two connections at once; idle ones live long enough to be seen holding their slots."""
    yield from _serve(timeout=3.0, max_connections=2)


def test_an_idle_connection_is_closed_by_the_server(quick_timeout: HealthServer) -> None:
    with _open(quick_timeout) as idle:
        assert _read_until_closed(idle) == b""  # closed, with no answer: it asked nothing


def test_a_half_sent_request_is_closed_too(quick_timeout: HealthServer) -> None:
    with _open(quick_timeout) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: pro")
        assert _read_until_closed(slow) == b""


def test_a_prompt_request_is_answered_under_the_timeout(quick_timeout: HealthServer) -> None:
    with _open(quick_timeout) as probe:
        probe.sendall(REQUEST)
        answer = _read_until_closed(probe)
    assert answer.startswith(b"HTTP/1.0 200 OK") and answer.endswith(b"\r\n\r\nok\n")


def test_connections_past_the_limit_are_refused_then_probes_come_back(
    two_slots: HealthServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="streamproc.stream.health"):
        idle = [_open(two_slots), _open(two_slots)]
        refused = []
        for _ in range(2):
            extra = _open(two_slots)
            extra.sendall(REQUEST)
            refused.append(_read_until_closed(extra))
            extra.close()
    assert refused == [b"", b""]  # closed unanswered while both slots are held
    assert two_slots.refused_connections == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "streamproc.stream.health"]
    assert len(warnings) == 1 and "2 connections open" in warnings[0], warnings  # said once
    for conn in idle:
        assert _read_until_closed(conn) == b""  # the server drops them at their timeout
        conn.close()
    answer = httpx.get(f"http://127.0.0.1:{two_slots.port}/healthz", timeout=GENEROUS_WAIT_SECONDS)
    assert (answer.status_code, answer.text) == (200, "ok\n")


def test_a_client_that_leaves_frees_its_slot(two_slots: HealthServer) -> None:
    for _ in range(3):  # more connections than slots, one after the other
        with _open(two_slots) as conn:
            conn.sendall(REQUEST)
            assert _read_until_closed(conn).startswith(b"HTTP/1.0 200 OK")
    assert two_slots.refused_connections == 0
