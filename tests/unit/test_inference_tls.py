"""The model client over https with a private CA (a real TLS server on loopback)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import trustme
from pydantic import SecretStr

from streamproc.config import InferenceSettings
from streamproc.errors import InferenceUnavailable
from streamproc.inference import InferenceClient
from streamproc.metrics import NOOP
from streamproc.policy.scorers import logprob_request

ANSWER = orjson.dumps(
    {
        "id": "c-1",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "N"}, "logprobs": None}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
)
REQUEST = logprob_request([{"role": "user", "content": "item"}])


class HttpsServer:
    """Answers every POST with one completion, over TLS; remembers the request headers."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")[1:]
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)
        }
        self.headers.append(headers)
        await reader.readexactly(int(headers.get("content-length", "0")))
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(ANSWER)}\r\nconnection: close\r\n\r\n".encode()
            + ANSWER
        )
        await writer.drain()
        writer.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def server(ca: trustme.CA) -> AsyncIterator[HttpsServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    https = HttpsServer()
    listening = await asyncio.start_server(https.handle, "127.0.0.1", 0, ssl=context)
    https.port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield https


def _settings(server: HttpsServer, **extra: object) -> InferenceSettings:
    return InferenceSettings(
        base_url=f"https://127.0.0.1:{server.port}/v1",
        model="m",
        max_attempts=1,
        on_unavailable="review",
        **extra,
    )


async def test_private_ca_file_is_trusted_and_the_key_sent(
    server: HttpsServer, ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    settings = _settings(server, ca_file=ca_file, api_key=SecretStr("model-key"))
    async with InferenceClient(settings, NOOP) as client:
        answer = await client.complete(REQUEST)
    assert answer.text == "N"
    assert server.headers[-1]["authorization"] == "Bearer model-key"


async def test_without_the_ca_file_the_certificate_is_refused(server: HttpsServer) -> None:
    async with InferenceClient(_settings(server), NOOP) as client:
        with pytest.raises(InferenceUnavailable) as caught:
            await client.complete(REQUEST)
    message = str(caught.value)
    assert "is not trusted" in message and "STREAMPROC_INFERENCE__CA_FILE" in message, message
    assert caught.value.kind == "unavailable"
    assert server.headers == []  # nothing, not even the key, went to an untrusted server


async def test_verification_can_be_turned_off(server: HttpsServer) -> None:
    async with InferenceClient(_settings(server, tls_verify=False), NOOP) as client:
        assert (await client.complete(REQUEST)).text == "N"


def test_missing_ca_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a file"):
        InferenceSettings(ca_file=tmp_path / "missing.pem")
